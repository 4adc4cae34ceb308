import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { MeshwardError } from "../errors.ts";
import { tryLockFile } from "../store/file-lock.ts";
import { removeWriteLeftovers } from "../util/files.ts";
import { caLayout } from "./anchors.ts";
import { finishPairSwitch, pendingPath } from "./pair-switch.ts";

/**
 * One writer at a time in a CA directory (review atrest MEDIUM-2): every step that changes its
 * files — `ca rotate-issuer`, `import-issuer`, `rotate-root prepare|activate|retire`, and the
 * running CA's automatic rotation — holds an exclusive lock on `.meshward-ca.lock` (an fcntl lock
 * through tryLockFile: the operating system drops it when its holder dies, even by SIGKILL) from
 * reading ca.json to its last write. Nobody waits: a command finding it held is refused
 * E_CA_DIR_LOCKED naming the holder (a rotation takes milliseconds: run it again), and the
 * running CA skips that round and tries at its next rotation check, so a command and the CA never
 * wait on each other. Reading (the CA's watcher, `ca status`) takes no lock: each file change is
 * atomic and a key/certificate pair is switched as one unit (pair-switch.ts).
 *
 * Whoever takes the lock first puts in order what an interrupted writer left (crash, kill, full
 * disk): a half-switched key/certificate pair is finished or undone (pair-switch.ts), and the
 * temp files of interrupted atomic writes are removed.
 */
export const CA_DIR_LOCK = ".meshward-ca.lock";

export interface CaDirLock {
  /** What was found and put in order when the lock was taken, one line each, for the log. */
  readonly repaired: readonly string[];
  release(): void;
}

/** The key/certificate pairs of a CA directory that are switched as one unit. */
export function caPairs(dir: string): { key: string; cert: string; also?: string[] }[] {
  const layout = caLayout(dir);
  return [
    // The retired-issuer record of --now is switched with the issuer pair (rotation.ts installIssuer).
    { key: layout.issuerKey, cert: layout.issuerCert, also: [layout.retiredIssuers] },
    { key: layout.rootKey, cert: layout.rootCert },
    { key: layout.previousIssuerKey, cert: layout.previousIssuerCert },
  ];
}

/** Whether a pair switch was interrupted (staged files are present): cheap, for a periodic check. */
export function pairSwitchPending(dir: string, exists: (path: string) => boolean): boolean {
  return caPairs(dir).some((pair) => [pair.key, pair.cert, ...(pair.also ?? [])].some((path) => exists(pendingPath(path))));
}

/** Files of a CA directory its writers replace atomically (their temp files are swept). */
function caFileNames(dir: string): string[] {
  const layout = caLayout(dir);
  const files = [layout.state, layout.rootCert, layout.rootKey, layout.issuerCert, layout.issuerKey, layout.bundle, layout.nextRootCert, layout.nextRootKey, layout.previousRootCert, layout.previousRootKey, layout.nextIssuerCert, layout.nextIssuerKey, layout.retiredIssuers];
  return [...files, ...caPairs(dir).flatMap((pair) => [pair.key, pair.cert, ...(pair.also ?? [])].map(pendingPath))].map((file) => basename(file));
}

/** The lock, or undefined with who holds it. `holder` says who takes it, for another's refusal. */
export function tryLockCaDir(dir: string, holder: string): CaDirLock | { readonly heldBy: string } {
  const path = join(dir, CA_DIR_LOCK);
  const lock = tryLockFile(path);
  if (lock === "held") return { heldBy: describeHolder(path) };
  if (lock === "not-a-lock") {
    throw new MeshwardError("E_CA_DIR_LOCKED", `${path} is not a lock file meshward made; if no meshward command runs on ${dir}, remove it and run the command again`, { details: { path } });
  }
  const release = () => {
    // Removed before the lock is let go: a process that opened this file meanwhile then finds it unlinked (tryLockFile) and tries the new one.
    rmSync(`${path}.holder`, { force: true });
    rmSync(path, { force: true });
    lock.release();
  };
  try {
    writeFileSync(`${path}.holder`, `${holder} (pid ${process.pid}, since ${new Date().toISOString()})\n`, { mode: 0o600 });
    const repaired: string[] = [];
    for (const pair of caPairs(dir)) repaired.push(...finishPairSwitch(pair.key, pair.cert, pair.also));
    const removed = removeWriteLeftovers(dir, caFileNames(dir));
    if (removed.length > 0) repaired.push(`removed what interrupted writes left: ${removed.map((file) => basename(file)).join(", ")}`);
    return { repaired, release };
  } catch (error) {
    release();
    throw error;
  }
}

function describeHolder(path: string): string {
  try {
    const text = readFileSync(`${path}.holder`, "utf8").trim();
    if (text !== "" && text.length < 300 && !/[\u0000-\u001f]/.test(text)) return text;
  } catch {
    // taken an instant ago, or by a process that has not said who it is
  }
  return "another meshward process";
}

/**
 * Runs `fn` holding the CA directory lock; refused E_CA_DIR_LOCKED (nothing done) when another
 * process holds it. `onRepaired` hears what was put in order first.
 */
export async function withCaDirLock<T>(dir: string, holder: string, fn: () => Promise<T>, onRepaired: (line: string) => void): Promise<T> {
  const lock = tryLockCaDir(dir, holder);
  if (!("release" in lock)) throw caDirLocked(dir, lock.heldBy);
  try {
    for (const line of lock.repaired) onRepaired(line);
    return await fn();
  } finally {
    lock.release();
  }
}

export function caDirLocked(dir: string, heldBy: string): MeshwardError {
  return new MeshwardError(
    "E_CA_DIR_LOCKED",
    `another process is changing the CA directory ${dir}: ${heldBy} holds its lock (${CA_DIR_LOCK}). Nothing was changed; run the command again when it has finished (a rotation takes a moment)`,
    { details: { dir, heldBy } },
  );
}
