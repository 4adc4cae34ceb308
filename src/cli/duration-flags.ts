// Duration flags that actions share; loaded by actions only (command definitions stay light).
import { MeshwardError } from "../errors.ts";
import { parseDuration } from "../util/duration.ts";
import { flagValue } from "./usage.ts";

/** A duration flag's value in ms; an invalid one is a usage error (exit 2) with E_DURATION_INVALID. */
export function flagDuration(value: string, flag: string): number {
  return flagValue(() => parseDuration(value, flag));
}

/**
 * `--bundle-refresh-interval` of `identity` and `injector` (the sidecar's schema has the same
 * floor): at least 1s, since each refresh fetches the bundle and CRL from the CA, and 0 would do
 * so in a tight loop.
 */
export function bundleRefreshInterval(value: string): number {
  const ms = flagDuration(value, "--bundle-refresh-interval");
  if (ms < 1000) throw new MeshwardError("E_USAGE", `--bundle-refresh-interval ${JSON.stringify(value)}: at least 1s (each refresh fetches the bundle and CRL from the CA)`);
  return ms;
}
