/** Polls `check` until it holds; throws "timed out waiting for <what>" after `timeoutMs`. */
export async function waitFor(what: string, check: () => boolean, timeoutMs = 20_000, pollMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}
