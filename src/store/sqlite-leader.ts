import { statSync } from "node:fs";
import Database from "better-sqlite3";
import { MeshwardError } from "../errors.ts";
import { createPrivate } from "./file-lock.ts";
import type { LeaderLock } from "./store.ts";

/**
 * The leader lock of CA processes sharing one SQLite store (several `ca serve` on one CA
 * directory): an exclusive SQLite lock on a file beside the database (`ca.db-leader`), taken with
 * BEGIN EXCLUSIVE and never committed. It is an fcntl lock held by the operating system for the
 * process, like PostgreSQL's session advisory lock for the session: no clock and no lease, so a
 * leader that stalls keeps it (no second leader meanwhile) and a leader that dies, even by
 * SIGKILL, loses it at once. SQLite also keeps connections of one process apart, so two
 * stores of one process exclude each other too.
 */
export function sqliteLeaderLock(databasePath: string): LeaderLock {
  const path = `${databasePath}-leader`;
  let db: Database.Database | undefined;
  let inode: number | undefined;
  let held = false;
  let closed = false;
  const drop = () => {
    held = false;
    inode = undefined;
    const current = db;
    db = undefined;
    try {
      current?.close();
    } catch {
      // already closed
    }
  };
  const open = (): Database.Database => {
    createPrivate(path);
    // timeout 0: a lock held elsewhere answers SQLITE_BUSY at once (this is polled).
    const next = new Database(path, { timeout: 0 });
    next.pragma("journal_mode = DELETE");
    next.pragma("temp_store = MEMORY"); // as every connection of the store (sqlite.ts): no temp files
    inode = statSync(path).ino;
    return next;
  };
  return {
    get held() {
      return held;
    },
    async tryAcquire(): Promise<boolean> {
      if (closed) return false;
      try {
        if (held) {
          // The lock is on the file we opened: one removed or replaced by another file (someone
          // cleaning the directory) would let another process lock the new one, so give it up.
          let current: number | undefined;
          try {
            current = statSync(path).ino;
          } catch {
            current = undefined;
          }
          if (current === inode) return true;
          drop();
          return false;
        }
        db ??= open();
        db.exec("BEGIN EXCLUSIVE");
        held = true;
        return true;
      } catch (error) {
        if ((error as { code?: unknown }).code !== "SQLITE_BUSY") drop();
        return false;
      }
    },
    async release(): Promise<void> {
      closed = true;
      drop();
    },
  };
}

/** Opens the lock file at construction time so that an unwritable directory is said at start. */
export function assertLockFileUsable(databasePath: string): void {
  try {
    createPrivate(`${databasePath}-leader`);
  } catch (error) {
    throw new MeshwardError("E_STORE_OPEN", `cannot create the CA's leader lock file ${databasePath}-leader: ${(error as Error).message}; the directory of the store must be writable`, { cause: error });
  }
}
