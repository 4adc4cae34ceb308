import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describeError, MeshwardError } from "../errors.ts";
import { OUT_DIR_LOCK, OUT_DIR_LOCK_HOLDER, OUT_DIR_PID_LOCK } from "../identity/local-paths.ts";
import { tryLockFile } from "../store/file-lock.ts";

/**
 * Takes `dir` for one writer (`meshward cert issue`) before the CA is asked, and returns what
 * lets it go. The lock is an fcntl lock on `.meshward-cert-issue.flock` (tryLockFile, as the CA
 * directory's lock): the kernel drops it when its holder dies, even by SIGKILL, so a killed run
 * leaves nothing to take over and two runs can never both hold it (review files LOW-4: the pid
 * file this replaced was taken over by two runs that both found it stale, and the loser's
 * rollback removed the winner's key.pem and bundle.pem). Another run holding it is refused
 * (E_OUT_DIR_BUSY), so the second's token is not spent; the holder's pid is in
 * `.meshward-cert-issue.flock.holder` for that message. The pid file of older meshward versions
 * (`.meshward-cert-issue.lock`) is still respected while its process runs, and removed under the
 * lock when it does not (no other run of this version removes it, so that removal cannot race).
 */
export function lockOutDir(dir: string, what: string): () => void {
  const path = join(dir, OUT_DIR_LOCK);
  const holder = join(dir, OUT_DIR_LOCK_HOLDER);
  let lock;
  try {
    lock = tryLockFile(path);
  } catch (error) {
    throw new MeshwardError("E_OUT_DIR", `${what}: cannot create the lock file ${path} (${errno(error)})`);
  }
  if (lock === "held") {
    const pid = readPid(holder);
    throw busy(what, pid === "unreadable" ? undefined : pid);
  }
  if (lock === "not-a-lock") {
    throw new MeshwardError("E_OUT_DIR_BUSY", `${what}: ${path} is not a lock file meshward made; if no meshward cert issue runs there, remove it and run the command again`);
  }
  const held = lock;
  const release = () => {
    // Removed before the lock is let go: a run that opened this file meanwhile then finds it unlinked (tryLockFile) and tries the new one.
    rmSync(holder, { force: true });
    rmSync(path, { force: true });
    held.release();
  };
  try {
    writeFileSync(holder, `${process.pid}\n`, { mode: 0o600 });
    const legacy = join(dir, OUT_DIR_PID_LOCK);
    const pid = readPid(legacy);
    if (pid === "unreadable") throw busy(what, undefined, legacy);
    if (pid !== undefined && processRuns(pid)) throw busy(what, pid, legacy);
    if (pid !== undefined) rmSync(legacy, { force: true }); // left by an older run that was killed
  } catch (error) {
    release();
    if (error instanceof MeshwardError) throw error;
    throw new MeshwardError("E_OUT_DIR", `${what}: cannot write the lock's holder file ${holder} (${errno(error)})`);
  }
  return release;
}

/** `pidFile`: an older version's pid file, which only its removal frees when no such run is left; the lock frees itself. */
function busy(what: string, pid: number | undefined, pidFile?: string): MeshwardError {
  const ask = pidFile !== undefined ? `wait for it, or, if none runs, remove ${pidFile}` : "wait for it and run this again (its lock is let go when it ends, even if it is killed)";
  return new MeshwardError("E_OUT_DIR_BUSY", `${what}: another meshward cert issue${pid !== undefined ? ` (pid ${pid})` : ""} is writing there; ${ask}`);
}

/** The pid a lock's holder file or an older version's pid file holds; undefined when absent, "unreadable" when it holds something else. */
function readPid(path: string): number | undefined | "unreadable" {
  let text: string;
  try {
    text = readFileSync(path, { encoding: "utf8", flag: "r" }).slice(0, 64);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ENOENT" ? undefined : "unreadable";
  }
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 0 ? pid : "unreadable";
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

function errno(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? describeError(error);
}
