import { isMeshwardError, MeshwardError } from "../errors.ts";

/**
 * Throws when the caller has given up on the request (`signal` aborted): its reason when that is
 * a MeshwardError (E_REQUEST_CANCELLED, E_REQUEST_TIMEOUT), else E_REQUEST_CANCELLED. Called
 * before work that cannot be undone, such as spending a join token's use.
 */
export function throwIfCancelled(signal: AbortSignal | undefined): void {
  if (signal?.aborted !== true) return;
  if (isMeshwardError(signal.reason)) throw signal.reason;
  throw new MeshwardError("E_REQUEST_CANCELLED", "the client gave up on the request before it was answered; nothing was issued");
}
