import { describe, expect, it } from "vitest";
import { auditSources } from "../../src/audit/audit.ts";
import { renderJson } from "../../src/audit/reporters/json.ts";

// Settings left from the stop-42 audit review: JDBC URLs (Spring's SPRING_DATASOURCE_URL),
// libpq's PGHOST/PGSSLMODE without a URL, and Azure keys inside connection strings.

/** A Deployment whose one container has these env values; findings as `rule(severity) evidence`. */
function auditEnv(vars: Record<string, string>): string[] {
  const env = Object.entries(vars).map(([name, value]) => `            - name: ${name}\n              value: ${JSON.stringify(value)}`).join("\n");
  const text = `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: orders:1\n          env:\n${env}\n`;
  return auditSources([{ file: "deployment.yaml", text }]).findings.map((finding) => `${finding.ruleId}(${finding.severity}) ${finding.evidence}`);
}

const URL = "SPRING_DATASOURCE_URL";

describe("JDBC URLs in container env", () => {
  it("PostgreSQL (pgjdbc): sslmode weak or unset is reported; ssl=true alone means verify-full (pgjdbc's default for it)", () => {
    expect(auditEnv({ [URL]: "jdbc:postgresql://pg.db.svc:5432/orders?sslmode=disable" })).toEqual([`MW-TLS-002(high) ${URL}: sslmode=disable (jdbc:postgresql://pg.db.svc:5432)`]);
    expect(auditEnv({ [URL]: "jdbc:postgresql://pg.db.svc:5432/orders" })).toEqual([`MW-TLS-002(high) ${URL}: sslmode not set (PostgreSQL JDBC default: prefer) (jdbc:postgresql://pg.db.svc:5432)`]);
    expect(auditEnv({ [URL]: "jdbc:postgresql://pg.db.svc:5432/orders?sslmode=require" })).toEqual([`MW-TLS-003(medium) ${URL}: sslmode=require (jdbc:postgresql://pg.db.svc:5432)`]);
    expect(auditEnv({ [URL]: "jdbc:postgresql://pg.db.svc:5432/orders?ssl=true" })).toEqual([]);
    expect(auditEnv({ [URL]: "jdbc:postgresql://pg.db.svc:5432/orders?sslmode=verify-full" })).toEqual([]);
  });

  it("PostgreSQL (pgjdbc): NonValidatingFactory checks no certificate whatever sslmode says; PGSSLMODE is not read by pgjdbc", () => {
    expect(auditEnv({ [URL]: "jdbc:postgresql://pg.db.svc/orders?ssl=true&sslfactory=org.postgresql.ssl.NonValidatingFactory" }))
      .toEqual([`MW-TLS-003(medium) ${URL}: ssl=true with sslfactory=NonValidatingFactory (no certificate check) (jdbc:postgresql://pg.db.svc)`]);
    expect(auditEnv({ [URL]: "jdbc:postgresql://pg.db.svc/orders?sslmode=verify-full&sslfactory=org.postgresql.ssl.NonValidatingFactory" }))
      .toEqual([`MW-TLS-003(medium) ${URL}: sslmode=verify-full with sslfactory=NonValidatingFactory (no certificate check) (jdbc:postgresql://pg.db.svc)`]);
    // libpq's PGSSLMODE next to a JDBC URL does not make it verified.
    expect(auditEnv({ [URL]: "jdbc:postgresql://pg.db.svc/orders", PGSSLMODE: "verify-full" })[0]).toMatch(/^MW-TLS-002\(high\) SPRING_DATASOURCE_URL: sslmode not set/);
  });

  it("MySQL Connector/J: useSSL=false, useSSL=true without verifyServerCertificate, sslMode; verified forms are quiet", () => {
    expect(auditEnv({ [URL]: "jdbc:mysql://my.db.svc:3306/orders?useSSL=false" })).toEqual([`MW-TLS-004(high) ${URL}: useSSL=false (jdbc:mysql://my.db.svc:3306)`]);
    expect(auditEnv({ [URL]: "jdbc:mysql://my.db.svc:3306/orders?useSSL=true" })).toEqual([`MW-TLS-004(high) ${URL}: useSSL=true without verifyServerCertificate=true (jdbc:mysql://my.db.svc:3306)`]);
    expect(auditEnv({ [URL]: "jdbc:mysql://my.db.svc:3306/orders?sslMode=PREFERRED" })).toEqual([`MW-TLS-004(high) ${URL}: sslmode=PREFERRED (jdbc:mysql://my.db.svc:3306)`]);
    expect(auditEnv({ [URL]: "jdbc:mysql://my.db.svc:3306/orders" })).toEqual([`MW-TLS-004(high) ${URL}: no TLS setting (jdbc:mysql://my.db.svc:3306)`]);
    expect(auditEnv({ [URL]: "jdbc:mysql://my.db.svc:3306/orders?sslMode=VERIFY_IDENTITY" })).toEqual([]);
    expect(auditEnv({ [URL]: "jdbc:mysql://my.db.svc:3306/orders?useSSL=true&verifyServerCertificate=true" })).toEqual([]);
    expect(auditEnv({ [URL]: "jdbc:mariadb://maria.db.svc:3306/orders?sslMode=verify-full" })).toEqual([]);
    expect(auditEnv({ [URL]: "jdbc:mariadb://maria.db.svc:3306/orders?sslMode=trust" })).toEqual([`MW-TLS-004(high) ${URL}: sslmode=trust (jdbc:mariadb://maria.db.svc:3306)`]);
  });

  it("SQL Server (mssql-jdbc): encrypt=false and trustServerCertificate=true", () => {
    expect(auditEnv({ [URL]: "jdbc:sqlserver://sql.db.svc:1433;databaseName=orders;encrypt=false" })).toEqual([`MW-TLS-014(high) ${URL}: Encrypt=false`]);
    expect(auditEnv({ [URL]: "jdbc:sqlserver://sql.db.svc:1433;databaseName=orders;encrypt=true;trustServerCertificate=true" })).toEqual([`MW-TLS-014(medium) ${URL}: TrustServerCertificate=true`]);
    expect(auditEnv({ [URL]: "jdbc:sqlserver://sql.db.svc:1433;databaseName=orders;encrypt=true" })).toEqual([]);
  });

  it("a JDBC URL's password is a secret, shown redacted; on loopback the TLS finding is low", () => {
    const findings = auditEnv({ [URL]: "jdbc:postgresql://pg.db.svc/orders?user=app&password=Zq8mX2pLw&sslmode=verify-full" });
    expect(findings).toEqual([`MW-SECRET-005(high) ${URL}: jdbc:postgresql://pg.db.svc/orders?user=app&password=****&sslmode=verify-full`]);
    expect(auditEnv({ [URL]: "jdbc:postgresql://localhost:5432/orders?sslmode=disable" })).toEqual([`MW-TLS-002(low) ${URL}: sslmode=disable (jdbc:postgresql://localhost:5432)`]);
  });
});

describe("libpq's PGHOST and PGSSLMODE without a URL", () => {
  it("a weak PGSSLMODE with a network PGHOST is reported on PGSSLMODE; verify-full, a socket or no PGSSLMODE are not", () => {
    expect(auditEnv({ PGHOST: "pg.db.svc", PGSSLMODE: "disable" })).toEqual(["MW-TLS-002(high) PGSSLMODE=disable (PGHOST: pg.db.svc)"]);
    expect(auditEnv({ PGHOST: "pg.db.svc", PGSSLMODE: "require" })).toEqual(["MW-TLS-003(medium) PGSSLMODE=require (PGHOST: pg.db.svc)"]);
    expect(auditEnv({ PGHOST: "localhost", PGSSLMODE: "prefer" })).toEqual(["MW-TLS-002(low) PGSSLMODE=prefer (PGHOST: localhost)"]);
    expect(auditEnv({ PGHOST: "pg.db.svc", PGSSLMODE: "verify-full" })).toEqual([]);
    expect(auditEnv({ PGHOST: "/var/run/postgresql", PGSSLMODE: "disable" })).toEqual([]);
    expect(auditEnv({ PGHOST: "pg.db.svc" })).toEqual([]);
  });

  it("with a postgres:// URL in the container, PGSSLMODE is judged with the URL, once", () => {
    expect(auditEnv({ PGHOST: "pg.db.svc", PGSSLMODE: "disable", DATABASE_URL: "postgres://pg.db.svc/orders" }))
      .toEqual(["MW-TLS-002(high) DATABASE_URL: sslmode=disable (postgres://pg.db.svc)"]);
    expect(auditEnv({ PGHOST: "pg.db.svc", PGSSLMODE: "disable", DATABASE_URL: "postgres://pg.db.svc/orders?sslmode=verify-full" })).toEqual([]);
  });
});

describe("Azure keys in connection strings", () => {
  const serviceBus = "Endpoint=sb://shop.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=Jk3mZ9pQ2xL7vR4tY8wN1cB6dF0hG5sA3eU2iO9kP1M=";
  const storage = "DefaultEndpointsProtocol=https;AccountName=shopdata;AccountKey=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3A=;EndpointSuffix=core.windows.net";

  it("SharedAccessKey and AccountKey in a container env value are secrets, and never printed", () => {
    const findings = auditEnv({ SERVICEBUS_CONNECTION: serviceBus, STORAGE_CONNECTION: storage });
    expect(findings).toEqual([
      "MW-SECRET-005(high) SERVICEBUS_CONNECTION: Endpoint=sb://shop.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=****",
      "MW-SECRET-005(high) STORAGE_CONNECTION: DefaultEndpointsProtocol=https;AccountName=shopdata;AccountKey=****;EndpointSuffix=core.windows.net",
    ]);
  });

  it("in a Dapr component's connectionString (MW-SECRET-002); the documented placeholder form is quiet", () => {
    const component = (value: string) => `apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.azure.servicebus.topics\n  version: v1\n  metadata:\n  - name: connectionString\n    value: ${JSON.stringify(value)}\n`;
    const result = auditSources([{ file: "pubsub.yaml", text: component(serviceBus) }]);
    expect(result.findings.map((finding) => finding.ruleId)).toEqual(["MW-SECRET-002"]);
    expect(renderJson(result)).not.toContain("Jk3mZ9pQ2xL7vR4tY8wN1cB6dF0hG5sA3eU2iO9kP1M");
    const placeholder = "Endpoint=sb://{ServiceBusNamespace}.servicebus.windows.net/;SharedAccessKeyName={PolicyName};SharedAccessKey={Key};";
    expect(auditSources([{ file: "pubsub.yaml", text: component(placeholder) }]).findings).toEqual([]);
  });
});
