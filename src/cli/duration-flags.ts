// Duration flags that actions share; loaded by actions only (command definitions stay light).
import { MeshwardError } from "../errors.ts";
import { parseDuration } from "../util/duration.ts";

/**
 * `--bundle-refresh-interval` of `identity` and `injector` (the sidecar's schema has the same
 * floor): at least 1s, since each refresh fetches the bundle and CRL from the CA, and 0 would do
 * so in a tight loop.
 */
export function bundleRefreshInterval(value: string): number {
  const ms = parseDuration(value, "--bundle-refresh-interval");
  if (ms < 1000) throw new MeshwardError("E_USAGE", `--bundle-refresh-interval ${JSON.stringify(value)}: at least 1s (each refresh fetches the bundle and CRL from the CA)`);
  return ms;
}
