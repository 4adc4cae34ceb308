import { randomBytes } from "node:crypto";
import { closeSync, fchmodSync, fchownSync, fsyncSync, openSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { MeshwardError } from "../errors.ts";

/**
 * Writes a file so that readers see either the old or the new content, never a mix: a temp
 * file in the same directory (created with the final mode, so a key is never briefly
 * world-readable), fsync, rename, fsync of the directory. With `owner`, the temp file is
 * chowned and set to exactly `mode` (whatever the umask) before the rename, so the file never
 * appears under its name with another owner or mode.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644, owner?: { uid: number; gid: number }): void {
  writeFileSetAtomic([{ path, data, mode, ...(owner !== undefined ? { owner } : {}) }]);
}

/** One file of writeFileSetAtomic. */
export interface FileSetEntry {
  readonly path: string;
  readonly data: string | Uint8Array;
  /** Default 0644; 0600 for a private key. */
  readonly mode?: number;
  /** chown, and exactly `mode` whatever the umask, before the rename (see writeFileAtomic). */
  readonly owner?: { readonly uid: number; readonly gid: number };
}

/**
 * Writes files that only make sense together (a certificate and its private key, and the roots
 * it chains to) so that a failure leaves the old set: every temp file is written first (each
 * created with its final mode, so a key is never briefly readable by others, and fsynced), then
 * they are renamed into place back to back in the order given, then each directory is fsynced
 * once. A failure while writing any temp file (ENOSPC, EDQUOT, EFBIG, EIO, a crash) removes the
 * temp files and leaves every old file in place and matching. Only rename(2) itself failing
 * between two renames (the directory removed under it) can leave a mix, and the error says which
 * files were replaced. The one pair writer for cert/key outputs: the identity file sink uses it,
 * and `meshward cert issue` can too.
 */
export function writeFileSetAtomic(entries: readonly FileSetEntry[]): void {
  const temps: { readonly path: string; readonly temp: string }[] = [];
  try {
    for (const entry of entries) temps.push({ path: entry.path, temp: writeTemp(entry) });
  } catch (error) {
    for (const { temp } of temps) removeQuietly(temp);
    throw error;
  }
  const renamed: string[] = [];
  for (const [i, { path, temp }] of temps.entries()) {
    try {
      renameSync(temp, path);
      renamed.push(path);
    } catch (error) {
      for (const rest of temps.slice(i)) removeQuietly(rest.temp);
      const done = renamed.length > 0 ? ` (already replaced: ${renamed.join(", ")})` : "";
      throw new MeshwardError("E_FILE_WRITE", `cannot write ${path}: ${(error as Error).message}${done}`, { cause: error });
    }
  }
  for (const dir of new Set(entries.map((entry) => dirname(entry.path)))) syncDirectory(dir);
}

/** Writes `entry` to a new temp file beside it (final mode and owner, fsynced) and returns the temp file's path. */
function writeTemp(entry: FileSetEntry): string {
  const { path, data, owner } = entry;
  const mode = entry.mode ?? 0o644;
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
    throw new MeshwardError("E_FILE_WRITE", `cannot write ${path}: ${(error as Error).message}`, { cause: error });
  }
}

function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // never created, or already renamed
  }
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
    throw new MeshwardError("E_FILE_MISSING", `${what} ${path} cannot be read: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {
      cause: error,
    });
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

/** Owned by someone else, readable only by its owner and by a group this process is in (no write, nothing for others). */
function mountedSecretShape(stats: { mode: number; uid: number; gid: number }): boolean {
  const mode = stats.mode & 0o777;
  if ((mode & 0o037) !== 0 || stats.uid === process.getuid?.()) return false;
  return stats.gid === process.getgid?.() || (process.getgroups?.() ?? []).includes(stats.gid);
}
