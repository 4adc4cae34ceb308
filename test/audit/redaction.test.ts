import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { redactConnectionString } from "../../src/audit/rules/helpers.ts";
import { hostOf, urlPassword } from "../../src/audit/values.ts";
import { MESHWARD_BIN } from "../helpers/cli.ts";

// Review audit M3: URL parsers split a password with an unencoded '@' at the LAST '@', so such a
// password works in production, and no part of it may be printed in text, JSON or SARIF.
const PASSWORD = "Tr0ub4dor@3xyzQ-secret-tail";
const URL = `postgres://orders:${PASSWORD}@db.prod.internal:5432/orders?sslmode=disable`;
const dir = mkdtempSync(join(tmpdir(), "mw-audit-redact-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function meshward(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [MESHWARD_BIN, ...args], { encoding: "utf8", timeout: 60_000 });
  return { code: run.status, stdout: run.stdout, stderr: run.stderr };
}

describe("no part of a password is printed (review audit M3)", () => {
  it("hides a password with '@', '/', quotes and spaces in every redaction", () => {
    expect(decodeURIComponent(new globalThis.URL(URL).password)).toBe(PASSWORD);
    const cases: [string, string][] = [
      [URL, "postgres://orders:****@db.prod.internal:5432/orders?sslmode=disable"],
      ["redis://:p@ss-secret@cache:6379", "redis://:****@cache:6379"],
      ["postgres://admin@server:pa@ss-secret@host/db", "postgres://admin@server:****@host/db"],
      ["postgres://u:pa/ss-secret@host/db", "postgres://u:****@host/db"],
      ["orders:pa@ss-secret@tcp(db:3306)/orders", "orders:****@tcp(db:3306)/orders"],
      ["host=db password='it\\'s ss-secret' sslmode=disable", "host=db password=**** sslmode=disable"],
      ["Server=db;Password=my ss-secret pw;Encrypt=false", "Server=db;Password=****;Encrypt=false"],
      ["Server=db;Password='ab''ss-secret';Encrypt=false", "Server=db;Password=****;Encrypt=false"],
      ["https://ghp_ss-secret@git.example.org/x", "https://****@git.example.org/x"],
    ];
    for (const [value, shown] of cases) {
      expect(redactConnectionString(value), value).toBe(shown);
      expect(hostOf(value), value).not.toMatch(/secret|pa|ss/);
    }
    expect(hostOf(URL)).toBe("db.prod.internal:5432");
    expect(urlPassword(URL)).toBe(PASSWORD);
    expect(urlPassword("postgres://admin@server:pa@ss@host/db")).toBe("pa@ss");
    expect(urlPassword("postgres://db:5432/orders?user=a@b")).toBeUndefined();
  });

  it("the CLI prints none of it in text, JSON or SARIF", () => {
    writeFileSync(join(dir, "deploy.yaml"), `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: x\n          env:\n            - name: DATABASE_URL\n              value: "${URL}"\n            - name: REDIS_URL\n              value: "redis://:${PASSWORD}@cache.prod.internal:6379"\n            - name: AZURE_PG\n              value: "postgres://admin@server:${PASSWORD}@pg.prod.internal/orders?sslmode=disable"\n`);
    writeFileSync(join(dir, "statestore.yaml"), `apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.postgresql\n  metadata:\n    - name: connectionString\n      value: "${URL}"\n`);
    for (const format of ["text", "json", "sarif"]) {
      const run = meshward("audit", dir, "--format", format);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toContain("MW-TLS-002");
      expect(run.stdout).toContain("MW-SECRET-005");
      expect(run.stdout).toContain("MW-SECRET-002");
      for (const part of ["Tr0ub4dor", "3xyzQ", "secret-tail"]) expect(run.stdout, `${format}: ${part}`).not.toContain(part);
      expect(run.stdout).toContain("db.prod.internal:5432");
    }
  });
});

describe("no token beside a masked password is printed (review audit finding 7)", () => {
  const cases: [string, string][] = [
    ["amqp://orders:RabbitPass99@rabbitmq.shop.svc:5672/?auth_token=LEAKED-TOKEN-1", "amqp://orders:****@rabbitmq.shop.svc:5672/?auth_token=****"],
    ["mongodb://AKIAEXAMPLE:AwsSecretPart@mongo.shop.svc/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:LEAKED-SESSION-2", "mongodb://AKIAEXAMPLE:****@mongo.shop.svc/?authMechanism=MONGODB-AWS&authMechanismProperties=****"],
    ["https://elastic:ElasticPass@es.shop.svc:9200/?api_key=LEAKED-APIKEY-3", "https://elastic:****@es.shop.svc:9200/?api_key=****"],
    ["https://svc:SvcPass@files.shop.svc/upload?sig=LEAKED-SAS-4&sv=2022-11-02", "https://svc:****@files.shop.svc/upload?sig=****&sv=2022-11-02"],
    ["postgres://u:p@db/x?sslmode=disable&access_token=LEAKED-5#LEAKED-6", "postgres://u:****@db/x?sslmode=disable&access_token=****#****"],
    ["orders:pw@tcp(db:3306)/orders?tls=false&token=LEAKED-7", "orders:****@tcp(db:3306)/orders?tls=false&token=****"],
  ];
  it("in the redaction itself", () => {
    for (const [value, shown] of cases) expect(redactConnectionString(value), value).toBe(shown);
  });

  it("in text, JSON and SARIF", () => {
    const file = join(dir, "tokens.yaml");
    writeFileSync(file, `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  template:\n    spec:\n      containers:\n        - name: orders\n          image: x\n          env:\n${cases.map(([value], index) => `            - name: URL_${index}\n              value: ${JSON.stringify(value)}\n`).join("")}`);
    for (const format of ["text", "json", "sarif"]) {
      const run = meshward("audit", "--format", format, file);
      expect(run.stdout, format).toContain("URL_0");
      expect(run.stdout, format).not.toMatch(/LEAKED|RabbitPass99|AwsSecretPart|ElasticPass|SvcPass/);
    }
  });
});
