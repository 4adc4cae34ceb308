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
