import { describe, expect, it } from "vitest";
import { auditSources } from "../../src/audit/audit.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";

// Issue 19: the false-positive classes seen on the public Dapr repositories. Each test shows
// the quiet case and, next to it, the true case the rule must still report.

const findings = (file: string, text: string): string[] =>
  auditSources([{ file, text }]).findings.map((finding) => `${finding.ruleId}@${finding.line}`);

const component = (type: string, items: Record<string, string>): string =>
  `apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: c\nspec:\n  type: ${type}\n  metadata:\n${Object.entries(items).map(([name, value]) => `  - name: ${name}\n    value: ${JSON.stringify(value)}\n`).join("")}`;

const BEGIN = "-----BEGIN";
const END = "-----END";

describe("private keys (MW-SECRET-003) need a real key body", () => {
  const real = generateKeyPair().privateKey.export({ type: "pkcs8", format: "pem" }).toString();

  it("stays quiet on elided examples, tables and string literals", () => {
    const elided = [
      `${BEGIN} PRIVATE KEY-----\n...\n${END} PRIVATE KEY-----\n`,
      `key: |\n  ${BEGIN} PRIVATE KEY-----\n  MC4CAQ...\n  ${END} PRIVATE KEY-----\n`,
      `${BEGIN} RSA PRIVATE KEY-----\nKEY-DATA-GOES-HERE\n${END} RSA PRIVATE KEY-----\n`,
      `| field | example |\n| --- | --- |\n| privateKey | \`${BEGIN} PRIVATE KEY-----\\n...\` |\n`,
      `{"version":3,"sourcesContent":["if (pem.startsWith('${BEGIN} PRIVATE KEY-----')) parse(pem)"]}`,
      // 64 base64 characters that are not a DER structure
      `${BEGIN} PRIVATE KEY-----\n${"QUFB".repeat(16)}\n${END} PRIVATE KEY-----\n`,
      // legacy encrypted PEM
      `${BEGIN} RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\n${"QUFB".repeat(20)}\n${END} RSA PRIVATE KEY-----\n`,
    ];
    for (const [index, text] of elided.entries()) expect(findings(`doc-${index}.md`, text), text).toEqual([]);
  });

  it("reports a real key, also with \\n escapes (JSON, source maps) and in markdown", () => {
    expect(findings("notes.md", `# setup\n\n\`\`\`\n${real}\`\`\`\n`)).toEqual(["MW-SECRET-003@4"]);
    expect(findings("app.js.map", JSON.stringify({ version: 3, sourcesContent: [`const key = ${JSON.stringify(real)};`] }))).toEqual(["MW-SECRET-003@1"]);
  });
});

describe("inline secrets (MW-SECRET-001)", () => {
  it("stays quiet on substitutions", () => {
    for (const value of ["${{AWS_SECRET_ACCESS_KEY}}", "{{ .Values.redis.password }}", "$(REDIS_PASSWORD)", "${REDIS_PASSWORD}", "$REDIS_PASSWORD", "{MINIO_SECRET}"]) {
      expect(findings("c.yaml", component("state.redis", { redisPassword: value, enableTLS: "true" })), value).toEqual([]);
    }
  });

  it("stays quiet on URLs, file paths, public CA certificates and null", () => {
    expect(findings("c.yaml", component("pubsub.pulsar", {
      host: "pulsar+ssl://pulsar.svc:6651",
      enableTLS: "true",
      oidcTokenEndpoint: "https://idp.example.org/token",
      token_uri: "https://oauth2.googleapis.com/token",
      oidcTokenCAPEM: `${BEGIN} CERTIFICATE-----\nMIIB\n${END} CERTIFICATE-----`,
      privateKey: "private.key",
      clientKey: "/etc/tls/client.key",
      accessKey: "null",
    }))).toEqual([]);
  });

  it("stays quiet on placeholders of every style", () => {
    for (const value of ["***", "[aws_access_key]", "YOUR_API_KEY", "REPLACE_SECRET", "<your-key>", "my-secret", "changeme", "xxxxxxxx", "..."]) {
      expect(findings("c.yaml", component("bindings.aws.s3", { bucket: "b", secretKey: value })), value).toEqual([]);
    }
  });

  it("still reports a literal secret", () => {
    expect(findings("c.yaml", component("bindings.aws.s3", { bucket: "b", secretKey: "9p2dKraexj5RzN7kHV9S9H2EAj7RSI9o" }))).toEqual(["MW-SECRET-001@11"]);
    expect(findings("c.yaml", component("state.redis", { redisHost: "r:6379", enableTLS: "true", redisPassword: "KeFg23!" }))).toEqual(["MW-SECRET-001@13"]);
  });
});

describe("container env secrets (MW-SECRET-005)", () => {
  const deployment = (env: string): string =>
    `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: a\nspec:\n  template:\n    spec:\n      containers:\n      - name: a\n        image: a\n        env:\n${env}`;
  it("stays quiet on values that name a key in a secret store, or the namespace", () => {
    const env = "        - name: SECRET_STORE_KEY\n          value: dapr-secret\n        - name: SECRET_NAMESPACE\n          value: default\n        - name: APP_SECRET\n          value: default\n        - name: SECRET_KEY\n          value: redis.password\n";
    expect(findings("d.yaml", deployment(env))).toEqual([]);
  });
  it("stays quiet on settings about a secret: its rotation, timeout, policy, provider", () => {
    const settings = { SESSION_SECRET_ROTATION: "daily", TOKEN_TIMEOUT: "30m", PASSWORD_POLICY: "strict", SECRET_PROVIDER: "vault", JWT_SECRET_MAX_AGE: "3600", API_TOKEN_COUNT: "4", SECRETS_DIR: "run" };
    const env = Object.entries(settings).map(([name, value]) => `        - name: ${name}\n          value: ${value}\n`).join("");
    expect(findings("d.yaml", deployment(env))).toEqual([]);
    // The same values under names that hold the secret itself are still reported.
    expect(findings("d.yaml", deployment("        - name: SESSION_SECRET\n          value: daily\n        - name: API_TOKEN\n          value: strict\n"))).toEqual(["MW-SECRET-005@13", "MW-SECRET-005@15"]);
  });
  it("still reports a literal secret, also when it looks like a word under a strong name", () => {
    const env = "        - name: APP_SECRET\n          value: Sup3rS3cret\n        - name: DB_PASSWORD\n          value: hunter-two\n";
    expect(findings("d.yaml", deployment(env))).toEqual(["MW-SECRET-005@13", "MW-SECRET-005@15"]);
  });
});

describe("Secret data (MW-SECRET-007)", () => {
  it("stays quiet on template expressions, quoted or not", () => {
    const secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  password: {{ password | b64encode }}\n  token: \"{{ token | b64encode }}\"\n";
    expect(findings("s.yaml", secret)).toEqual([]);
  });
  it("still reports literal data and names only the literal keys", () => {
    const secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  password: {{ password | b64encode }}\n  token: aHVudGVyMg==\n";
    const result = auditSources([{ file: "s.yaml", text: secret }]);
    expect(result.findings.map((finding) => `${finding.ruleId}@${finding.line} ${finding.evidence}`)).toEqual(["MW-SECRET-007@7 Secret s: token"]);
  });
});

describe("sslmode not set (MW-TLS-002)", () => {
  it("stays quiet on a connection string that is wholly a substitution or placeholder", () => {
    for (const value of ["${{AzureDBPostgresConnectionString}}", "{{ .Values.pg.url }}", "<CONNECTION_STRING>", "YOUR_CONNECTION_STRING"]) {
      expect(findings("c.yaml", component("state.postgresql", { connectionString: value })), value).toEqual([]);
    }
  });
  it("still reports a partly substituted connection string without sslmode", () => {
    expect(findings("c.yaml", component("state.postgresql", { connectionString: "host=${{PGHOST}} user=dapr dbname=state" }))).toEqual(["MW-TLS-002@9"]);
  });
});

describe("plaintext endpoints (MW-TLS-007)", () => {
  it("stays quiet on identifiers that are URLs", () => {
    expect(findings("c.yaml", component("pubsub.kafka", { brokers: "kafka:9093", authType: "oidc", oidcAudience: "http://kafka.example.org", oidcScopes: "http://example.org/scope" }))).toEqual([]);
  });
  it("still reports an endpoint that is connected to", () => {
    expect(findings("c.yaml", component("pubsub.kafka", { brokers: "kafka:9093", authType: "oidc", oidcTokenEndpoint: "http://idp.example.org/token" }))).toEqual(["MW-TLS-007@13"]);
  });
});

describe("MongoDB `server` (MW-TLS-008): Dapr connects with mongodb+srv://, TLS on by default", () => {
  it("stays quiet on an Atlas server, inline or from a secret", () => {
    expect(findings("m.yaml", component("state.mongodb", { server: "cluster0.abcd1.mongodb.net", databaseName: "orders" }))).toEqual([]);
    expect(findings("m.yaml", component("state.mongodb", { server: "cluster0.abcd1.mongodb.net", params: "?retryWrites=true&w=majority" }))).toEqual([]);
    const fromSecret = `${component("state.mongodb", { databaseName: "orders" })}  - name: server\n    secretKeyRef: { name: atlas, key: server }\n`;
    expect(findings("m.yaml", fromSecret)).toEqual([]);
  });
  it("still reports a server whose params turn TLS off, and a plain host without tls=true", () => {
    expect(findings("m.yaml", component("state.mongodb", { server: "cluster0.abcd1.mongodb.net", params: "?tls=false" }))).toEqual(["MW-TLS-008@11"]);
    expect(findings("m.yaml", component("state.mongodb", { server: "cluster0.abcd1.mongodb.net", params: "?ssl=false" }))).toEqual(["MW-TLS-008@11"]);
    expect(findings("m.yaml", component("state.mongodb", { host: "mongo.prod.internal:27017", databaseName: "orders" }))).toEqual(["MW-TLS-008@9"]);
    // A mongodb:// connection string wins over `server` in Dapr, so it is what is judged.
    expect(findings("m.yaml", component("state.mongodb", { server: "cluster0.abcd1.mongodb.net", connectionString: "mongodb://mongo.prod.internal/orders" }))).toEqual(["MW-TLS-008@11"]);
  });
});

describe("a Unix-domain socket is not network traffic (review audit M5)", () => {
  const deploy = (env: Record<string, string>): string =>
    `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: x\n          env:\n${Object.entries(env).map(([name, value]) => `            - name: ${name}\n              value: ${JSON.stringify(value)}\n`).join("")}`;

  it("PostgreSQL over a socket (Cloud SQL Auth Proxy, /var/run/postgresql) has no sslmode finding; a network host still does", () => {
    expect(findings("d.yaml", deploy({ DATABASE_URL: "postgresql:///orders?host=/cloudsql/acme-prod:europe-west1:orders-db" }))).toEqual([]);
    expect(findings("d.yaml", deploy({ DATABASE_URL: "postgresql://%2Fvar%2Frun%2Fpostgresql/orders" }))).toEqual([]);
    expect(findings("d.yaml", deploy({ DATABASE_URL: "postgresql:///orders", PGHOST: "/cloudsql/acme:eu:db" }))).toEqual([]);
    expect(findings("c.yaml", component("state.postgresql", { connectionString: "host=/var/run/postgresql dbname=dapr user=dapr" }))).toEqual([]);
    expect(findings("c.yaml", component("state.postgresql", { connectionString: "host=@pgsock dbname=dapr user=dapr" }))).toEqual([]);
    // True cases beside them: a network host, a socket beside a network host, hostaddr, no host at all.
    expect(findings("d.yaml", deploy({ DATABASE_URL: "postgresql:///orders?host=db.prod.internal" }))).toEqual(["MW-TLS-002@13"]);
    expect(findings("c.yaml", component("state.postgresql", { connectionString: "host=/var/run/postgresql,db.prod.internal dbname=dapr" }))).toEqual(["MW-TLS-002@9"]);
    expect(findings("c.yaml", component("state.postgresql", { connectionString: "host=/var/run/postgresql hostaddr=10.0.0.5 dbname=dapr" }))).toEqual(["MW-TLS-002@9"]);
    expect(findings("c.yaml", component("state.postgresql", { connectionString: "dbname=dapr user=dapr sslmode=disable" }))).toEqual(["MW-TLS-002@9"]);
  });

  it("MySQL over a socket (user@unix(...)) has no TLS finding; tcp(...) still does", () => {
    expect(findings("d.yaml", deploy({ MYSQL_DSN: "orders@unix(/var/run/mysqld/mysqld.sock)/orders" }))).toEqual([]);
    expect(findings("c.yaml", component("state.mysql", { connectionString: "dapr@unix(/var/run/mysqld/mysqld.sock)/" }))).toEqual([]);
    expect(findings("d.yaml", deploy({ MYSQL_DSN: "orders@tcp(db.prod.internal:3306)/orders" }))).toEqual(["MW-TLS-004@13"]);
    expect(findings("c.yaml", component("state.mysql", { connectionString: "dapr@tcp(mysql.db.svc:3306)/" }))).toEqual(["MW-TLS-004@9"]);
  });
});
