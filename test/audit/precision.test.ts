import { describe, expect, it } from "vitest";
import { auditSources } from "../../src/audit/audit.ts";

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
