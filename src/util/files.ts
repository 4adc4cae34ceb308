import { randomBytes } from "node:crypto";
import { closeSync, fchmodSync, fchownSync, fsyncSync, linkSync, lstatSync, openSync, readdirSync, realpathSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileReadError, MeshwardError } from "../errors.ts";

/**
 * Writes a file so that readers see either the old or the new content, never a mix: a temp
 * file in the same directory (created with the final mode, so a key is never briefly
 * world-readable), fsync, rename, fsync of the directory. With `owner`, the temp file is
 * chowned and set to exactly `mode` (whatever the umask) before the rename, so the file never
 * appears under its name with another owner or mode.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644, owner?: { uid: number; gid: number }): void {
  const dir = dirname(path);
  let temp: string | undefined;
  try {
    temp = writeTempFile(path, data, mode, owner);
    renameSync(temp, path);
    temp = undefined;
    syncDirectory(dir);
  } catch (error) {
    if (temp !== undefined) removeQuietly(temp);
    throw new MeshwardError("E_FILE_WRITE", `cannot write ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/** A new file beside `path` holding `data`, created with `mode`, fsynced; its name is returned. Removed again if anything fails. */
function writeTempFile(path: string, data: string | Uint8Array, mode: number, owner?: { uid: number; gid: number }): string {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(temp, "wx", mode);
    const bytes = typeof data === "string" ? Buffer.from(data) : data;
    let written = 0;
    while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
    if (owner !== undefined) {
      fchownSync(fd, owner.uid, owner.gid);
      fchmodSync(fd, mode);
    }
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    return temp;
  } catch (error) {
    if (fd !== undefined) closeSync(fd);
    removeQuietly(temp);
    throw error;
  }
}

function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // never created, or already renamed or removed
  }
}

export interface FileToWrite {
  readonly path: string;
  readonly data: string | Uint8Array;
  /** 0644 unless given (0600 for a key). */
  readonly mode?: number;
  /** chown, and exactly `mode` whatever the umask, before the rename (see writeFileAtomic). */
  readonly owner?: { readonly uid: number; readonly gid: number };
}

/**
 * Writes files that belong together (a key and its certificate) into one directory so that an
 * existing set is never broken: every new file is first written in full to a temp file beside
 * its name and fsynced, so a full disk or any other write error changes nothing; only then are
 * they renamed into place, in the order given (the file readers check last, e.g. the
 * certificate, goes last). Should a rename fail part-way, the files already renamed are put
 * back as they were (the old ones are kept as hard links until the last rename is done; a file
 * that did not exist is removed again). A crash between two renames can still leave a mix:
 * renames of two names are never one step. A name that no longer holds the file this run
 * renamed there (another writer replaced it meanwhile) is left alone: a rollback only ever
 * undoes this run's own renames. Throws E_FILE_WRITE naming the file and whether the
 * earlier files were put back. The one writer for a certificate, its key and its roots: the
 * identity file sink and `meshward cert issue` both use it. Once the set is in place, what an
 * earlier interrupted write of these names left beside them (its temp files and the hard links
 * to the files it replaced, possibly an old private key) is removed: their names are returned.
 */
export function writeFilesTogether(files: readonly FileToWrite[]): { readonly removedLeftovers: readonly string[] } {
  const temps: string[] = [];
  // Each temp file's inode: a rollback undoes a rename only while the name still holds the file
  // this run put there (review files LOW-4: another writer's file is never removed or replaced).
  const written: { dev: number; ino: number }[] = [];
  const backups: (string | undefined)[] = [];
  const cleanUp = () => {
    for (const temp of temps) removeQuietly(temp);
    for (const backup of backups) if (backup !== undefined) removeQuietly(backup);
  };
  let current = files[0]?.path ?? "";
  try {
    for (const file of files) {
      current = file.path;
      const temp = writeTempFile(file.path, file.data, file.mode ?? 0o644, file.owner);
      temps.push(temp);
      const stats = lstatSync(temp);
      written.push({ dev: stats.dev, ino: stats.ino });
    }
    // Every file renamed before the last may have to be put back: keep the old one under another name.
    for (const file of files.slice(0, -1)) {
      current = file.path;
      const backup = join(dirname(file.path), `.${basename(file.path)}.${randomBytes(6).toString("hex")}.prev`);
      try {
        linkSync(file.path, backup);
        backups.push(backup);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
        backups.push(undefined);
      }
    }
  } catch (error) {
    cleanUp();
    throw new MeshwardError("E_FILE_WRITE", `cannot write ${current}: ${(error as Error).message} (nothing in ${dirname(current)} was changed)`, { cause: error });
  }
  let renamed = 0;
  try {
    for (const [i, file] of files.entries()) {
      current = file.path;
      renameSync(temps[i] as string, file.path);
      renamed++;
    }
  } catch (error) {
    const notRestored: string[] = [];
    const othersLeft: string[] = [];
    for (let i = 0; i < renamed; i++) {
      const file = files[i] as FileToWrite;
      const backup = backups[i];
      try {
        const now = lstatSync(file.path, { throwIfNoEntry: false });
        if (now === undefined || now.dev !== written[i]?.dev || now.ino !== written[i]?.ino) {
          // Another writer replaced (or removed) it since: theirs, not this run's to undo.
          othersLeft.push(file.path);
          continue;
        }
        if (backup !== undefined) {
          renameSync(backup, file.path);
          backups[i] = undefined;
        } else {
          unlinkSync(file.path);
        }
      } catch {
        notRestored.push(file.path);
      }
    }
    temps.splice(0, renamed);
    cleanUp();
    syncDirectory(dirname(current));
    const state =
      notRestored.length > 0
        ? `${notRestored.join(", ")} could not be put back and hold the new content, which does not match the other files`
        : othersLeft.length > 0
          ? `${othersLeft.join(", ")} had been replaced by another writer meanwhile and were left as they are; ${renamed > othersLeft.length ? "the other files renamed before it were put back" : "nothing else had been renamed"}`
          : `the files renamed before it were put back, so ${dirname(current)} holds what it held before`;
    throw new MeshwardError("E_FILE_WRITE", `cannot write ${current}: ${(error as Error).message} (${state})`, { cause: error, details: { notRestored, othersLeft } });
  }
  temps.length = 0;
  cleanUp();
  syncDirectory(dirname(current));
  return { removedLeftovers: files.length === 0 ? [] : removeWriteLeftovers(dirname(current), files.map((file) => basename(file.path))) };
}

/**
 * Removes, from `dir`, what an interrupted writeFileAtomic/writeFilesTogether of one of `names`
 * left: `.<name>.<12 hex>.tmp` (a new file never renamed into place) and `.<name>.<12 hex>.prev`
 * (a hard link to the file it replaced, which may be a rotated-away private key). Only names of
 * exactly that pattern, regular files (no link is followed) owned by this user, never the live
 * files. Call it only where no other writer of these names can be half-way (under the lock the
 * writers take, or after the caller's own write): another's temp file would be taken from it.
 * Returns the paths removed; best effort (a file that cannot be removed is left).
 */
export function removeWriteLeftovers(dir: string, names: readonly string[]): string[] {
  const wanted = new Set(names);
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  const uid = process.getuid?.();
  const removed: string[] = [];
  for (const entry of entries) {
    const match = /^\.(.+)\.[0-9a-f]{12}\.(?:tmp|prev)$/.exec(entry);
    if (match === null || !wanted.has(match[1] as string) || wanted.has(entry)) continue;
    const path = join(dir, entry);
    try {
      const stats = lstatSync(path);
      if (!stats.isFile() || (uid !== undefined && stats.uid !== uid)) continue;
      unlinkSync(path);
      removed.push(path);
    } catch {
      // gone meanwhile, or not ours to remove
    }
  }
  if (removed.length > 0) syncDirectory(dir);
  return removed;
}

/** Renames `from` to `to` (one directory) and makes the rename durable (fsync of the directory). */
export function renameDurably(from: string, to: string): void {
  renameSync(from, to);
  syncDirectory(dirname(to));
}

/** Private keys and other secrets: 0600, atomically. */
export function writeSecretFileAtomic(path: string, data: string | Uint8Array): void {
  writeFileAtomic(path, data, 0o600);
}

function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, "r");
    fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Refuses a secret file that group or others can read or write, as ssh does for private
 * keys, with the command that fixes it. One exception, the shape of a Kubernetes Secret
 * volume with `fsGroup`: a file owned by another user (root), readable by a group this process
 * is in, and by no one else (mode 0440 or 0400) — the process cannot change it, and only the
 * pod's own group can read it.
 */
export function assertPrivateFile(path: string, what = "private key file"): void {
  let stats: { mode: number; uid: number; gid: number };
  try {
    stats = statSync(path);
  } catch (error) {
    throw fileReadError(`${what} ${path} cannot be read`, error);
  }
  const mode = stats.mode & 0o777;
  if ((mode & 0o077) === 0 || mountedSecretShape(stats)) return;
  throw new MeshwardError(
    "E_KEY_PERMISSIONS",
    `${what} ${path} is accessible by group or others (mode ${mode.toString(8).padStart(4, "0")}); ` +
      `it must be readable by its owner only. Fix it with: chmod 600 ${path}` +
      ` (a Kubernetes Secret volume: defaultMode 0440 with the pod's fsGroup)`,
    { details: { path, mode } },
  );
}

/**
 * Where platforms mount secrets for a container: Kubernetes (a projected service-account token,
 * a Secret volume; /var/run is /run) and Docker/Compose secrets. Their files are often 0644
 * (Kubernetes' default `defaultMode`), behind a directory and a container no other user shares,
 * and the process cannot chmod them (a read-only mount).
 */
const PLATFORM_SECRET_DIRS = ["/var/run/secrets/", "/run/secrets/"];

/**
 * Where `meshward inject` mounts the sidecar's projected service-account token (the volume
 * `meshward-token`, file `token`). The kubelet writes that file with the volume's defaultMode
 * (0644 by default), owned by root, unless the pod has an fsGroup (0640, group fsGroup) or all its
 * containers share one runAsUser (0600, owned by it): kubernetes pkg/volume/projected/projected.go
 * (collectData), pkg/volume/util FsUserFrom and atomic_writer, KEP-2451 "File Permission". A
 * stricter defaultMode (0400/0440) would leave a root-owned file the non-root sidecar (uid 10001)
 * cannot read. What keeps the token from the app instead: the injector mounts this volume into
 * the sidecar container only and refuses a pod whose other containers mount it
 * (src/inject/pod.ts), so no other process of the pod can open the file whatever its mode.
 */
export const INJECTED_TOKEN_DIR = "/var/run/secrets/meshward.io/token";
export const INJECTED_TOKEN_FILE = `${INJECTED_TOKEN_DIR}/token`;

/**
 * A join token (or JWT) file, checked before the token is read or sent (review newuser M4): a
 * file group or others can read lets another local user spend a single-use join token first,
 * or present the JWT, and get this workload's certificate. Held to the key files' rule
 * (E_KEY_PERMISSIONS with `chmod 600 FILE`, the Kubernetes Secret shape with fsGroup passes),
 * except for files under a platform's secret mount (/var/run/secrets, /run/secrets), which
 * are readable by default and cannot be changed by the process: there `warn` is called with
 * the message instead. A missing file passes (reading it reports that).
 */
export function checkTokenFile(path: string, warn: (message: string) => void): void {
  let stats: { mode: number; uid: number; gid: number };
  let real: string;
  try {
    stats = statSync(path);
    real = realpathSync(path);
  } catch {
    return;
  }
  const mode = stats.mode & 0o777;
  if ((mode & 0o077) === 0 || mountedSecretShape(stats)) return;
  if (isInjectedTokenFile(path, real, mode)) return;
  const problem = `token file ${path} is accessible by group or others (mode ${mode.toString(8).padStart(4, "0")}): another local user could read the token and use it first, getting this workload's certificate`;
  if (PLATFORM_SECRET_DIRS.some((dir) => real.startsWith(dir) || resolve(path).startsWith(dir))) {
    warn(
      `${problem}; accepted under a platform's secret mount (${dirname(path)}), where this is the default: ` +
        "on Kubernetes give the pod an fsGroup (the kubelet then writes a projected token 0640 with group fsGroup; a Secret volume also needs defaultMode 0440), " +
        "or run all its containers as one runAsUser (a projected token is then 0600, owned by it), to silence this",
    );
    return;
  }
  throw new MeshwardError("E_KEY_PERMISSIONS", `${problem}. It must be readable by its owner only; the token was not sent. Fix it with: chmod 600 ${path} (and write token files with umask 077)`, { details: { path, mode } });
}

/**
 * The token `meshward inject` mounts for the sidecar (INJECTED_TOKEN_FILE, named as the injector
 * names it; /var/run is /run), really inside that volume (the kubelet's ..data links resolve
 * within it; a link out of it does not count), and writable by its owner only: readable by
 * others only within the sidecar container, which nothing else in the pod mounts. A token a user
 * points at anywhere else keeps the rules above.
 */
function isInjectedTokenFile(path: string, real: string, mode: number): boolean {
  if ((mode & 0o022) !== 0) return false;
  const dirs = [INJECTED_TOKEN_DIR, INJECTED_TOKEN_DIR.replace(/^\/var\/run\//, "/run/")];
  const given = resolve(path);
  return dirs.some((dir) => given === `${dir}/token`) && dirs.some((dir) => real.startsWith(`${dir}/`));
}

/** Owned by someone else, readable only by its owner and by a group this process is in (no write, nothing for others). */
function mountedSecretShape(stats: { mode: number; uid: number; gid: number }): boolean {
  const mode = stats.mode & 0o777;
  if ((mode & 0o037) !== 0 || stats.uid === process.getuid?.()) return false;
  return stats.gid === process.getgid?.() || (process.getgroups?.() ?? []).includes(stats.gid);
}
