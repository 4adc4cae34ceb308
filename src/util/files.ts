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
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
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
    renameSync(temp, path);
    syncDirectory(dir);
  } catch (error) {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(temp);
    } catch {
      // the temp file was never created or is already renamed
    }
    throw new MeshwardError("E_FILE_WRITE", `cannot write ${path}: ${(error as Error).message}`, { cause: error });
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
