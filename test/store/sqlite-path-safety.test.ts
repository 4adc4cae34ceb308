import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import { expectRefused, runCli } from "../helpers/cli.ts";

const NOBODY = 65534;

/** Runs `command` as uid/gid 65534, as another local user would (the reviewer's setpriv). */
function asNobody(command: string, args: string[]): void {
  const r = spawnSync(command, args, { uid: NOBODY, gid: NOBODY, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${command} ${args.join(" ")} as uid ${NOBODY} failed: ${r.stderr}`);
}

function dir(parent: string, name: string, mode: number, owner?: number): string {
  const path = join(parent, name);
  mkdirSync(path);
  if (owner !== undefined) chownSync(path, owner, owner);
  chmodSync(path, mode);
  return path;
}

function opens(path: string, caDirectory?: string): void {
  const store = openSqliteStore(path, caDirectory === undefined ? {} : { caDirectory });
  void store.close();
}

/**
 * Review atrest, MEDIUM-4: a SQLite store named with --store outside the CA directory was never
 * checked. In a shared (1777) directory another user pre-created ca.db; the root-run CA migrated
 * it and that user inserted a join token and got a certificate for another workload. A planted
 * symlink there had its target chmodded 0600 by root. The store's directory (and its parents,
 * outside the CA directory), the file and SQLite's side files are now held to the CA directory's rule.
 */
describe("SQLite store files others could change are refused (E_STORE_UNSAFE)", { timeout: 90_000 }, () => {
  let work: string;
  let caDir: string;
  beforeAll(async () => {
    // The other user is real: a child process with uid 65534. This must fail, never pass unseen, without root.
    if (process.getuid?.() !== 0) throw new Error("sqlite-path-safety.test.ts needs root (uid 0): it creates files as uid 65534");
    work = mkdtempSync(join(tmpdir(), "meshward-store-safety-"));
    chmodSync(work, 0o755);
    caDir = join(work, "ca");
    const init = await runCli(["ca", "init", "--trust-domain", "safe.test", "--dir", caDir]);
    expect(init.code, init.stderr).toBe(0);
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("ca serve and token create refuse a store another user pre-created in a shared directory, and leave it untouched (the reviewer's repro)", async () => {
    const shared = dir(work, "shared", 0o1777);
    const planted = join(shared, "ca.db");
    asNobody("touch", [planted]);
    for (const args of [
      ["ca", "serve", "--dir", caDir, "--store", `sqlite:${planted}`, "--listen", "127.0.0.1:0"],
      ["token", "create", "--dir", caDir, "--namespace", "prod", "--app-id", "payments", "--store", `sqlite:${planted}`],
    ]) {
      const r = await runCli(args);
      expectRefused(r, "E_STORE_UNSAFE", new RegExp(`the store ${planted}: the directory ${shared} is writable by group or others \\(mode 1777\\).*mkdir -m 700 ${shared}/meshward-ca`));
      expect(r.stdout).not.toMatch(/listening on|mwjt_/);
    }
    expect(statSync(planted).size).toBe(0); // never migrated
    expect(existsSync(`${planted}-wal`)).toBe(false);
  });

  it("ca serve refuses a symbolic link as the store and leaves its target's mode alone", async () => {
    const own = dir(work, "own-link", 0o700);
    const victim = join(work, "victim.txt");
    writeFileSync(victim, "someone's file\n");
    chmodSync(victim, 0o644);
    symlinkSync(victim, join(own, "ca.db"));
    const r = await runCli(["ca", "serve", "--dir", caDir, "--store", `sqlite:${join(own, "ca.db")}`, "--listen", "127.0.0.1:0"]);
    expectRefused(r, "E_STORE_UNSAFE", new RegExp(`${join(own, "ca.db")} is a symbolic link \\(to ${victim}\\).*Give the file's real path`));
    expect(statSync(victim).mode & 0o777).toBe(0o644);
  });

  it("refuses a database file owned by another user, or group/other-writable, in a directory of one's own, naming the fix", () => {
    const own = dir(work, "own-files", 0o700);
    const foreign = join(own, "foreign.db");
    writeFileSync(foreign, "");
    chownSync(foreign, NOBODY, NOBODY);
    expect(() => opens(foreign)).toThrow(expect.objectContaining({ code: "E_STORE_UNSAFE", message: expect.stringMatching(/foreign\.db is owned by uid 65534, not by this user \(uid 0\) or root.*chown 0 /) }));
    const loose = join(own, "loose.db");
    writeFileSync(loose, "");
    chmodSync(loose, 0o666);
    expect(() => opens(loose)).toThrow(expect.objectContaining({ code: "E_STORE_UNSAFE", message: expect.stringMatching(new RegExp(`loose\\.db is writable by group or others \\(mode 0666\\).*chmod 600 ${loose}`)) }));
    expect(statSync(loose).mode & 0o777).toBe(0o666);
  });

  it("refuses SQLite's side files (-wal, -shm, -journal) of another user, writable by others, or links", () => {
    const own = dir(work, "own-side", 0o700);
    for (const [suffix, make] of [
      ["-wal", (p: string) => (writeFileSync(p, ""), chownSync(p, NOBODY, NOBODY))],
      ["-shm", (p: string) => (writeFileSync(p, ""), chmodSync(p, 0o646))],
      ["-journal", (p: string) => symlinkSync(join(work, "victim-journal"), p)],
    ] as const) {
      const db = join(own, `side${suffix}.db`);
      make(`${db}${suffix}`);
      expect(() => opens(db), suffix).toThrow(expect.objectContaining({ code: "E_STORE_UNSAFE", message: expect.stringContaining(`${db}${suffix}`) }));
      expect(existsSync(db), suffix).toBe(false);
    }
  });

  it("outside the CA directory the parents count too; the CA directory's own store keeps that directory's rule; a directory of one's own works", () => {
    const theirs = dir(work, "home-of-nobody", 0o755, NOBODY);
    const inside = dir(theirs, "meshward", 0o700);
    expect(() => opens(join(inside, "ca.db"))).toThrow(
      expect.objectContaining({ code: "E_STORE_UNSAFE", message: expect.stringMatching(new RegExp(`${theirs}, a parent of ${inside}, is owned by uid 65534`)) }),
    );
    // The same directory as the CA directory: its parents are the operator's, as for --dir.
    opens(join(inside, "ca.db"), inside);
    const mine = dir(work, "mine", 0o700);
    opens(join(mine, "ca.db"));
    const stats = lstatSync(join(mine, "ca.db"));
    expect(stats.isFile()).toBe(true);
    expect(stats.mode & 0o777).toBe(0o600);
  });

  it("the CA directory's default store and a --store in a directory of one's own still work (controls)", async () => {
    const token = await runCli(["token", "create", "--dir", caDir, "--namespace", "prod", "--app-id", "payments"]);
    expect(token.code, token.stderr).toBe(0);
    const mine = dir(work, "stores", 0o700);
    const migrated = await runCli(["ca", "migrate-store", "--dir", caDir, "--to", `sqlite:${join(mine, "ca.db")}`]);
    expect(migrated.code, migrated.stderr).toBe(0);
    const other = await runCli(["token", "create", "--dir", caDir, "--namespace", "prod", "--app-id", "payments", "--store", `sqlite:${join(mine, "ca.db")}`]);
    expect(other.code, other.stderr).toBe(0);
  });
});
