import { asText, lookup } from "../shape.ts";
import type { Hit, Position, Rule } from "../types.ts";
import { componentYaml, deploymentYaml, secretRefYaml } from "./example-builders.ts";
import { defineRule, hasSubstitution, isNotSecretValue, isPlaceholder, isSensitiveName, redactConnectionString, redactSecret } from "./helpers.ts";
import { stackExchangeRedis, urlPassword } from "../values.ts";

const PRODUCTION_WORD = /^(prod|production|prd|live)$/i;
/** Words that make the production word after them mean the opposite (`non-prod`, `pre-prod`, `not-prod`). */
const NEGATION_WORD = /^(non|pre|not|no)$/i;

/**
 * How much a path segment or namespace names production: 2 when it is a production word
 * (`prod`, `production`, `prd`, `live`, any case), 1 when one of its `-`/`_`/`.`-separated words is
 * and no negation comes right before it (`env-prod`, `prod-eu`; not `non-prod`, `pre_prod`,
 * `nonprod`, `preproduction`), else 0. Whole words only: `products`, `reprod` are not production.
 */
export function productionScore(segment: string): number {
  if (PRODUCTION_WORD.test(segment)) return 2;
  const words = segment.split(/[-_.]/);
  return words.some((word, index) => PRODUCTION_WORD.test(word) && !(index > 0 && NEGATION_WORD.test(words[index - 1] ?? ""))) ? 1 : 0;
}

export function looksLikeProduction(file: string, namespace: string | undefined): boolean {
  const segments = file.split(/[\\/]/);
  return segments.some((segment) => productionScore(segment) > 0) || (namespace !== undefined && productionScore(namespace) > 0);
}

/**
 * `scheme://user:pass@` (also `redis://:pass@`, no user), `user:pass@tcp(` (Go MySQL DSN), a `password=` keyword
 * (also a StackExchange.Redis string's `,password=`) or an Azure
 * `SharedAccessKey=` / `AccountKey=` / `SharedAccessSignature=`, where the
 * password is a literal (not `${{PASS}}`, `<password>`, `{{ .Values.x }}`, `****`).
 */
export function hasEmbeddedCredentials(value: string): boolean {
  const text = value.trim();
  const redis = stackExchangeRedis(text);
  const passwords = [
    // StackExchange.Redis: `host:6380,password=KEY,ssl=True` (an option ends at the next comma).
    redis?.options.get("password")?.value,
    redis?.options.get("sentinelpassword")?.value,
    urlPassword(text),
    /^[^\s:/@()]+:(\S+)@(tcp|unix)\(/i.exec(text)?.[1],
    /(?:^|[\s;?&])(?:password|pwd)\s*=\s*('[^']*'|"[^"]*"|[^\s;&]+)/i.exec(text)?.[1]?.replace(/^['"]|['"]$/g, ""),
    // Azure Service Bus / Event Hubs / Storage connection strings carry the key itself.
    /(?:^|[\s;])(?:SharedAccessKey|AccountKey|SharedAccessSignature)\s*=\s*([^\s;]+)/i.exec(text)?.[1],
  ];
  return passwords.some((password) => password !== undefined && !isPlaceholder(password) && !hasSubstitution(password));
}

/** An inline value worth reporting under a secret-sounding name. */
function isLiteralSecret(value: string): boolean {
  return !isPlaceholder(value) && !hasSubstitution(value) && !isNotSecretValue(value);
}

/** Strong secret words: with one of these in the name, a name-like value is still a secret. */
const STRONG_SECRET_NAME = /(pass|pwd|token|api.?key|access.?key|private.?key|credential|signing)/i;

/**
 * A value that names something rather than holding a secret: `default` (a namespace), or a
 * Kubernetes-style name with a `-`/`.` and no digits (`dapr-secret`, `redis.password`, the key
 * in a secret store), for a variable whose name only says SECRET (`SECRET_KEY`, `APP_SECRET`).
 */
function namesASecret(name: string, value: string): boolean {
  if (STRONG_SECRET_NAME.test(name)) return false;
  const text = value.trim();
  return /^(default|kubernetes|kube-system|localsecretstore|secretstore)$/i.test(text)
    || (/^[a-z]+([-.][a-z]+)+$/.test(text) && text.length <= 63);
}

// Split so this source file is not itself reported as holding a private key.
const PEM_BEGIN = "-----BEGIN";
const PRIVATE_KEY_PEM = new RegExp(`${PEM_BEGIN} ((?:RSA |EC |DSA |OPENSSH )?PRIVATE KEY)-----`, "g");

/**
 * The rule's example: a DER SEQUENCE holding the text "NOT A REAL KEY…", so it has the
 * shape the rule checks for without being key material.
 */
function pemFixture(label: string): string {
  const text = Buffer.from("NOT A REAL KEY, AN EXAMPLE OF THE FORMAT ONLY");
  const der = Buffer.concat([Buffer.from([0x30, text.length + 2, 0x04, text.length]), text]);
  return `${PEM_BEGIN} ${label}-----\n${der.toString("base64")}\n-----END ${label}-----\n`;
}

/**
 * A real key body: base64 only (lines split by newlines or by `\n` escapes, as in JSON),
 * at least 64 characters, ending in the matching END line, and decoding to a complete DER
 * SEQUENCE (PKCS#1, SEC1, PKCS#8) or an `openssh-key-v1` blob. Elided examples
 * (`MC4CAQ...`, `KEY-DATA-GOES-HERE`), a BEGIN line alone in a table or a string literal,
 * and legacy encrypted keys (`Proc-Type: 4,ENCRYPTED`) are not key material.
 */
export function hasRealKeyBody(text: string, afterBegin: number, label: string, knownEnd?: number): boolean {
  const end = knownEnd ?? text.indexOf(`-----END ${label}-----`, afterBegin);
  if (end < 0 || end - afterBegin > 20_000) return false;
  // Newlines may be `\n` escapes (once or twice escaped: a key in code in a source map, a few
  // levels at most) and lines may be string literals joined with `+` (code). The runs of
  // backslashes are bounded: `\\+[rn]` was quadratic on a long run (review audit finding 8); a
  // longer run leaves backslashes, which are not base64.
  const body = text.slice(afterBegin, end).replace(/\\{1,8}[rn]/g, "\n").replace(/\\{1,8}(["'])/g, "$1").replace(/["']\s*\+\s*["']/g, "").replace(/["',\s]/g, "");
  if (body.length < 64 || !/^[A-Za-z0-9+/]+={0,2}$/.test(body)) return false;
  const der = Buffer.from(body, "base64");
  if (der.subarray(0, 15).toString("latin1") === "openssh-key-v1\u0000") return true;
  if (der[0] !== 0x30 || der.length < 2) return false;
  const first = der[1] ?? 0;
  if (first < 0x80) return der.length === 2 + first;
  const octets = first & 0x7f;
  if (octets < 1 || octets > 3 || der.length < 2 + octets) return false;
  let length = 0;
  for (let index = 0; index < octets; index += 1) length = length * 256 + (der[2 + index] ?? 0);
  return der.length === 2 + octets + length;
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
    title: "Secret inline in a Dapr component or HTTPEndpoint",
    why: "A password, token or key written as `value:` ends up in git, in Helm release history and in every copy of the manifest; it cannot be rotated without a redeploy and anyone who can read the file has it.",
    fix: "Store it in a secret store and reference it with `secretKeyRef` (plus `auth.secretStore` in self-hosted mode).",
    example: {
      file: "statestore.yaml",
      bad: componentYaml("state.redis", { redisHost: "redis:6379", enableTLS: "true", redisPassword: "s3cr3t-Passw0rd" }),
      good: componentYaml("state.redis", { redisHost: "redis:6379", enableTLS: "true" }) + secretRefYaml("redisPassword", "redis"),
    },
    appliesTo: ["dapr-component", "dapr-httpendpoint"],
    check(component) {
      return component.metadata
        .filter((item) => item.hasInlineValue && isSensitiveName(item.name) && isLiteralSecret(item.value))
        .map((item) => ({ path: item.path, evidence: `${item.name}: ${redactSecret(item.value)}` }));
    },
  }),
  defineRule({
    id: "MW-SECRET-002",
    family: "secrets",
    severity: "high",
    title: "Connection string with credentials inline",
    why: "A connection string that embeds a user and password (or an Azure `SharedAccessKey=`/`AccountKey=`) publishes the credentials to everyone who can read the configuration.",
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
      // Linear in the file (review audit finding 8: each BEGIN searched the rest of the file for
      // its END, quadratic for a file of BEGIN lines): the END of each label is searched from where
      // the last search ended, so no part of the file is searched twice for one label; a BEGIN
      // with another BEGIN before its END has no body of its own and is skipped in O(1).
      const text = file.text;
      const begins = [...text.matchAll(PRIVATE_KEY_PEM)];
      const nextEnd = new Map<string, number>();
      for (const [index, match] of begins.entries()) {
        const label = match[1] ?? "PRIVATE KEY";
        const afterBegin = match.index + match[0].length;
        let end = nextEnd.get(label);
        if (end === undefined || (end >= 0 && end < afterBegin)) {
          end = text.indexOf(`-----END ${label}-----`, afterBegin);
          nextEnd.set(label, end);
        }
        if (end < 0) continue;
        if (end > (begins[index + 1]?.index ?? text.length)) continue;
        if (!hasRealKeyBody(text, afterBegin, label, end)) continue;
        return [{ position: positionOf(text, match.index), evidence: `${label} block` }];
      }
      return [];
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
    why: "`env[].value` is stored in the workload spec (and a docker-compose `environment:` entry in the compose file): visible to everyone who can `get` the Deployment, in git and in Helm history. That holds for a password under any name, including one inside a connection URL (`DATABASE_URL=postgres://user:password@db/orders`, a JDBC URL's `password=`) or an Azure connection string's `SharedAccessKey=`/`AccountKey=`. The same holds for a `.env` file and a ConfigMap's `data` (read into containers with `env_file:` and `envFrom`); a Secret's values are where secrets belong and are not reported here (MW-SECRET-007 reports Secrets kept in the tree).",
    fix: "Use `valueFrom.secretKeyRef` (or mount the secret as a file); for a connection URL, keep the whole URL in the Secret.",
    example: {
      file: "deployment.yaml",
      bad: deploymentYaml({ "prometheus.io/scrape": "true" }).replace("          ports:", "          env:\n            - name: DB_PASSWORD\n              value: \"hunter2\"\n          ports:"),
      good: deploymentYaml({ "prometheus.io/scrape": "true" }).replace("          ports:", "          env:\n            - name: DB_PASSWORD\n              valueFrom:\n                secretKeyRef:\n                  name: db\n                  key: password\n          ports:"),
    },
    appliesTo: ["workload", "compose-service", "config-values"],
    check(workload) {
      const hits: Hit[] = [];
      // A Secret's values are where secrets belong (MW-SECRET-007 reports Secrets kept in the tree).
      // An Azure Container App's `secrets` are its secret store (MW-SECRET-008 reports inline values).
      if (workload.kind === "config-values" && (workload.holder === "Secret" || workload.holder === "ContainerApp")) return hits;
      for (const entry of workload.env) {
        if (!entry.hasInlineValue) continue;
        // A password inside a connection URL or DSN is a secret whatever the variable is called
        // (`DATABASE_URL`, `REDIS_URL`); a URL without one is not.
        if (hasEmbeddedCredentials(entry.value)) hits.push({ path: entry.path, evidence: `${entry.name}: ${redactConnectionString(entry.value)}` });
        else if (isSensitiveName(entry.name) && isLiteralSecret(entry.value) && !namesASecret(entry.name, entry.value)) hits.push({ path: entry.path, evidence: `${entry.name}: ${redactSecret(entry.value)}` });
      }
      return hits;
    },
  }),
  defineRule({
    id: "MW-SECRET-006",
    family: "secrets",
    severity: "high",
    title: "meshward join token inline in the sidecar config",
    why: "A join token attests a workload to the CA: whoever reads the config file can obtain that workload's identity while the token is valid.",
    fix: "Use `tokenFile:` pointing at a file mounted from a secret (mode 0600), or JWT attestation.",
    example: {
      file: "sidecar.yaml",
      bad: "appId: orders\nca: ca.prod.svc:8443\npolicy: policy.yaml\ntoken: mw-join-3f9a1c2b7d\n",
      good: "appId: orders\nca: ca.prod.svc:8443\npolicy: policy.yaml\ntokenFile: /var/run/secrets/meshward/token\n",
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
      // Keys whose value is a template expression (`{{ .Values.x | b64enc }}`) hold no data.
      const literal = secret.keys.filter((key) => !key.placeholder);
      return literal.slice(0, 1).map((key): Hit => ({
        path: key.path,
        evidence: `Secret ${secret.name}: ${literal.map((entry) => entry.name).join(", ")}`,
      }));
    },
  }),
  defineRule({
    id: "MW-SECRET-008",
    family: "secrets",
    severity: "medium",
    title: "Azure Container App secret value inline in its YAML",
    why: "A `properties.configuration.secrets` entry with a `value` keeps the secret in the file given to `az containerapp create --yaml`: in git and in every copy of the file, readable by anyone with the repository, and rotated only by editing it. A Key Vault reference (`keyVaultUrl` with a managed `identity`) keeps only the secret's address in the file.",
    fix: "Store the secret in Azure Key Vault and reference it (`keyVaultUrl: https://<vault>.vault.azure.net/secrets/<name>`, `identity: system` or a user-assigned identity's resource id), or set it out of band with `az containerapp secret set`.",
    example: {
      file: "containerapp.yaml",
      bad: containerAppYaml("      - name: db-password\n        value: Wint3r-is-c0ming\n"),
      good: containerAppYaml("      - name: db-password\n        keyVaultUrl: https://orders-kv.vault.azure.net/secrets/db-password\n        identity: system\n"),
    },
    appliesTo: ["config-values"],
    check(values) {
      if (values.holder !== "ContainerApp") return [];
      return values.env
        .filter((entry) => entry.value.trim() !== "" && !isPlaceholder(entry.value) && !hasSubstitution(entry.value))
        .map((entry): Hit => ({ path: entry.path, evidence: `secret ${entry.name}: ${redactSecret(entry.value)}` }));
    },
  }),
];

/** An `az containerapp create --yaml` file whose `secrets:` list is `secrets` (indented entries). */
function containerAppYaml(secrets: string): string {
  return [
    "name: orders",
    "type: Microsoft.App/containerApps",
    "properties:",
    "  configuration:",
    "    secrets:",
    secrets.replace(/\n$/, ""),
    "  template:",
    "    containers:",
    "      - name: orders",
    "        image: ordersacr.azurecr.io/orders:1.0.0",
    "        env:",
    "          - name: DB_PASSWORD",
    "            secretRef: db-password",
    "",
  ].join("\n");
}
