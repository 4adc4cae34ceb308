import { connect } from "node:net";

/** Polls `check` until it holds; throws "timed out waiting for <what>" after `timeoutMs`. */
export async function waitFor(what: string, check: () => boolean, timeoutMs = 20_000, pollMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

/**
 * Polls an async `probe` until it returns a value (not undefined); a probe that throws counts as
 * not yet, and the last error is named if `limitMs` passes first.
 */
export async function until<T>(what: string, limitMs: number, probe: () => Promise<T | undefined>, pollMs = 200): Promise<T> {
  const deadline = Date.now() + limitMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${limitMs} ms${last ? `: ${String(last)}` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

/** Whether a TCP connection to 127.0.0.1:`port` is accepted now (a server started and listening). */
export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
