import type { LeaderLock, Store } from "../store/store.ts";
import type { LoadedAnchors } from "./anchors.ts";

/** A store several CA replicas share (PostgreSQL): it notifies changes and elects a leader. */
export type ReplicatedStore = Store & Required<Pick<Store, "listen" | "leaderLock">>;

export function replicatedState(store: Store): ReplicatedStore | undefined {
  return typeof store.listen === "function" && typeof store.leaderLock === "function" ? (store as ReplicatedStore) : undefined;
}

export interface StoreStateWatcherOptions {
  readonly store: ReplicatedStore;
  readonly intervalMs: number;
  /** The state version the CA signs with now. */
  readonly version: () => number;
  readonly load: () => Promise<LoadedAnchors>;
  readonly onChange: (anchors: LoadedAnchors) => void;
  readonly onCrlChange: () => void;
  /** The changed state does not load (bad issuer, wrong passphrase, …): the old anchors stay. */
  readonly onRefused: (error: unknown) => void;
}

/**
 * The replica side of the shared CA state: a change is picked up at once on its NOTIFY, and by
 * polling the state version every `intervalMs` when a notification was lost (listener
 * connection down, PostgreSQL restarted). One check at a time.
 */
export async function watchStoreState(options: StoreStateWatcherOptions): Promise<{ check(): void; close(): void }> {
  let running: Promise<void> | undefined;
  let again = false;
  let closed = false;
  let refusedVersion: number | undefined;

  const checkOnce = async () => {
    const version = await options.store.caStateVersion();
    if (version === options.version() || version === refusedVersion) return;
    try {
      const anchors = await options.load();
      refusedVersion = undefined;
      if (!closed) options.onChange(anchors);
    } catch (error) {
      refusedVersion = version;
      options.onRefused(error);
    }
  };
  const check = () => {
    if (closed) return;
    if (running !== undefined) {
      again = true;
      return;
    }
    running = checkOnce()
      .catch(() => undefined) // store unreachable: the next poll tries again
      .finally(() => {
        running = undefined;
        if (again) {
          again = false;
          check();
        }
      });
  };
  const unlisten = await options.store
    .listen((channel) => {
      if (channel === "ca_state") check();
      else options.onCrlChange();
    })
    .catch(() => async () => undefined);
  // The CRL has its own poll (the CA's crlRefresh timer); this one is for the anchors.
  const timer = setInterval(check, options.intervalMs);
  timer.unref();
  return {
    check,
    close() {
      closed = true;
      clearInterval(timer);
      void unlisten();
    },
  };
}
