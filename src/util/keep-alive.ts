/**
 * What a client of kept-alive HTTP/1.1 connections does when one may be closing: the SDK's agent
 * (src/transport/https.ts) and the sidecar's upstream pool (src/proxy/http1/pool.ts) follow the
 * same rules.
 */

/**
 * A server's `Keep-Alive: timeout=N` (RFC 9112 appendix C.2.2 keeps the field; its parameters are
 * the ones Apache and Node send): how long it keeps an idle connection. A client that reuses the
 * connection near that moment races the server's close, so pooled connections are given up this
 * much sooner (undici's threshold), or at half the announced time when that is short.
 */
const MARGIN_MS = 2_000;

/** The `timeout` parameter of a Keep-Alive field value, in ms; undefined when absent or malformed. */
export function keepAliveTimeoutMs(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const seconds = /(?:^|,)\s*timeout\s*=\s*(\d{1,9})\s*(?:,|$)/i.exec(header)?.[1];
  return seconds === undefined ? undefined : Number(seconds) * 1000;
}

/** How long a client keeps a connection idle when the server announced `timeoutMs`. */
export function idleLimitForHint(timeoutMs: number): number {
  return timeoutMs - Math.min(MARGIN_MS, timeoutMs / 2);
}

/** Methods a client or proxy may send again on its own (RFC 9110 §9.2.2: never a non-idempotent one). */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

/**
 * At most this many connections are tried for one request: all but the last were reused ones
 * found closed. Each has left the pool, so the attempts end at a new connection; this bounds them
 * against a server that drops every reused connection while other requests keep returning
 * connections to the pool.
 */
export const MAX_REQUEST_ATTEMPTS = 16;
