import { randomBytes } from "node:crypto";
import { accessSync, constants, lstatSync, mkdirSync, realpathSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { describeError, MeshwardError } from "../errors.ts";
import { assertGivenPathSafe, assertNoOtherRenamer, assertNoOtherWriter } from "../util/dir-safety.ts";

/*
 * Checks of local paths, run before anything is sent to the CA: a local mistake must never
 * spend a single-use join token, and is reported as a MeshwardError, never a stack trace
 * (issue 15, item 4).
 */

/**
 * The directory an identity is written to: missing directories are created with `mode` (0700 by
 * default; parents included), and it must be writable by this user and by no one else (see
 * `assertOwnDirectory`). Returns its real path (links resolved), where the files are written. A caller that hands the files to another
 * user (file owner options) passes a mode that user can traverse, and that user's uid as
 * `filesOwner`: a directory of theirs is accepted, since they own the files anyway.
 */
export function prepareOutDir(dir: string, flag = "--out", mode = 0o700, filesOwner?: number): string {
  const path = resolve(dir);
  try {
    mkdirSync(path, { recursive: true, mode });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // mkdir -p meets a file where the directory (or one of its parents) should be.
    if (code === "EEXIST" || code === "ENOTDIR") throw new MeshwardError("E_OUT_DIR", `${flag} ${dir}: not a directory (a file is there, or in its path): choose a directory`);
    throw new MeshwardError("E_OUT_DIR", `${flag} ${dir}: cannot create the directory (${errno(error)}); create it, writable by this user, or choose another`);
  }
  if (!statSync(path).isDirectory()) throw new MeshwardError("E_OUT_DIR", `${flag} ${dir}: not a directory`);
  try {
    accessSync(path, constants.W_OK | constants.X_OK);
  } catch (error) {
    throw new MeshwardError("E_OUT_DIR", `${flag} ${dir}: not writable by this user (${errno(error)})`);
  }
  const real = assertOwnDirectory(path, `${flag} ${dir}`, filesOwner);
  assertWritableHere(real, `${flag} ${dir}`);
  return real;
}

/**
 * The mode an identity directory is created with: 0700, or 0755 when its files are given to
 * another user (`identity --owner`, the file sink's `owner`), who must be able to reach them (the
 * key stays 0600, theirs). One rule for `meshward identity` and the file sink.
 */
export function outDirMode(filesOwner?: number): number {
  return filesOwner === undefined ? 0o700 : 0o755;
}

/** The files an identity is written as (file-sink.ts, `meshward cert issue`). */
const IDENTITY_FILES = ["cert.pem", "key.pem", "bundle.pem"] as const;

/**
 * What only writing shows, found before the CA is asked: no identity file's name may be taken by
 * a directory (a file is written by renaming over its name, which a directory stops), and a file
 * can be created and removed there (a read-only or full file system).
 */
function assertWritableHere(dir: string, what: string): void {
  for (const name of IDENTITY_FILES) {
    let stats;
    try {
      stats = lstatSync(join(dir, name));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new MeshwardError("E_OUT_DIR", `${what}: cannot examine ${name} (${errno(error)})`);
    }
    // A rename replaces any other kind of file (a FIFO planted there included), not a directory.
    if (stats.isDirectory()) throw new MeshwardError("E_OUT_DIR", `${what}: ${name} there is a directory, where the file goes: remove it, or choose another directory`);
  }
  // One probe per identity file and for `cert issue`'s lock and holder files, all at once: the three are
  // written side by side before any is renamed into place, so room (and inodes) for one is not enough.
  const probes = [...IDENTITY_FILES, OUT_DIR_LOCK, OUT_DIR_LOCK_HOLDER].map(() => join(dir, `.meshward-probe-${process.pid}-${randomBytes(4).toString("hex")}`));
  try {
    for (const probe of probes) writeFileSync(probe, "x".repeat(4096), { mode: 0o600, flag: "wx" });
  } catch (error) {
    throw new MeshwardError("E_OUT_DIR", `${what}: cannot write a file there (${errno(error)})`);
  } finally {
    for (const probe of probes) rmSync(probe, { force: true });
  }
}

/**
 * The lock `meshward cert issue` holds in its `--out` directory while it runs (src/cli/out-dir-lock.ts),
 * and the file naming its holder. Here for the write probes (assertWritableHere).
 */
export const OUT_DIR_LOCK = ".meshward-cert-issue.flock";
export const OUT_DIR_LOCK_HOLDER = `${OUT_DIR_LOCK}.holder`;
/** The pid lock file meshward before 2026-12 used (read only: a live older run is still respected). */
export const OUT_DIR_PID_LOCK = ".meshward-cert-issue.lock";

/**
 * Refuses a directory that someone other than this user (or root, or `filesOwner`, who gets
 * the files anyway) can write into: that person could replace the files a server loads — a
 * trust bundle of theirs lets them in as any identity — or plant a certificate and key that a
 * restart renews (resume), so the workload would run as another identity. A sticky bit does not
 * help (a file planted first stays). OpenSSH's StrictModes refuses such directories for the
 * same reason. A symlink is judged by the directory it leads to, and that directory's parents
 * too (`assertNoOtherRenamer`): the owner of a parent could swap the directory for a link, and
 * the next rotation would write the key where they like, chowned to `filesOwner`. The path as
 * given is checked first (`assertGivenPathSafe`): a link on it must be this user's or root's,
 * and nobody else may rename it — another user's link in /tmp is refused, not followed (review
 * files MEDIUM-2). Returns the real path, which the files are written under from then on.
 */
export function assertOwnDirectory(path: string, what: string, filesOwner?: number): string {
  assertGivenPathSafe(path, what, "E_OUT_DIR_UNSAFE", OUT_DIR_RISK);
  assertNoOtherWriter(path, what, "E_OUT_DIR_UNSAFE", "replace the trust bundle, certificate or key written there, or plant a certificate this process would renew at its next start", "created 0700", filesOwner, false, { name: "meshward-out", mode: "700" });
  const real = realpathSync(path);
  assertNoOtherRenamer(real, what, "E_OUT_DIR_UNSAFE", OUT_DIR_RISK);
  return real;
}

const OUT_DIR_RISK = "have the key, certificate and bundle written there (and given to the files' owner) and read or replace them";
const SOCKET_DIR_RISK = "bind its own socket there and hand workloads another SVID and trust bundle";

/**
 * The directory of a unix socket must exist, be writable, and be writable by no one else
 * (owned by this user or root, no group/other write bit, sticky or not): whoever can write there
 * can rename the socket away, or bind while this process restarts, and serve workloads their own
 * SVID and trust bundle; the same holds for its parents (`assertNoOtherRenamer`). It is not
 * created: who may reach the socket is decided by that directory's owner and mode, which the
 * operator chooses. Returns the socket's path in the directory's real path, where it is bound.
 */
export function checkSocketDir(socketPath: string, flag: string): string {
  const dir = dirname(resolve(socketPath));
  let isDirectory: boolean;
  try {
    isDirectory = statSync(dir).isDirectory();
  } catch (error) {
    throw new MeshwardError("E_SOCKET_DIR", `${flag} ${socketPath}: the directory ${dir} does not exist (${errno(error)}); create it with the owner and mode that decide who may connect, e.g. install -d -m 0755 ${dir}`);
  }
  if (!isDirectory) throw new MeshwardError("E_SOCKET_DIR", `${flag} ${socketPath}: ${dir} is not a directory`);
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (error) {
    throw new MeshwardError("E_SOCKET_DIR", `${flag} ${socketPath}: the directory ${dir} is not writable by this user (${errno(error)})`);
  }
  assertGivenPathSafe(dir, `${flag} ${socketPath}`, "E_SOCKET_DIR_UNSAFE", SOCKET_DIR_RISK);
  assertNoOtherWriter(dir, `${flag} ${socketPath}`, "E_SOCKET_DIR_UNSAFE", "bind its own socket there and hand workloads another SVID and trust bundle", "owned by you, mode 0755 so that workloads can connect", undefined, false, { name: "meshward-sock", mode: "755" });
  const real = realpathSync(dir);
  assertNoOtherRenamer(real, `${flag} ${socketPath}`, "E_SOCKET_DIR_UNSAFE", SOCKET_DIR_RISK);
  return join(real, basename(socketPath));
}

function errno(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? describeError(error);
}
