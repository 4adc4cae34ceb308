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
  // A file that changes under us more than this many times in a row (holders coming and going): refused as held.
  for (let attempt = 0; attempt < 3; attempt++) {
    const got = lockOnce(path);
    if (got !== "replaced") return got;
  }
  return "held";
}

/**
 * The standard lock-file pattern (review today3 LOW-1): our own descriptor is opened first and
 * kept open, and after BEGIN EXCLUSIVE the path must still name that descriptor's inode. As long
 * as `fd` is open its inode cannot be freed, so its number cannot be reused by a new file: if the
 * path named it when `fd` was opened and names it again after the lock, it named it throughout,
 * so SQLite (which opened the path in between) locked that inode — the file at `path`. Reading
 * the inode only after SQLite opened the path instead let a run whose holder let go in between
 * (unlinked the file, closed) take a lock on the unlinked file while a third run held the new
 * one. "replaced": the path changed meanwhile; the caller tries again.
 *
 * `fd` stays open until release, after SQLite's handle is closed: closing any descriptor of an
 * inode drops every fcntl lock this process holds on it, SQLite's included (see heldHere).
 */
function lockOnce(path: string): HeldFileLock | "held" | "not-a-lock" | "replaced" {
  const fd = openPrivate(path);
  let db: Database.Database;
  let key = "";
  try {
    key = inodeKey(fstatSync(fd));
    db = new Database(path, { timeout: 0 });
  } catch (error) {
    closeDescriptor(fd, key, false);
    throw error;
  }
  let open = true;
  let holding = false;
  const giveUp = () => {
    if (!open) return; // closing `fd` twice could close a descriptor since reused
    open = false;
    db.close();
    closeDescriptor(fd, key, holding);
  };
  try {
    // No -journal file beside it: nothing is ever written, and a killed holder leaves only the lock file.
    db.pragma("journal_mode = MEMORY");
    db.exec("BEGIN EXCLUSIVE");
    const now = statSync(path, { throwIfNoEntry: false });
    if (now === undefined || inodeKey(now) !== key) {
      giveUp();
      return "replaced";
    }
    holding = true;
    heldHere.set(key, []);
  } catch (error) {
    giveUp();
    const code = (error as { code?: unknown }).code;
    if (code === "SQLITE_BUSY") return "held";
    if (code === "SQLITE_NOTADB") return "not-a-lock";
    throw error;
  }
  return { release: giveUp };
}

/**
 * The files this process holds a lock on (by device and inode), each with the descriptors that
 * later attempts in this process opened on it. Closing any descriptor of an inode drops every
 * fcntl lock the process holds on it, so a second tryLockFile here, refused, must not close its
 * descriptor while the first holds the lock: it is closed with the lock's own.
 */
const heldHere = new Map<string, number[]>();
const inodeKey = (stats: { dev: number; ino: number }) => `${stats.dev}:${stats.ino}`;

function closeDescriptor(fd: number, key: string, wasHolding: boolean): void {
  if (wasHolding) {
    const later = heldHere.get(key) ?? [];
    heldHere.delete(key);
    closeSync(fd);
    for (const other of later) closeSync(other);
    return;
  }
  const holder = heldHere.get(key);
  if (holder !== undefined) holder.push(fd);
  else closeSync(fd);
}

/**
 * Creates `path` 0600 if absent and takes group and others' access from one that has it (a file
 * of another owner keeps its mode). Never through a symbolic link (O_NOFOLLOW: ELOOP): a link
 * planted there would have the mode of its target changed (review atrest MEDIUM-4).
 */
export function createPrivate(path: string): void {
  closeSync(openPrivate(path));
}

/** createPrivate, returning the open descriptor (O_RDWR). */
function openPrivate(path: string): number {
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  try {
    if ((fstatSync(fd).mode & 0o077) !== 0) fchmodSync(fd, 0o600);
  } catch {
    // not our file: its owner decides its mode
  }
  return fd;
}
