import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { auditSources } from "../../src/audit/audit.ts";
import { MESHWARD_BIN } from "../helpers/cli.ts";

// Review audit H3: connection strings in .env files, ConfigMaps and Secrets get the rules the
// same variable gets in a container's env.
const URL = "postgres://orders:Sup3rS3cretPw@db.prod.internal:5432/orders?sslmode=disable";
const b64 = (text: string) => Buffer.from(text).toString("base64");
const findings = (file: string, text: string) => auditSources([{ file, text }]).findings.map((finding) => `${finding.ruleId} ${finding.severity} L${finding.line} ${finding.evidence}`);
const configMap = (data: string) => `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: orders\ndata:\n${data}`;
const secret = (data: string) => `apiVersion: v1\nkind: Secret\nmetadata:\n  name: orders-db\ntype: Opaque\n${data}`;

const dir = mkdtempSync(join(tmpdir(), "mw-audit-values-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("env files, ConfigMaps and Secrets are read like container env (review audit H3)", () => {
  it("a .env file without MICRO_* variables", () => {
    expect(findings("app/.env", `DATABASE_URL=${URL}\nREDIS_URL="redis://cache.prod.internal:6379/0"\nSTRIPE_API_KEY=sk_live_4eC39HqLyjWDarjtT1zdp7dc\nLOG_LEVEL=info\n`)).toEqual([
      "MW-SECRET-005 high L1 DATABASE_URL: postgres://orders:****@db.prod.internal:5432/orders?sslmode=disable",
      "MW-TLS-002 high L1 DATABASE_URL: sslmode=disable (postgres://db.prod.internal:5432)",
      "MW-TLS-007 high L2 REDIS_URL: redis://cache.prod.internal:6379",
      "MW-SECRET-005 high L3 STRIPE_API_KEY: <redacted, 32 characters>",
    ]);
    expect(findings("app/.env", "DATABASE_URL=postgres://db.prod.internal/orders?sslmode=verify-full\nREDIS_URL=rediss://cache:6380\nDB_PASSWORD=${DB_PASSWORD}\n")).toEqual([]);
  });

  it("a ConfigMap's data; a file kept in it is not an env value", () => {
    expect(findings("cm.yaml", configMap(`  DATABASE_URL: "${URL}"\n  AMQP_URL: amqp://rabbitmq.prod.svc:5672/\n  app.properties: |\n    url=${URL}\n    password=hunter2\n`))).toEqual([
      "MW-SECRET-005 high L6 DATABASE_URL: postgres://orders:****@db.prod.internal:5432/orders?sslmode=disable",
      "MW-TLS-002 high L6 DATABASE_URL: sslmode=disable (postgres://db.prod.internal:5432)",
      "MW-TLS-007 high L7 AMQP_URL: amqp://rabbitmq.prod.svc:5672",
    ]);
    expect(findings("cm.yaml", configMap("  REDIS_URL: rediss://cache:6380\n  LOG_LEVEL: info\n"))).toEqual([]);
  });

  it("a Secret's stringData and data: transport rules, never 'a secret in a Secret'", () => {
    expect(findings("secret.yaml", secret(`stringData:\n  DATABASE_URL: "${URL}"\n  DB_PASSWORD: Sup3rS3cretPw\n`))).toEqual([
      "MW-SECRET-007 low L7 Secret orders-db: DATABASE_URL, DB_PASSWORD",
      "MW-TLS-002 high L7 DATABASE_URL: sslmode=disable (postgres://db.prod.internal:5432)",
    ]);
    expect(findings("secret.yaml", secret(`data:\n  DATABASE_URL: ${b64(URL)}\n  MONGO_URL: ${b64("mongodb://u:p4ss@mongo.prod:27017/x")}\n  tls.key: ${b64("\u0001\u0002binary")}\n`))).toEqual([
      "MW-SECRET-007 low L7 Secret orders-db: DATABASE_URL, MONGO_URL, tls.key",
      "MW-TLS-002 high L7 DATABASE_URL: sslmode=disable (postgres://db.prod.internal:5432)",
      "MW-TLS-008 high L8 MONGO_URL: no tls=true (mongodb://mongo.prod:27017)",
    ]);
  });

  it("the CLI fails --fail-on high on them (it passed with 0 findings)", () => {
    const write = (file: string, text: string) => {
      mkdirSync(dirname(join(dir, file)), { recursive: true });
      writeFileSync(join(dir, file), text);
    };
    write("dotenv/.env", `DATABASE_URL=${URL}\n`);
    write("configmap/cm.yaml", configMap(`  DATABASE_URL: "${URL}"\n`));
    write("secret/secret.yaml", secret(`stringData:\n  DATABASE_URL: "${URL}"\n`));
    for (const folder of ["dotenv", "configmap", "secret"]) {
      const run = spawnSync(process.execPath, [MESHWARD_BIN, "audit", join(dir, folder), "--fail-on", "high"], { encoding: "utf8", timeout: 60_000 });
      expect(run.status, `${folder}: ${run.stdout}`).toBe(1);
      expect(run.stdout).toContain("MW-TLS-002");
      expect(run.stdout).not.toContain("Sup3rS3cretPw");
    }
  });
});
