import { existsSync, readFileSync, rmSync } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import { MeshwardError } from "../errors.ts";
import type { CaFilesSnapshot, Store } from "../store/store.ts";
import { assertPrivateFile, writeFileAtomic, writeSecretFileAtomic } from "../util/files.ts";
import { switchPair } from "./pair-switch.ts";

/**
 * Where the files of a CA directory are read and written. `directoryFiles` is the directory
 * itself (one CA process, SQLite). With several replicas (issue 17) the directory is a
 * read-only copy of what `ca init` made, and every file a rotation changes lives in the store:
 * `StoreOverlayFiles` reads the store's version of a file first and the directory's otherwise,
 * and collects writes, which `transactCaState` commits to the store in one compare-and-swap.
 */
export interface AnchorFiles {
  /** The file's text; throws E_CA_CORRUPT naming it when it does not exist. */
  read(path: string): string;
  exists(path: string): boolean;
  write(path: string, content: string, options: { secret: boolean }): void;
  /**
   * Replaces a key and its certificate as one unit: a reader, or a CA restarted after a crash at
   * any point, finds the old pair or the new one, never one's key beside the other's certificate.
   * `also` (not secret) is replaced in the same unit: it is in place whenever the new key is.
   */
  writePair(key: { path: string; content: string }, cert: { path: string; content: string }, also?: { path: string; content: string }): void;
  remove(path: string): void;
  /** Key files must not be readable by others (directory files only: the store holds keys encrypted). */
  assertPrivate(path: string, what: string): void;
  /** Grows with each change (store version), for the SPIFFE bundle's sequence; undefined for directories. */
  readonly version: number | undefined;
}

/**
 * A file of the CA directory, read: one that is missing (or not a file) is E_CA_CORRUPT naming it,
 * one that cannot be read is E_CA_UNREADABLE, never a bare ENOENT with a stack trace.
 */
export function readCaFile(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "EISDIR" || code === "ENOTDIR") {
      throw new MeshwardError(
        "E_CA_CORRUPT",
        `${path} ${code === "EISDIR" ? "is a directory, not a file" : "is missing"}: the CA directory is incomplete. Restore ${basename(path)} (or the whole CA directory) from your backup`,
        { details: { path, cause: code } },
      );
    }
    throw new MeshwardError(
      "E_CA_UNREADABLE",
      `cannot read ${path} (${code ?? (error as Error).message}): run meshward as the user that owns the CA directory, or fix the file's owner and mode`,
      { details: { path, ...(code !== undefined ? { cause: code } : {}) } },
    );
  }
}

export const directoryFiles: AnchorFiles = {
  read: (path) => readCaFile(path),
  exists: (path) => existsSync(path),
  write: (path, content, { secret }) => (secret ? writeSecretFileAtomic(path, content) : writeFileAtomic(path, content)),
  writePair: (key, cert, also) => switchPair(key.path, key.content, cert.path, cert.content, also),
  remove: (path) => rmSync(path, { force: true }),
  assertPrivate: (path, what) => assertPrivateFile(path, what),
  version: undefined,
};

/** Files whose name this holds are stored; only files of the CA directory itself (no subdirectories). */
export class StoreOverlayFiles implements AnchorFiles {
  readonly #dir: string;
  readonly #stored: ReadonlyMap<string, string | null>;
  readonly changes = new Map<string, string | null>();
  readonly version: number;

  constructor(dir: string, snapshot: CaFilesSnapshot) {
    this.#dir = resolve(dir);
    this.#stored = snapshot.files;
    this.version = snapshot.version;
  }

  #name(path: string): string {
    if (resolve(dirname(path)) !== this.#dir) throw new MeshwardError("E_INTERNAL", `${path} is not a file of the CA directory ${this.#dir}`);
    return basename(path);
  }

  #lookup(path: string): { found: true; content: string | null } | { found: false } {
    const name = this.#name(path);
    if (this.changes.has(name)) return { found: true, content: this.changes.get(name)! };
    if (this.#stored.has(name)) return { found: true, content: this.#stored.get(name)! };
    return { found: false };
  }

  read(path: string): string {
    const held = this.#lookup(path);
    if (held.found) {
      if (held.content === null) throw new MeshwardError("E_CA_CORRUPT", `${basename(path)} was removed from the CA state in the store`);
      return held.content;
    }
    return readCaFile(path);
  }

  exists(path: string): boolean {
    const held = this.#lookup(path);
    return held.found ? held.content !== null : existsSync(path);
  }

  write(path: string, content: string, { secret }: { secret: boolean }): void {
    if (secret && !/-----BEGIN ENCRYPTED PRIVATE KEY-----/.test(content)) {
      throw new MeshwardError(
        "E_KEY_PASSPHRASE_REQUIRED",
        "keys kept in the shared store are encrypted with the CA passphrase: give it with --passphrase-file or MESHWARD_CA_PASSPHRASE (the same one on every replica)",
      );
    }
    this.changes.set(this.#name(path), content);
  }

  /** The changes are committed to the store together, in one compare-and-swap. */
  writePair(key: { path: string; content: string }, cert: { path: string; content: string }, also?: { path: string; content: string }): void {
    this.write(key.path, key.content, { secret: true });
    this.write(cert.path, cert.content, { secret: false });
    if (also !== undefined) this.write(also.path, also.content, { secret: false });
  }

  remove(path: string): void {
    const name = this.#name(path);
    if (this.exists(path) || this.#stored.has(name)) this.changes.set(name, null);
  }

  assertPrivate(path: string, what: string): void {
    if (!this.#lookup(path).found) assertPrivateFile(path, what);
  }
}

/** The CA state as the store holds it, over the directory (for loading anchors on a replica). */
export async function storeStateFiles(store: Store, dir: string): Promise<StoreOverlayFiles> {
  return new StoreOverlayFiles(dir, await store.readCaFiles());
}

/**
 * Runs a rotation step against the shared state and commits what it wrote in one
 * compare-and-swap; refused with E_STORE_CONFLICT (nothing written) when another admin or
 * leader changed the state meanwhile.
 */
export async function transactCaState<T>(store: Store, dir: string, step: (files: AnchorFiles) => Promise<T>): Promise<T> {
  const files = await storeStateFiles(store, dir);
  const result = await step(files);
  if (files.changes.size === 0) return result;
  const version = await store.writeCaFiles(files.version, files.changes);
  if (version === undefined) {
    throw new MeshwardError("E_STORE_CONFLICT", "the CA state in the store changed while this step ran (another replica or admin rotated); nothing was written: run it again");
  }
  return result;
}
