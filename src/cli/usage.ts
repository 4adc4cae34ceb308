// Marks errors caused by a flag's value as usage errors (exit 2, main.ts reportCliError); loaded by actions only.
import { MeshwardError } from "../errors.ts";

/**
 * Reads a flag's value with `read` (a parser or validator); an error it throws is marked as a
 * usage error: the command exits 2, as for E_USAGE and commander's own errors, and the error keeps
 * its code and message (`--ttl 5q` is still E_DURATION_INVALID). README "exit 2 for a value a
 * flag cannot take" (review newuser L3).
 */
export function flagValue<T>(read: () => T): T {
  try {
    return read();
  } catch (error) {
    throw asUsageError(error);
  }
}

/** The same error, marked as caused by a flag's value (details.usage). Anything else as it is. */
export function asUsageError(error: unknown): unknown {
  if (!(error instanceof MeshwardError) || error.code === "E_USAGE" || error.details?.["usage"] === true) return error;
  return new MeshwardError(error.code, error.message, { cause: error.cause, details: { ...error.details, usage: true } });
}
