import { closeSync, constants, fchmodSync, fstatSync, openSync, statSync } from "node:fs";
import Database from "better-sqlite3";

/** A lock this process holds on a file until release() or its exit, even by SIGKILL. */
export interface HeldFileLock {
  release(): void;
}

/**
 * Takes an exclusive SQLite lock (BEGIN EXCLUSIVE, never committed: an fcntl lock the operating
 * system holds for the process) on `path`, created 0600 if absent. No pid in the file and no
 * liveness guess: a process that dies, however, loses the lock at once, which a pid check cannot
 * tell across the PID namespaces of pods sharing a volume. "held": another process holds it.
 * "not-a-lock": the file holds something else (a claim file an older meshward wrote).
 */
export function tryLockFile(path: string): HeldFileLock | "held" | "not-a-lock" {
  createPrivate(path);
  const db = new Database(path, { timeout: 0 });
  try {
    const inode = statSync(path).ino;
    // No -journal file beside it: nothing is ever written, and a killed holder leaves only the lock file.
    db.pragma("journal_mode = MEMORY");
    db.exec("BEGIN EXCLUSIVE");
    // Locked an inode that was unlinked or replaced meanwhile (its holder finishing): not the
    // file at `path`, so not the lock.
    if (statSync(path, { throwIfNoEntry: false })?.ino !== inode) {
      db.close();
      return "held";
    }
  } catch (error) {
    db.close();
    const code = (error as { code?: unknown }).code;
    if (code === "SQLITE_BUSY") return "held";
    if (code === "SQLITE_NOTADB") return "not-a-lock";
    throw error;
  }
  return { release: () => db.close() };
}

/**
 * Creates `path` 0600 if absent and takes group and others' access from one that has it (a file
 * of another owner keeps its mode). Never through a symbolic link (O_NOFOLLOW: ELOOP): a link
 * planted there would have the mode of its target changed (review atrest MEDIUM-4).
 */
export function createPrivate(path: string): void {
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  try {
    if ((fstatSync(fd).mode & 0o077) !== 0) fchmodSync(fd, 0o600);
  } catch {
    // not our file: its owner decides its mode
  } finally {
    closeSync(fd);
  }
}
