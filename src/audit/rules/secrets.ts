import { asText, lookup } from "../shape.ts";
import type { Hit, Position, Rule } from "../types.ts";
import { componentYaml, deploymentYaml, secretRefYaml } from "./example-builders.ts";
import { defineRule, isPlaceholder, isSensitiveName, redactConnectionString, redactSecret } from "./helpers.ts";

const PRODUCTION_SEGMENT = /(^|[-_.])(prod|production|prd|live)($|[-_.])/i;

export function looksLikeProduction(file: string, namespace: string | undefined): boolean {
  const segments = file.split(/[\\/]/);
  return segments.some((segment) => PRODUCTION_SEGMENT.test(segment)) || (namespace !== undefined && PRODUCTION_SEGMENT.test(namespace));
}

/** `scheme://user:pass@`, `user:pass@tcp(` (Go MySQL DSN) or a `password=` keyword. */
export function hasEmbeddedCredentials(value: string): boolean {
  const text = value.trim();
  return /^[a-z][a-z0-9+.-]*:\/\/[^/@:\s]+:[^/@\s]+@/i.test(text)
    || /^[^\s:/@()]+:[^\s@]+@(tcp|unix)\(/i.test(text)
    || /(^|[\s;?&])(password|pwd)\s*=\s*[^\s;&]+/i.test(text);
}

// Split so this source file is not itself reported as holding a private key.
const PEM_BEGIN = "-----BEGIN";
const PRIVATE_KEY_PEM = new RegExp(`${PEM_BEGIN} ((?:RSA |EC |DSA |OPENSSH )?PRIVATE KEY)-----`);

function pemFixture(label: string): string {
  return `${PEM_BEGIN} ${label}-----\nTk9UIEEgUkVBTCBLRVksIEFOIEVYQU1QTEUgT0YgVEhFIEZPUk1BVA==\n-----END ${label}-----\n`;
}

function positionOf(text: string, index: number): Position {
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf("\n"); i !== -1 && i < index; i = text.indexOf("\n", i + 1)) {
    line += 1;
    lineStart = i + 1;
  }
  return { line, column: index - lineStart + 1 };
}

export const secretRules: Rule[] = [
  defineRule({
    id: "MW-SECRET-001",
    family: "secrets",
    severity: "high",
    title: "Secret inline in a Dapr component",
    why: "A password, token or key written as `value:` ends up in git, in Helm release history and in every copy of the manifest; it cannot be rotated without a redeploy and anyone who can read the file has it.",
    fix: "Store it in a secret store and reference it with `secretKeyRef` (plus `auth.secretStore` in self-hosted mode).",
    example: {
      file: "statestore.yaml",
      bad: componentYaml("state.redis", { redisHost: "redis:6379", enableTLS: "true", redisPassword: "s3cr3t-Passw0rd" }),
      good: componentYaml("state.redis", { redisHost: "redis:6379", enableTLS: "true" }) + secretRefYaml("redisPassword", "redis"),
    },
    appliesTo: ["dapr-component"],
    check(component) {
      return component.metadata
        .filter((item) => item.hasInlineValue && isSensitiveName(item.name) && !isPlaceholder(item.value))
        .map((item) => ({ path: item.path, evidence: `${item.name}: ${redactSecret(item.value)}` }));
    },
  }),
  defineRule({
    id: "MW-SECRET-002",
    family: "secrets",
    severity: "high",
    title: "Connection string with credentials inline",
    why: "A connection string that embeds a user and password publishes the database credentials to everyone who can read the configuration.",
    fix: "Move the whole connection string into a secret store and use `secretKeyRef`, or use workload identity (e.g. Azure AD, IAM auth) instead of a password.",
    example: {
      file: "statestore.yaml",
      bad: componentYaml("state.postgresql", { connectionString: "postgres://dapr:hunter2@pg.db.svc:5432/state?sslmode=verify-full" }),
      good: componentYaml("state.postgresql", {}).replace("  metadata:\n\n", "  metadata:\n") + secretRefYaml("connectionString", "pg-conn"),
    },
    appliesTo: ["dapr-component"],
    check(component) {
      return component.metadata
        .filter((item) => item.hasInlineValue && !isSensitiveName(item.name) && hasEmbeddedCredentials(item.value))
        .map((item) => ({ path: item.path, evidence: `${item.name}: ${redactConnectionString(item.value)}` }));
    },
  }),
  defineRule({
    id: "MW-SECRET-003",
    family: "secrets",
    severity: "high",
    title: "Private key in the scanned tree",
    why: "An unencrypted private key in a repository or config folder is a copied identity: whoever clones it can impersonate the workload or CA the key belongs to, and git keeps it forever.",
    fix: "Delete the key, rotate it (issue a new one), and keep keys in a secret store or generate them at deploy time; meshward workloads get keys from the CA at run time.",
    example: { file: "certs/tls.key", bad: pemFixture("PRIVATE KEY"), good: pemFixture("CERTIFICATE") },
    appliesTo: ["raw-file"],
    check(file) {
      const match = PRIVATE_KEY_PEM.exec(file.text);
      if (match === null) return [];
      return [{ position: positionOf(file.text, match.index), evidence: `${match[1] ?? "PRIVATE KEY"} block` }];
    },
  }),
  defineRule({
    id: "MW-SECRET-004",
    family: "secrets",
    severity: "medium",
    title: "Local file/env secret store in a production path",
    why: "`secretstores.local.file` and `secretstores.local.env` are development stores: secrets sit in plain files or process environment with no access control, audit or rotation.",
    fix: "Use a real secret store in production: `secretstores.kubernetes`, HashiCorp Vault, AWS Secrets Manager, Azure Key Vault or GCP Secret Manager.",
    example: {
      file: "deploy/production/secretstore.yaml",
      bad: componentYaml("secretstores.local.file", { secretsFile: "/secrets/secrets.json", nestedSeparator: ":" }, "secretstore"),
      good: componentYaml("secretstores.kubernetes", { defaultNamespace: "payments" }, "secretstore"),
    },
    appliesTo: ["dapr-component"],
    check(component) {
      if (!/^secretstores\.local\.(file|env)$/i.test(component.type)) return [];
      if (!looksLikeProduction(component.source.file, component.namespace)) return [];
      return [{ path: ["spec", "type"], evidence: `type: ${component.type}` }];
    },
  }),
  defineRule({
    id: "MW-SECRET-005",
    family: "secrets",
    severity: "high",
    title: "Secret inline in a container environment variable",
    why: "`env[].value` is stored in the workload spec: visible to everyone who can `get` the Deployment, in git and in Helm history.",
    fix: "Use `valueFrom.secretKeyRef` (or mount the secret as a file).",
    example: {
      file: "deployment.yaml",
      bad: deploymentYaml({ "prometheus.io/scrape": "true" }).replace("          ports:", "          env:\n            - name: DB_PASSWORD\n              value: \"hunter2\"\n          ports:"),
      good: deploymentYaml({ "prometheus.io/scrape": "true" }).replace("          ports:", "          env:\n            - name: DB_PASSWORD\n              valueFrom:\n                secretKeyRef:\n                  name: db\n                  key: password\n          ports:"),
    },
    appliesTo: ["workload"],
    check(workload) {
      return workload.env
        .filter((entry) => entry.hasInlineValue && isSensitiveName(entry.name) && !isPlaceholder(entry.value))
        .map((entry) => ({ path: entry.path, evidence: `${entry.name}: ${redactSecret(entry.value)}` }));
    },
  }),
  defineRule({
    id: "MW-SECRET-006",
    family: "secrets",
    severity: "high",
    title: "meshward join token inline in the sidecar config",
    why: "A join token attests a workload to the CA: whoever reads the config file can obtain that workload's identity while the token is valid.",
    fix: "Use `token-file:` pointing at a file mounted from a secret (mode 0600), or JWT attestation.",
    example: {
      file: "sidecar.yaml",
      bad: "app-id: orders\nca: ca.prod.svc:8443\npolicy: policy.yaml\ntoken: mw-join-3f9a1c2b7d\n",
      good: "app-id: orders\nca: ca.prod.svc:8443\npolicy: policy.yaml\ntoken-file: /var/run/secrets/meshward/token\n",
    },
    appliesTo: ["meshward-sidecar"],
    check(sidecar) {
      const entry = lookup(sidecar.config, "token");
      const value = asText(entry?.value);
      if (entry === undefined || isPlaceholder(value)) return [];
      return [{ path: [entry.key], evidence: `${entry.key}: ${redactSecret(value)}` }];
    },
  }),
  defineRule({
    id: "MW-SECRET-007",
    family: "secrets",
    severity: "low",
    title: "Kubernetes Secret with data kept in the config tree",
    why: "Secret `data` is only base64-encoded: a Secret manifest in git or rendered Helm output is the secret in clear text for anyone with the files.",
    fix: "Create Secrets out of band (External Secrets, Sealed Secrets, SOPS, or `kubectl create secret`) and keep only references in the tree.",
    example: {
      file: "secret.yaml",
      bad: "apiVersion: v1\nkind: Secret\nmetadata:\n  name: redis\ntype: Opaque\ndata:\n  redis-password: aHVudGVyMg==\n",
      good: "apiVersion: v1\nkind: Secret\nmetadata:\n  name: redis\n  annotations:\n    note: populated by external-secrets\ntype: Opaque\n",
    },
    appliesTo: ["kubernetes-secret"],
    check(secret) {
      return secret.keys.slice(0, 1).map((key): Hit => ({
        path: key.path,
        evidence: `Secret ${secret.name}: ${secret.keys.map((entry) => entry.name).join(", ")}`,
      }));
    },
  }),
];
