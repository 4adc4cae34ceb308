import { directoryFiles, storeStateFiles, transactCaState, type AnchorFiles } from "../ca/anchor-files.ts";
import { caLayout } from "../ca/anchors.ts";
import { withCaDirLock } from "../ca/dir-lock.ts";
import { replicatedState } from "../ca/state-watcher.ts";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { MeshwardError } from "../errors.ts";
import { openStore, parseStoreUrl } from "../store/index.ts";
import type { Store } from "../store/store.ts";

/**
 * The store a CA directory uses: --store when given, else <dir>/ca.db. A SQLite file named by
 * --store must exist (unless `create`, for `ca migrate-store --to`): a mistyped path would
 * otherwise become a new empty store, and `token create` would print a token the CA has never
 * heard of (E_TOKEN_UNKNOWN at first use), `cert list` "no certificates issued yet". The
 * default <dir>/ca.db is created as before, also when --store names it (a CA that has not
 * served yet has none).
 */
export async function openCaStore(dir: string, url: string | undefined, options: { readonly create?: boolean } = {}): Promise<Store> {
  if (url !== undefined && options.create !== true) {
    const location = parseStoreUrl(url);
    const isDefault = location.kind === "sqlite" && resolve(location.path) === resolve(caLayout(dir).database);
    if (location.kind === "sqlite" && location.path !== ":memory:" && !isDefault && !existsSync(location.path)) {
      throw new MeshwardError(
        "E_STORE_OPEN",
        `--store ${url}: no store at ${location.path} (a mistyped path? 'meshward ca serve' creates the store it is given; this CA's default is sqlite:${caLayout(dir).database})`,
        { details: { path: location.path } },
      );
    }
  }
  // A SQLite file is checked as the CA directory is (E_STORE_UNSAFE), its parents too when it is elsewhere.
  const store = await openStore(url ?? `sqlite:${caLayout(dir).database}`, { caDirectory: dir });
  await store.migrate();
  return store;
}

export async function withCaStore<T>(dir: string, url: string | undefined, fn: (store: Store) => Promise<T>, options: { readonly create?: boolean } = {}): Promise<T> {
  const store = await openCaStore(dir, url, options);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/**
 * Runs an admin step on the CA's files: the directory, or (when --store names a store shared by
 * replicas, PostgreSQL) the store's CA state, committed in one compare-and-swap that the running
 * replicas pick up. `write: false` only reads (status).
 */
export async function withCaFiles<T>(dir: string, url: string | undefined, fn: (files: AnchorFiles, store: Store | undefined) => Promise<T>, write = true): Promise<T> {
  // A step that changes the directory holds its lock (dir-lock.ts): never two writers at once,
  // and what an interrupted one left is put in order first.
  const inDirectory = (run: () => Promise<T>) => (write ? withCaDirLock(dir, commandName(), run, (line) => process.stderr.write(`meshward: ${line}\n`)) : run());
  if (url === undefined) return inDirectory(() => fn(directoryFiles, undefined));
  return withCaStore(dir, url, async (store) => {
    if (replicatedState(store) === undefined) return inDirectory(() => fn(directoryFiles, store));
    if (!write) return fn(await storeStateFiles(store, dir), store);
    return transactCaState(store, dir, (files) => fn(files, store));
  });
}

/** The command running, as another one refused the lock is told (no flag values: only the words before the first flag). */
function commandName(): string {
  const words: string[] = [];
  for (const arg of process.argv.slice(2)) {
    if (arg.startsWith("-") || words.length === 3) break;
    words.push(arg);
  }
  return `'meshward ${words.join(" ")}'`;
}
