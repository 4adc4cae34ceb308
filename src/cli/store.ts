import { directoryFiles, storeStateFiles, transactCaState, type AnchorFiles } from "../ca/anchor-files.ts";
import { caLayout } from "../ca/anchors.ts";
import { replicatedState } from "../ca/state-watcher.ts";
import { openStore } from "../store/index.ts";
import type { Store } from "../store/store.ts";

/** The store a CA directory uses: --store when given, else <dir>/ca.db. */
export async function openCaStore(dir: string, url: string | undefined): Promise<Store> {
  const store = openStore(url ?? `sqlite:${caLayout(dir).database}`);
  await store.migrate();
  return store;
}

export async function withCaStore<T>(dir: string, url: string | undefined, fn: (store: Store) => Promise<T>): Promise<T> {
  const store = await openCaStore(dir, url);
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
  if (url === undefined) return fn(directoryFiles, undefined);
  return withCaStore(dir, url, async (store) => {
    if (replicatedState(store) === undefined) return fn(directoryFiles, store);
    if (!write) return fn(await storeStateFiles(store, dir), store);
    return transactCaState(store, dir, (files) => fn(files, store));
  });
}
