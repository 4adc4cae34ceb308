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

/** At most this many characters of a rejected value are shown in an error message. */
export const SHOWN_VALUE_MAX = 40;

/**
 * A rejected value as an error message shows it (config fields, flags): quoted as JSON, but never
 * anything that looks like a PEM block (a private key pasted into the wrong field, review atrest)
 * and at most `max` (SHOWN_VALUE_MAX) characters of anything else, with its length. Errors end up on
 * terminals, in CI logs and in log collectors.
 */
export function shownValue(value: unknown, max = SHOWN_VALUE_MAX): string {
  const text = typeof value === "string" ? value : (JSON.stringify(value) ?? String(value));
  if (/-----BEGIN/i.test(text)) return "(a PEM block, not shown)";
  if (typeof value !== "string") return text.length <= max ? text : `${text.slice(0, max)}… (${text.length} characters)`;
  return value.length <= max ? JSON.stringify(value) : `${JSON.stringify(value.slice(0, max))}… (${value.length} characters)`;
}

/**
 * The same rule for a whole message built elsewhere (a library's, or one holding several
 * values): every PEM block in it, raw or JSON-escaped, is replaced. The safety net of config errors.
 */
export function withoutPemBlocks(message: string): string {
  return message.replace(/"?-----BEGIN[^]*?(?:-----END[^-]*-----(?:\\n|\n)?"?|$)/g, "(a PEM block, not shown)");
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
