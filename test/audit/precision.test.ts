import { describe, expect, it } from "vitest";
import { auditSources } from "../../src/audit/audit.ts";
import { isPlaceholder } from "../../src/audit/values.ts";
import { renderSarif } from "../../src/audit/reporters/sarif.ts";
import { ALL_RULES } from "../../src/audit/rules/index.ts";

// Precision gaps of the audit (fix-audit): each block is one gap, with the quiet cases beside it.

const audit = (file: string, text: string): string[] =>
  auditSources([{ file, text }]).findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.severity}`);

const evidence = (file: string, text: string): string[] =>
  auditSources([{ file, text }]).findings.map((finding) => `${finding.ruleId}(${finding.severity}) ${finding.evidence}`);

const component = (type: string, items: Record<string, string>): string =>
  `apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: c\nspec:\n  type: ${type}\n  metadata:\n${Object.entries(items).map(([name, value]) => `  - name: ${name}\n    value: ${JSON.stringify(value)}\n`).join("")}`;

/** A Deployment whose one container has these env values. */
const deployment = (vars: Record<string, string>): string =>
  `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: orders:1\n          env:\n${Object.entries(vars).map(([name, value]) => `            - name: ${name}\n              value: ${JSON.stringify(value)}`).join("\n")}\n`;

// SQL Server with no Encrypt: the client's default decides.
// - go-mssqldb (Dapr's state.sqlserver reads its connectionString with it), README "encrypt":
//   "false - Data sent between client and server is not encrypted beyond the login packet. (Default)";
//   "TrustServerCertificate … Default is true if encrypt is not specified" (denisenkom/go-mssqldb README.md).
// - Microsoft.Data.SqlClient ≥ 4.0 and ODBC Driver 18 default to Encrypt=true (Mandatory) and verify;
//   System.Data.SqlClient and ODBC Driver 17 default to Encrypt=false; mssql-jdbc ≥ 10.2 to encrypt=true.
describe("SQL Server connection strings without Encrypt (MW-TLS-014)", () => {
  const ado = "Server=sql.prod.internal;Database=orders;User ID=app;";

  it("a Dapr SQL Server component (go-mssqldb) without Encrypt is high, with evidence", () => {
    expect(evidence("s.yaml", component("state.sqlserver", { connectionString: ado })))
      .toEqual(["MW-TLS-014(high) connectionString: Encrypt not set (go-mssqldb default: only the login packet is encrypted, any certificate accepted)"]);
    expect(audit("s.yaml", component("state.sqlserver", { connectionString: "sqlserver://sql.prod.internal:1433?database=orders" }))).toEqual(["MW-TLS-014@9:high"]);
    // Quiet: Encrypt=true / strict, and a connection string from a secret.
    expect(audit("s.yaml", component("state.sqlserver", { connectionString: `${ado}Encrypt=true;` }))).toEqual([]);
    expect(audit("s.yaml", component("state.sqlserver", { connectionString: "sqlserver://sql.prod.internal?database=orders&encrypt=strict" }))).toEqual([]);
    const fromSecret = component("state.sqlserver", { tableName: "state" }) + "  - name: connectionString\n    secretKeyRef:\n      name: sql\n      key: conn\n";
    expect(audit("s.yaml", fromSecret)).toEqual([]);
  });

  it("a go-mssqldb URL (sqlserver://host?…) in container env is high; Prisma's sqlserver://host;… is medium", () => {
    expect(evidence("d.yaml", deployment({ MSSQL_URL: "sqlserver://sql.prod.internal:1433?database=orders" })))
      .toEqual(["MW-TLS-014(high) MSSQL_URL: Encrypt not set (go-mssqldb default: only the login packet is encrypted, any certificate accepted)"]);
    expect(audit("d.yaml", deployment({ DATABASE_URL: "sqlserver://sql.prod.internal:1433;database=orders;user=app" }))).toEqual(["MW-TLS-014@13:medium"]);
    expect(audit("d.yaml", deployment({ DATABASE_URL: "sqlserver://sql.prod.internal:1433;database=orders;encrypt=true" }))).toEqual([]);
  });

  it("an ADO.NET/ODBC string in env without Encrypt is medium when it is recognisably SQL Server", () => {
    const unset = "MW-TLS-014(medium) ConnectionStrings__Orders: Encrypt not set (no encryption in System.Data.SqlClient, go-mssqldb and ODBC Driver 17; verified only in Microsoft.Data.SqlClient ≥ 4 and ODBC Driver 18)";
    expect(evidence("d.yaml", deployment({ ConnectionStrings__Orders: "Data Source=sql.prod.internal;Initial Catalog=orders;User ID=app;" }))).toEqual([unset]);
    expect(evidence("d.yaml", deployment({ ConnectionStrings__Orders: "Server=tcp:shop.database.windows.net,1433;Database=orders;" }))).toEqual([unset]);
    expect(audit("d.yaml", deployment({ ODBC: "Driver={ODBC Driver 17 for SQL Server};Server=sql.prod.internal;Database=orders;" }))).toEqual(["MW-TLS-014@13:medium"]);
    expect(audit("d.yaml", deployment({ MSSQL_CONNECTION: ado }))).toEqual(["MW-TLS-014@13:medium"]);
    // TrustServerCertificate=true without Encrypt: both said.
    expect(evidence("d.yaml", deployment({ MSSQL_CONNECTION: `${ado}TrustServerCertificate=true;` }))[0]).toMatch(/Encrypt not set .*, TrustServerCertificate=true$/);
    // Quiet: Encrypt given, JDBC (encrypt=true by default since mssql-jdbc 10.2), and strings that are not SQL Server.
    expect(audit("d.yaml", deployment({ ConnectionStrings__Orders: "Data Source=sql.prod.internal;Initial Catalog=orders;Encrypt=True;" }))).toEqual([]);
    expect(audit("d.yaml", deployment({ SPRING_DATASOURCE_URL: "jdbc:sqlserver://sql.prod.internal:1433;databaseName=orders" }))).toEqual([]);
    expect(audit("d.yaml", deployment({ ConnectionStrings__Orders: "Server=mysql.prod.internal;Database=orders;Uid=app;SslMode=VerifyFull;" }))).toEqual([]);
    expect(audit("d.yaml", deployment({ ConnectionStrings__Orders: ado }))).toEqual([]);
    expect(audit("d.yaml", deployment({ FEATURES: "a=1;b=2" }))).toEqual([]);
  });
});

// Dapr's Pulsar components: what the scheme and enableTLS do.
// - dapr/components-contrib pubsub/pulsar/pulsar.go (also bindings/pulsar/pulsar.go), current main:
//   `sanitiseURL` keeps a host starting with pulsar+ssl://, pulsar://, http://, https:// and prefixes
//   "pulsar://" to any other; `pulsar.ClientOptions{URL, ..., TLSAllowInsecureConnection: !m.EnableTLS}`,
//   no TLSValidateHostname / TLSTrustCertsFilePath; pubsub/pulsar/metadata.go has no
//   tlsAllowInsecureConnection / tlsValidateHostname field (older trees, e.g. 7827b515e24f, prefixed
//   "pulsar://" to everything but http(s)://, with the same TLSAllowInsecureConnection: !EnableTLS).
// - apache/pulsar-client-go pulsar/client_impl.go: `case "pulsar", "http": tlsConfig = nil`,
//   `case "pulsar+ssl", "https": tlsConfig = &internal.TLSOptions{AllowInsecureConnection: ...}`.
// So the scheme alone turns TLS on; enableTLS only turns the certificate check on.
describe("Pulsar: the host's scheme decides TLS, enableTLS the certificate check", () => {
  const pulsar = (items: Record<string, string>) => component("pubsub.pulsar", items);

  it("a host without a scheme is plaintext whatever enableTLS says (MW-TLS-011 on host)", () => {
    expect(evidence("p.yaml", pulsar({ host: "broker.pulsar.svc:6650", enableTLS: "true" })))
      .toEqual(["MW-TLS-011(high) pubsub.pulsar host broker.pulsar.svc:6650 has no scheme: dialled as pulsar://, plaintext (enableTLS: \"true\"; enableTLS never turns TLS on)"]);
    expect(audit("p.yaml", pulsar({ host: "broker.pulsar.svc:6650", enableTLS: "false" }))).toEqual(["MW-TLS-011@9:high"]);
    expect(audit("p.yaml", pulsar({ host: "broker.pulsar.svc:6650" }))).toEqual(["MW-TLS-011@9:high"]);
    expect(audit("p.yaml", component("bindings.pulsar", { host: "broker.pulsar.svc:6650", enableTLS: "true" }))).toEqual(["MW-TLS-011@9:high"]);
    expect(audit("p.yaml", pulsar({ host: "localhost:6650", enableTLS: "true" }))).toEqual(["MW-TLS-011@9:low"]);
  });

  it("pulsar+ssl:// and https:// without enableTLS: \"true\" are TLS without a certificate check (MW-TLS-009)", () => {
    expect(evidence("p.yaml", pulsar({ host: "pulsar+ssl://broker.pulsar.svc:6651" })))
      .toEqual(["MW-TLS-009(high) pulsar+ssl://broker.pulsar.svc:6651 without enableTLS: \"true\" (Dapr sets TLSAllowInsecureConnection: any certificate accepted)"]);
    expect(audit("p.yaml", pulsar({ host: "https://pulsar.prod.internal:8443" }))).toEqual(["MW-TLS-009@9:high"]);
    expect(evidence("p.yaml", pulsar({ host: "pulsar+ssl://broker.pulsar.svc:6651", enableTLS: "false" })))
      .toEqual(["MW-TLS-009(high) enableTLS: \"false\" with pulsar+ssl://broker.pulsar.svc:6651 (Dapr sets TLSAllowInsecureConnection: any certificate accepted)"]);
  });

  it("pulsar+ssl:// and https:// with enableTLS: \"true\" are verified TLS; keys Dapr does not read change nothing", () => {
    expect(audit("p.yaml", pulsar({ host: "pulsar+ssl://broker.pulsar.svc:6651", enableTLS: "true" }))).toEqual([]);
    expect(audit("p.yaml", pulsar({ host: "https://pulsar.prod.internal:8443", enableTLS: "true" }))).toEqual([]);
    expect(audit("p.yaml", pulsar({ host: "pulsar+ssl://broker.pulsar.svc:6651", enableTLS: "true", tlsAllowInsecureConnection: "true", tlsValidateHostname: "false" }))).toEqual([]);
    // Plaintext schemes stay MW-TLS-007's, once; a host from a secret is not judged.
    expect(audit("p.yaml", pulsar({ host: "pulsar://broker.pulsar.svc:6650", enableTLS: "true" }))).toEqual(["MW-TLS-007@9:high"]);
    expect(audit("p.yaml", pulsar({ host: "http://broker.pulsar.svc:8080" }))).toEqual(["MW-TLS-007@9:high"]);
    expect(audit("p.yaml", component("pubsub.pulsar", { consumerID: "orders" }) + "  - name: host\n    secretKeyRef:\n      name: pulsar\n      key: host\n")).toEqual([]);
  });
});

// Placeholders are judged on the whole value: a real password that contains `my_`, `dummy` or
// `example` is a secret; a value that is only a placeholder phrase is not.
describe("placeholders are whole values, not substrings", () => {
  const real = ["my_Pr0d-pass!", "dummyPass42", "example-Pr0d!", "Xk9-replace-7q", "MyDogRex", "changeme2024!"];
  const placeholders = ["changeme", "CHANGE_ME", "<password>", "${VAR}", "{{ .Values.redis.password }}", "example", "dummy", "xxxxxxxx", "YOUR_API_KEY", "yourPassword", "my-secret", "dummy-password", "replace-with-your-key", "changeme-in-production", "REDACTED"];

  it("isPlaceholder: phrases are placeholders, real values that contain a placeholder word are not", () => {
    for (const value of placeholders) expect(isPlaceholder(value), value).toBe(true);
    for (const value of real) expect(isPlaceholder(value), value).toBe(false);
  });

  it("an inline component secret with such a word is reported (MW-SECRET-001); placeholders stay quiet", () => {
    for (const value of real) {
      expect(audit("s.yaml", component("state.redis", { redisHost: "redis:6379", enableTLS: "true", redisPassword: value })), value).toEqual(["MW-SECRET-001@13:high"]);
    }
    for (const value of placeholders) {
      expect(audit("s.yaml", component("state.redis", { redisHost: "redis:6379", enableTLS: "true", redisPassword: value })), value).toEqual([]);
    }
  });

  it("in container env and inside a connection URL (MW-SECRET-005), redacted", () => {
    expect(evidence("d.yaml", deployment({ DB_PASSWORD: "my_Pr0d-pass!" }))).toEqual(["MW-SECRET-005(high) DB_PASSWORD: <redacted, 13 characters>"]);
    expect(evidence("d.yaml", deployment({ DATABASE_URL: "postgres://app:dummyPass42@db.prod.internal/orders?sslmode=verify-full" })))
      .toEqual(["MW-SECRET-005(high) DATABASE_URL: postgres://app:****@db.prod.internal/orders?sslmode=verify-full"]);
    expect(audit("d.yaml", deployment({ DB_PASSWORD: "changeme", DATABASE_URL: "postgres://app:<password>@db.prod.internal/orders?sslmode=verify-full" }))).toEqual([]);
    // A URL on a host with `example` in its name is a URL, judged like any other.
    expect(audit("d.yaml", deployment({ DATABASE_URL: "postgres://db.example.com/orders?sslmode=disable" }))).toEqual(["MW-TLS-002@13:high"]);
  });
});

// SARIF: GitHub code scanning ranks an alert by `properties.security-severity` of the rule
// descriptor the result points at (docs.github.com, "SARIF support for code scanning",
// reportingDescriptor object); a result's own `level` does not change a security alert's
// severity. So a finding lowered to low (loopback) gets the sub-rule `<id>/low` (SARIF 2.1.0
// §3.27.5 hierarchical rule ids) whose descriptor says 3.0, and carries its severity in its
// own `properties` as well.
describe("SARIF security-severity follows the finding's severity", () => {
  interface Log { runs: { tool: { driver: { rules: { id: string; defaultConfiguration: { level: string }; properties: Record<string, unknown> }[] } }; results: { ruleId: string; ruleIndex: number; level: string; properties?: Record<string, unknown> }[] }[] }
  const sarif = (text: string): Log => JSON.parse(renderSarif(auditSources([{ file: "s.yaml", text }]), { rules: ALL_RULES, toolVersion: "0.1.0" })) as Log;
  const redis = (host: string) => component("state.redis", { redisHost: host });

  it("a finding lowered to low points at a low sub-rule (security-severity 3.0), with its own properties", () => {
    const log = sarif(redis("localhost:6379"));
    const run = log.runs[0];
    const result = run?.results[0];
    expect(result?.ruleId).toBe("MW-TLS-001/low");
    expect(result?.level).toBe("note");
    expect(result?.properties).toEqual({ "security-severity": "3.0", "meshward/ruleId": "MW-TLS-001" });
    const descriptor = run?.tool.driver.rules[result?.ruleIndex ?? -1];
    expect(descriptor?.id).toBe("MW-TLS-001/low");
    expect(descriptor?.properties["security-severity"]).toBe("3.0");
    expect(descriptor?.defaultConfiguration.level).toBe("note");
    // The base rule keeps its own severity, and is listed once.
    expect(run?.tool.driver.rules.filter((rule) => rule.id === "MW-TLS-001").map((rule) => rule.properties["security-severity"])).toEqual(["8.0"]);
  });

  it("a finding at its rule's severity keeps the rule id; no sub-rule is added", () => {
    const log = sarif(redis("redis.prod.svc:6379"));
    const run = log.runs[0];
    expect(run?.results.map((result) => result.ruleId)).toEqual(["MW-TLS-001"]);
    expect(run?.results[0]?.properties?.["security-severity"]).toBe("8.0");
    expect(run?.tool.driver.rules.length).toBe(ALL_RULES.length);
  });
});
