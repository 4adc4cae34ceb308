import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";

// Review today3 LOW-1: tryLockFile must never let two processes hold the lock. The race: run B
// opens the lock file (inode I); the holder A lets go (unlinks I, closes: out-dir-lock.ts and
// dir-lock.ts release); a third run C creates the file anew (inode J) and locks it; B then locks
// I (free now) and must see that the path no longer names I. The window is between SQLite
// opening the path and B's check, too narrow to hit by chance in a test, so it is forced: the
// better-sqlite3 constructor is wrapped (in this test only, with vi.mock; production code has no
// hook) to run A's release and start C, a real second process holding an fcntl lock on the new
// file, right after B's handle opened the old one.
const hook = vi.hoisted(() => ({ afterOpen: undefined as undefined | (() => void) }));
vi.mock("better-sqlite3", async (importOriginal) => {
  const Real = ((await importOriginal()) as { default: new (...args: unknown[]) => object }).default;
  class Wrapped extends Real {
    constructor(...args: unknown[]) {
      super(...args);
      const run = hook.afterOpen;
      hook.afterOpen = undefined;
      run?.();
    }
  }
  return { default: Wrapped };
});

const { tryLockFile } = await import("../../src/store/file-lock.ts");
const { lockOutDir } = await import("../../src/cli/out-dir-lock.ts");
const { tryLockCaDir, CA_DIR_LOCK } = await import("../../src/ca/dir-lock.ts");
const { OUT_DIR_LOCK } = await import("../../src/identity/local-paths.ts");

// C: plain better-sqlite3 in another process, as tryLockFile takes the lock (BEGIN EXCLUSIVE, kept).
const CHILD = `
const Database = require("better-sqlite3");
const fs = require("node:fs");
const [path, ready] = process.argv.slice(1);
const db = new Database(path, { timeout: 0 });
db.pragma("journal_mode = MEMORY");
db.exec("BEGIN EXCLUSIVE");
fs.writeFileSync(ready, String(fs.statSync(path).ino));
setInterval(() => {}, 1000);
`;

let dir: string;
let child: ChildProcess | undefined;
afterEach(() => {
  child?.kill();
  child = undefined;
  hook.afterOpen = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A's release, then C takes the new file; returns once C holds it (synchronous: runs inside B's tryLockFile). */
function releaseThenThirdRun(release: () => void, lockPath: string): () => void {
  return () => {
    release();
    const ready = join(dir, "c-ready");
    child = spawn(process.execPath, ["-e", CHILD, lockPath, ready], { cwd: process.cwd(), stdio: "inherit" });
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    for (let i = 0; i < 600 && !existsSync(ready); i++) Atomics.wait(sleeper, 0, 0, 50);
    if (!existsSync(ready)) throw new Error("the third run did not take the lock");
    expect(Number(readFileSync(ready, "utf8"))).toBe(statSync(lockPath).ino);
  };
}

describe("tryLockFile: a holder letting go while another run opens the file (review today3 LOW-1)", () => {
  it("the run that opened the unlinked file does not hold the lock beside the third run (tryLockFile)", () => {
    dir = mkdtempSync(join(tmpdir(), "mw-flock-race-"));
    const path = join(dir, "x.lock");
    const a = tryLockFile(path);
    if (typeof a === "string") throw new Error(`A: ${a}`);
    hook.afterOpen = releaseThenThirdRun(() => {
      rmSync(path);
      a.release();
    }, path);
    expect(tryLockFile(path)).toBe("held");
    expect(hook.afterOpen).toBeUndefined(); // the interleaving did run
  });

  it("cert issue --out: the second run is refused E_OUT_DIR_BUSY", () => {
    dir = mkdtempSync(join(tmpdir(), "mw-flock-race-"));
    const releaseA = lockOutDir(dir, "run A");
    hook.afterOpen = releaseThenThirdRun(releaseA, join(dir, OUT_DIR_LOCK));
    expect(() => lockOutDir(dir, "run B")).toThrow(expect.objectContaining({ code: "E_OUT_DIR_BUSY" }));
    expect(hook.afterOpen).toBeUndefined();
  });

  it("the CA directory: the second writer is refused (heldBy)", () => {
    dir = mkdtempSync(join(tmpdir(), "mw-flock-race-"));
    const a = tryLockCaDir(dir, "run A");
    if (!("release" in a)) throw new Error("A refused");
    hook.afterOpen = releaseThenThirdRun(a.release, join(dir, CA_DIR_LOCK));
    const b = tryLockCaDir(dir, "run B");
    if ("release" in b) b.release();
    expect("heldBy" in b).toBe(true);
    expect(hook.afterOpen).toBeUndefined();
  });

  it("a holder that let go with nobody taking the new file: the late run gets the lock (tried again)", () => {
    dir = mkdtempSync(join(tmpdir(), "mw-flock-race-"));
    const path = join(dir, "x.lock");
    const a = tryLockFile(path);
    if (typeof a === "string") throw new Error(`A: ${a}`);
    hook.afterOpen = () => {
      rmSync(path);
      a.release();
    };
    const b = tryLockFile(path);
    expect(typeof b).toBe("object");
    if (typeof b === "object") b.release();
  });
});

// A second tryLockFile in the process that holds the lock opened (and, refused, closed) a
// descriptor of the file, and closing any descriptor of an inode drops every fcntl lock the
// process holds on it: another process could then take the lock held here.
describe("tryLockFile called twice in the process that holds the lock", () => {
  const PROBE = `
const Database = require("better-sqlite3");
const db = new Database(process.argv[1], { timeout: 0 });
try { db.pragma("journal_mode = MEMORY"); db.exec("BEGIN EXCLUSIVE"); process.stdout.write("locked"); } catch (e) { process.stdout.write(e.code); }
`;
  const probe = (path: string) =>
    new Promise<string>((resolve, reject) => {
      let out = "";
      const p = spawn(process.execPath, ["-e", PROBE, path], { cwd: process.cwd(), stdio: ["ignore", "pipe", "inherit"] });
      p.stdout!.on("data", (d) => (out += d));
      p.on("error", reject);
      p.on("close", () => resolve(out));
    });

  it("answers held, and the first lock still keeps other processes out until it is released", async () => {
    dir = mkdtempSync(join(tmpdir(), "mw-flock-twice-"));
    const path = join(dir, "x.lock");
    const a = tryLockFile(path);
    if (typeof a === "string") throw new Error(`A: ${a}`);
    expect(tryLockFile(path)).toBe("held");
    expect(await probe(path)).toBe("SQLITE_BUSY");
    a.release();
    expect(await probe(path)).toBe("locked");
    const again = tryLockFile(path);
    expect(typeof again).toBe("object");
    if (typeof again === "object") again.release();
  });
});
