import pg from "pg";
import { RenegotiationRefusingClient } from "./postgres-client.ts";
import type { LeaderLock } from "./store.ts";

/**
 * What several CA replicas on one PostgreSQL share beyond tables: change notifications
 * (LISTEN/NOTIFY) and one leader (a session-level advisory lock). Each holds its own
 * connection, outside the pool: a LISTEN and a session lock live exactly as long as it.
 */

/** Notification channels, sent in the transaction that makes the change (delivered on commit). */
export const CHANNELS = { ca_state: "meshward_ca_state", crl: "meshward_crl" } as const;

/** Arbitrary constant ("mwld"): the advisory lock whose holder is the leader replica. */
export const LEADER_LOCK_KEY = 0x6d776c64;

const RECONNECT_MS = 1_000;

/**
 * Listens on both channels; reconnects after a broken connection (calling onChange once then,
 * since notifications sent meanwhile were lost). Polling by the caller stays the fallback.
 */
export async function listenForChanges(config: pg.ClientConfig, onChange: (channel: "ca_state" | "crl") => void): Promise<() => Promise<void>> {
  let client: pg.Client | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const byChannel = new Map<string, "ca_state" | "crl">(Object.entries(CHANNELS).map(([k, v]) => [v, k as "ca_state" | "crl"]));

  const connect = async (): Promise<void> => {
    const next = new RenegotiationRefusingClient({ ...config, application_name: "meshward-ca-listen" });
    next.on("error", () => undefined);
    next.on("notification", (message) => {
      const channel = byChannel.get(message.channel);
      if (channel !== undefined) onChange(channel);
    });
    next.on("end", () => {
      if (stopped || client !== next) return;
      client = undefined;
      schedule();
    });
    await next.connect();
    for (const channel of Object.values(CHANNELS)) await next.query(`LISTEN ${channel}`);
    client = next;
  };
  const schedule = () => {
    timer = setTimeout(() => {
      connect().then(
        () => {
          onChange("ca_state");
          onChange("crl");
        },
        () => {
          if (!stopped) schedule();
        },
      );
    }, RECONNECT_MS);
    timer.unref();
  };
  try {
    await connect();
  } catch {
    schedule();
  }
  return async () => {
    stopped = true;
    clearTimeout(timer);
    const current = client;
    client = undefined;
    await current?.end().catch(() => undefined);
  };
}

/** A session-level advisory lock on a dedicated connection: released by PostgreSQL when the holder dies. */
export function advisoryLeaderLock(config: pg.ClientConfig, key = LEADER_LOCK_KEY): LeaderLock {
  let client: pg.Client | undefined;
  let held = false;
  let closed = false;
  const drop = () => {
    held = false;
    const current = client;
    client = undefined;
    void current?.end().catch(() => undefined);
  };
  return {
    get held() {
      return held;
    },
    async tryAcquire(): Promise<boolean> {
      if (closed) return false;
      try {
        if (client === undefined) {
          const next = new RenegotiationRefusingClient({ ...config, application_name: "meshward-ca-leader" });
          next.on("error", () => {
            if (client === next) drop();
          });
          next.on("end", () => {
            if (client === next) {
              held = false;
              client = undefined;
            }
          });
          await next.connect();
          client = next;
        }
        if (held) {
          // Still ours? A cheap round trip proves the session (and so the lock) is alive.
          await client.query("SELECT 1");
          return held;
        }
        const result = await client.query<{ locked: boolean }>("SELECT pg_try_advisory_lock($1) AS locked", [key]);
        held = result.rows[0]?.locked === true;
        return held;
      } catch {
        drop();
        return false;
      }
    },
    async release(): Promise<void> {
      closed = true;
      const current = client;
      client = undefined;
      held = false;
      if (current !== undefined) {
        await current.query("SELECT pg_advisory_unlock_all()").catch(() => undefined);
        await current.end().catch(() => undefined);
      }
    },
  };
}
