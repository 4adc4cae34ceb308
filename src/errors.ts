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

const READ_FAILURE_HINTS: Readonly<Record<string, string>> = {
  ENOENT: "no such file",
  EISDIR: "it is a directory, not a file",
  EACCES: "permission denied",
  ENOTDIR: "a part of the path is not a directory",
  ELOOP: "too many symbolic links",
};

/**
 * The error for a local file that could not be read: E_FILE_MISSING when it does not exist,
 * E_FILE_UNREADABLE when it exists and cannot be read (a directory, no permission), with the
 * errno and what it means. `what` names the file's role and path, e.g. "cannot read trust bundle b.pem".
 */
export function fileReadError(what: string, error: unknown): MeshwardError {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  const hint = code === undefined ? undefined : READ_FAILURE_HINTS[code];
  const reason = code === undefined ? describeError(error) : hint === undefined ? code : `${code}: ${hint}`;
  return new MeshwardError(code === "ENOENT" ? "E_FILE_MISSING" : "E_FILE_UNREADABLE", `${what}: ${reason}`, { cause: error });
}
