import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectRefused, runCli } from "../helpers/cli.ts";

/**
 * A mistyped `--store` of an admin command is refused instead of becoming a new empty store
 * (review cli, finding 7): `token create` printed a token the CA had never heard of, and
 * `cert list` said "no certificates issued yet". Real processes.
 */
describe("admin commands refuse a --store SQLite file that does not exist (real processes)", { timeout: 60_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-store-typo-"));
  const caDir = join(work, "ca");
  beforeAll(async () => {
    const init = await runCli(["ca", "init", "--trust-domain", "store.test", "--dir", caDir]);
    expect(init.code, init.stderr).toBe(0);
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("token create and cert list with a mistyped --store say so and create nothing; the right one works", async () => {
    const typo = join(work, "ca-typo.db");
    const token = await runCli(["token", "create", "--dir", caDir, "--namespace", "shop", "--app-id", "orders", "--store", `sqlite:${typo}`]);
    expectRefused(token, "E_STORE_OPEN", new RegExp(`--store sqlite:${typo}: no store at ${typo} \\(a mistyped path\\? .*this CA's default is sqlite:${join(caDir, "ca.db")}\\)`));
    expect(token.stdout).not.toMatch(/mwjt_/);
    const list = await runCli(["cert", "list", "--dir", caDir, "--store", typo]);
    expectRefused(list, "E_STORE_OPEN", /no store at/);
    expect(existsSync(typo)).toBe(false);
    // The default store is created as before; named explicitly once it exists, it is taken.
    expect((await runCli(["token", "create", "--dir", caDir, "--namespace", "shop", "--app-id", "orders"])).code).toBe(0);
    const right = await runCli(["token", "create", "--dir", caDir, "--namespace", "shop", "--app-id", "orders", "--store", `sqlite:${join(caDir, "ca.db")}`]);
    expect(right.code, right.stderr).toBe(0);
    expect(right.stdout).toMatch(/mwjt_/);
  });
});
