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

/** How long the leader's session may stay silent before PostgreSQL ends it (and releases the lock). */
export const DEFAULT_LEADER_SESSION_TIMEOUT_MS = 15_000;

export interface LeaderLockOptions {
  /**
   * The leader's lock lives as long as its session, and PostgreSQL ends a session only when it
   * notices the client gone. A holder that is alive but silent (partitioned from the server
   * without the connection being closed, or frozen: SIGSTOP, a paused VM) would otherwise keep
   * the lock for hours (tcp_keepalives_idle defaults to 2 h) or for ever (a frozen host's kernel
   * still answers keepalives). The lock connection asks the server to end the session after this
   * long without a statement (idle_session_timeout, PostgreSQL 14+; a live holder queries every
   * poll, well within it) or without an acknowledgement of what it sent (tcp_user_timeout and
   * keepalives, PostgreSQL 12+ for tcp_user_timeout). Another replica then takes the lock.
   */
  readonly sessionTimeoutMs?: number;
}

/**
 * The settings the lock's session runs with (see LeaderLockOptions), as server-side GUCs: only
 * those the server knows are set, so an older PostgreSQL gets what it supports.
 */
export function leaderSessionSettings(timeoutMs: number): [string, string][] {
  const seconds = Math.max(1, Math.floor(timeoutMs / 1000));
  return [
    ["idle_session_timeout", String(timeoutMs)],
    ["idle_in_transaction_session_timeout", String(timeoutMs)],
    ["tcp_user_timeout", String(timeoutMs)],
    // Probes after a third of the timeout idle, then every sixth, three of them: a dead peer is
    // noticed by the keepalives within about the timeout too.
    ["tcp_keepalives_idle", String(Math.max(1, Math.floor(seconds / 3)))],
    ["tcp_keepalives_interval", String(Math.max(1, Math.floor(seconds / 6)))],
    ["tcp_keepalives_count", "3"],
  ];
}

const SET_SESSION_SETTINGS = `SELECT set_config(v.name, v.value, false) FROM unnest($1::text[], $2::text[]) AS v(name, value)
  WHERE v.name IN (SELECT name FROM pg_settings)`;

/**
 * A session-level advisory lock on a dedicated connection: released by PostgreSQL when the
 * holder dies, and when it stays silent for `sessionTimeoutMs` (frozen, partitioned).
 */
export function advisoryLeaderLock(config: pg.ClientConfig, key = LEADER_LOCK_KEY, options: LeaderLockOptions = {}): LeaderLock {
  const timeoutMs = options.sessionTimeoutMs ?? DEFAULT_LEADER_SESSION_TIMEOUT_MS;
  const settings = leaderSessionSettings(timeoutMs);
  // The holder's own check gives up well before the server ends its session: a leader cut off
  // from PostgreSQL stops leading before another replica can take over.
  const queryTimeout = Math.min(config.query_timeout ?? timeoutMs, Math.max(500, Math.floor(timeoutMs / 2)));
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
          const next = new RenegotiationRefusingClient({ ...config, query_timeout: queryTimeout, application_name: "meshward-ca-leader" });
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
          try {
            await next.query(SET_SESSION_SETTINGS, [settings.map(([name]) => name), settings.map(([, value]) => value)]);
          } catch (error) {
            await next.end().catch(() => undefined);
            throw error;
          }
          client = next;
        }
        if (held) {
          // Still ours? A cheap round trip proves the session (and so the lock) is alive, and
          // keeps it from idle_session_timeout.
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
