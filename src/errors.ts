/**
 * One error family for the whole project. `code` is stable (tests, logs, API responses and
 * scripts match on it); `message` tells a person what went wrong and what to do next.
 * `details` carries machine-readable context and must never hold key material or tokens.
 */
export type ErrorCode = `E_${string}`;

export class MeshwardError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "MeshwardError";
    this.code = code;
    this.details = options.details;
  }
}

export function isMeshwardError(value: unknown, code?: ErrorCode): value is MeshwardError {
  return value instanceof MeshwardError && (code === undefined || value.code === code);
}

/** A short, safe description of any thrown value for logs (never the stack of a key parse). */
export function describeError(value: unknown): string {
  if (value instanceof MeshwardError) return `${value.code}: ${value.message}`;
  if (value instanceof Error) return value.message;
  return String(value);
}
