// Checks of identity flags that actions share; loaded by actions only (command definitions stay light).
import type { OptionValues } from "commander";
import { checkWorkloadSegment } from "../spiffe/id.ts";
import { flagValue } from "./usage.ts";

/**
 * --namespace and --app-id (the identity `cert issue` and `identity` expect) checked before the CA
 * is asked: a value no workload ID can hold is a usage error, exit 2 (review newuser L3).
 */
export function checkIdentityFlags(opts: OptionValues): void {
  // cert issue defaults both to "" (ask for what the token proves).
  if (opts.namespace !== undefined && opts.namespace !== "") flagValue(() => checkWorkloadSegment("namespace", opts.namespace));
  if (opts.appId !== undefined && opts.appId !== "") flagValue(() => checkWorkloadSegment("app id", opts.appId));
}
