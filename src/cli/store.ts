import { caLayout } from "../ca/anchors.ts";
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
