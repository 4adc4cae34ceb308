import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseAllDocuments, parse as parseYaml, stringify } from "yaml";
import { caConfigSchema } from "../../src/config/ca.ts";
import { parseYamlConfig } from "../../src/config/load.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const K8S_DIR = join(ROOT, "deploy/kubernetes");

interface Manifest {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string> };
  data?: Record<string, string>;
  spec?: { template?: { metadata?: { labels?: Record<string, string> }; spec?: { containers?: { name: string; args?: string[] }[] } } };
}

const manifests: { file: string; doc: Manifest }[] = readdirSync(K8S_DIR)
  .filter((f) => f.endsWith(".yaml"))
  .flatMap((file) =>
    parseAllDocuments(readFileSync(join(K8S_DIR, file), "utf8")).map((d) => {
      if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0]?.message}`);
      return { file, doc: d.toJS() as Manifest };
    }),
  );

function containerArgs(name: string): string[] {
  for (const { doc } of manifests) {
    const container = doc.spec?.template?.spec?.containers?.find((c) => c.name === name);
    if (container?.args) return container.args;
  }
  throw new Error(`no container ${name} with args in deploy/kubernetes`);
}

/** The real CLI's --help text for a command. */
function help(args: string[]): string {
  const result = spawnSync(process.execPath, [join(ROOT, "bin/meshward.js"), ...args, "--help"], { encoding: "utf8", timeout: 30_000 });
  expect(result.status, result.stderr).toBe(0);
  return result.stdout;
}

const scratch = mkdtempSync(join(tmpdir(), "meshward-k8s-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("deploy/kubernetes manifests", () => {
  it("every document has apiVersion, kind and a name; namespaced objects name their namespace", () => {
    expect(manifests.length).toBeGreaterThan(5);
    for (const { file, doc } of manifests) {
      expect(doc.apiVersion, file).toBeTruthy();
      expect(doc.kind, file).toBeTruthy();
      expect(doc.metadata?.name, `${file} ${doc.kind}`).toBeTruthy();
      if (doc.kind !== "Namespace") expect(doc.metadata?.namespace, `${file} ${doc.kind} ${doc.metadata?.name}`).toBeTruthy();
    }
  });

  it("the CA's ca.yaml ConfigMap passes the real CA config schema", () => {
    const configMap = manifests.find(({ doc }) => doc.kind === "ConfigMap" && doc.metadata?.name === "meshward-ca-config")?.doc;
    const text = configMap?.data?.["ca.yaml"];
    expect(text).toBeDefined();
    const config = parseYamlConfig(text as string, caConfigSchema, "ca.yaml");
    expect(config.listen).toBe("0.0.0.0:8443");
    expect(config.jwks?.mapping).toBe("kubernetes");
    expect(config.dnsNames).toContain("meshward-ca.meshward-system.svc");
  });

  it("every flag the manifests pass exists in the CLI's --help (ca serve, sidecar)", () => {
    const cases: [container: string, command: string[]][] = [["ca", ["ca", "serve"]], ["meshward", ["sidecar"]]];
    for (const [container, command] of cases) {
      const args = containerArgs(container);
      expect(args.slice(0, command.length)).toEqual(command);
      const text = help(command);
      const flags = args.filter((a) => a.startsWith("--"));
      expect(flags.length).toBeGreaterThan(2);
      for (const flag of flags) expect(text, `${command.join(" ")} ${flag}`).toMatch(new RegExp(`(^|[\\s,])${flag}[\\s<]`, "m"));
    }
    // negative control: a made-up flag is not found by the same check
    expect(help(["ca", "serve"])).not.toMatch(/(^|[\s,])--no-such-flag[\s<]/m);
  });

  it("the example scrape config passes promtool check config and labels permissive pods as the alert expects", () => {
    const scrape = parseYaml(readFileSync(join(ROOT, "deploy/prometheus/scrape-config.example.yaml"), "utf8")) as { scrape_configs: Record<string, unknown>[] };
    const alerts = readFileSync(join(ROOT, "deploy/prometheus/alerts.yaml"), "utf8");
    const sidecarJob = scrape.scrape_configs.find((j) => j.job_name === "meshward-sidecar") as { relabel_configs: { target_label?: string; replacement?: string }[] };
    const modeRule = sidecarJob.relabel_configs.find((r) => r.target_label === "meshward_mode");
    expect(modeRule?.replacement).toBe("permissive");
    expect(alerts).toContain('meshward_mode!="permissive"');
    expect(alerts).toContain('job=~"meshward-ca.*"');
    expect(scrape.scrape_configs.some((j) => String(j.job_name).startsWith("meshward-ca"))).toBe(true);

    // Debian's promtool is built without Kubernetes service discovery, so that one block is
    // swapped for a static target; the relabelling, TLS settings and rule file are checked as written.
    const caFile = join(scratch, "bundle.pem");
    writeFileSync(caFile, "");
    const checked = structuredClone(scrape) as { scrape_configs: Record<string, unknown>[]; rule_files?: string[] };
    for (const job of checked.scrape_configs) {
      if (job.kubernetes_sd_configs) {
        delete job.kubernetes_sd_configs;
        job.static_configs = [{ targets: ["127.0.0.1:9090"] }];
      }
      const tls = job.tls_config as { ca_file?: string } | undefined;
      if (tls?.ca_file) tls.ca_file = caFile;
    }
    checked.rule_files = [join(ROOT, "deploy/prometheus/alerts.yaml")];
    const config = join(scratch, "prometheus.yml");
    writeFileSync(config, stringify(checked));
    const result = spawnSync("promtool", ["check", "config", config], { encoding: "utf8", timeout: 30_000 });
    expect(result.stdout + result.stderr).toContain("SUCCESS");
    expect(result.status, result.stdout + result.stderr).toBe(0);
  });

  it("pods of the example workload carry the meshward.io/mode label the scrape config reads", () => {
    const workload = manifests.find(({ doc }) => doc.kind === "Deployment" && doc.metadata?.name === "orders")?.doc;
    expect(workload?.spec?.template?.metadata?.labels?.["meshward.io/mode"]).toBe("strict");
    expect(containerArgs("meshward")).toContain("strict");
  });
});
