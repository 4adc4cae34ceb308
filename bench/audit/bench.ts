/**
 * Audit speed on a generated tree: 10,000 manifests (Dapr components and Configurations,
 * Deployments with dapr.io annotations, Helm-style multi-document files, micro env files),
 * a mix of secure and insecure. Prints files/s and total time against the 5 s target.
 * Run: node --import tsx bench/audit/bench.ts [count]
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { auditPaths } from "../../src/audit/audit.ts";
import { walk } from "../../src/audit/walk.ts";
import { componentYaml, deploymentYaml, SECURE_DAPR_ANNOTATIONS } from "../../src/audit/rules/example-builders.ts";

const TARGET_SECONDS = 5;
const count = Number(process.argv[2] ?? 10_000);

function manifest(index: number): { name: string; text: string } {
  const insecure = index % 3 === 0;
  switch (index % 5) {
    case 0:
      return { name: `statestore-${index}.yaml`, text: componentYaml("state.redis", { redisHost: `redis-${index}:6379`, enableTLS: insecure ? "false" : "true" }) };
    case 1:
      return { name: `config-${index}.yaml`, text: `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: config-${index}\nspec:\n  mtls:\n    enabled: ${!insecure}\n    workloadCertTTL: ${insecure ? "720h" : "24h"}\n` };
    case 2:
      return { name: `deploy-${index}.yaml`, text: deploymentYaml({ ...SECURE_DAPR_ANNOTATIONS, "dapr.io/config": `config-${index - 1}`, ...(insecure ? { "dapr.io/sidecar-listen-addresses": "0.0.0.0" } : {}) }) };
    case 3: {
      const docs = [
        "# Source: chart/templates/service.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc\nspec:\n  ports:\n  - port: 80\n",
        componentYaml("pubsub.kafka", { brokers: "kafka:9093", authType: insecure ? "none" : "mtls" }, `pubsub-${index}`),
        componentYaml("state.postgresql", { connectionString: `host=pg user=app dbname=db${index} sslmode=${insecure ? "disable" : "verify-full"}` }, `pg-${index}`),
      ];
      return { name: `rendered-${index}.yaml`, text: `---\n${docs.join("---\n")}` };
    }
    default:
      return { name: `service-${index}.env`, text: `MICRO_SERVER_ADDRESS=:8080\nMICRO_ENABLE_TLS=${!insecure}\nMICRO_TLS_CERT_FILE=/tls.crt\nMICRO_TLS_CA_FILE=/ca.crt\nMICRO_TLS_CLIENT_CA_FILE=/ca.crt\n` };
  }
}

const root = mkdtempSync(join(tmpdir(), "meshward-audit-bench-"));
try {
  const generateStart = performance.now();
  for (let index = 0; index < count; index += 1) {
    const folder = join(root, `team-${index % 50}`, `app-${index % 400}`);
    mkdirSync(folder, { recursive: true });
    const { name, text } = manifest(index);
    writeFileSync(join(folder, name), text);
  }
  const generated = (performance.now() - generateStart) / 1000;

  // Baselines in the same run: reading the tree alone, and reading + bare YAML parsing.
  const readStart = performance.now();
  const files = walk([root]).files;
  const readSeconds = (performance.now() - readStart) / 1000;
  const parseStart = performance.now();
  for (const file of files) if (!file.file.endsWith(".env")) parseAllDocuments(file.text);
  const parseSeconds = (performance.now() - parseStart) / 1000;

  const start = performance.now();
  const result = auditPaths([root]);
  const seconds = (performance.now() - start) / 1000;

  console.log(`generated ${count} manifests in ${generated.toFixed(2)} s (${root})`);
  console.log(`audited ${result.filesScanned} files, ${result.documentsScanned} documents, ${result.findings.length} findings`);
  console.log(`baseline: read only ${readSeconds.toFixed(2)} s, bare yaml parse ${parseSeconds.toFixed(2)} s; full audit = ${(seconds / (readSeconds + parseSeconds)).toFixed(2)}× read+parse`);
  console.log(`total ${seconds.toFixed(2)} s, ${(result.filesScanned / seconds).toFixed(0)} files/s`);
  console.log(`target: ${count} files in < ${TARGET_SECONDS} s → ${seconds < TARGET_SECONDS ? "MET" : "MISSED"} (${(seconds / TARGET_SECONDS * 100).toFixed(0)}% of budget)`);
} finally {
  rmSync(root, { recursive: true, force: true });
}
