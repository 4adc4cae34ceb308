import { pino, type DestinationStream, type Logger, type LoggerOptions } from "pino";
import { redactPaths, redactSecrets, REDACTED } from "./redact.ts";
import { escapeControlCharacters } from "../util/control-characters.ts";

export type LogLevel = "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
export type LogFormat = "json" | "pretty";

export interface LoggerConfig {
  /** Short component name, e.g. "ca", "sidecar", "identity". */
  readonly component: string;
  readonly level?: LogLevel;
  readonly format?: LogFormat;
  /** Where lines go: anything with write(string), or a file descriptor. Default: stderr. */
  readonly destination?: { write(chunk: string): unknown } | number;
}

export type { Logger };

/**
 * A pino logger: one JSON object per line (default) or a compact human line ("pretty").
 * Secret-named fields (key, privateKey, token, passphrase, password, authorization, …, also
 * one level deep) are censored, and PEM private keys / JWTs / bearer values are scrubbed
 * from messages, error messages and stacks, and every string field (a command's output, a
 * peer's input), nested objects and arrays included.
 */
export function createLogger(config: LoggerConfig): Logger {
  const options: LoggerOptions = {
    level: config.level ?? "info",
    base: { component: config.component },
    redact: { paths: redactPaths(), censor: REDACTED },
    formatters: { level: (label) => ({ level: label }), log: (object) => scrubFields(object, 0) as Record<string, unknown> },
    serializers: { err: serializeError, error: serializeError },
    hooks: {
      logMethod(args, method) {
        for (let i = 0; i < args.length; i++) {
          const arg = args[i];
          if (typeof arg === "string") args[i] = redactSecrets(arg);
        }
        return method.apply(this, args as Parameters<typeof method>);
      },
    },
  };
  const target = resolveDestination(config.destination);
  const destination: DestinationStream = config.format === "pretty" ? prettyStream(target) : target;
  return pino(options, destination);
}

function resolveDestination(destination: LoggerConfig["destination"]): DestinationStream {
  if (destination === undefined) return pino.destination({ dest: 2, sync: true });
  if (typeof destination === "number") return pino.destination({ dest: destination, sync: true });
  return destination as DestinationStream;
}

/** Copies plain objects and arrays (a few levels deep) with secrets scrubbed from their strings. */
function scrubFields(value: unknown, depth: number): unknown {
  if (typeof value === "string") return redactSecrets(value);
  if (value === null || typeof value !== "object" || depth > 4) return value;
  if (Array.isArray(value)) return value.map((item) => scrubFields(item, depth + 1));
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value; // errors have their serializer; buffers, dates stay
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) out[key] = scrubFields(field, depth + 1);
  return out;
}

function serializeError(value: unknown): unknown {
  if (!(value instanceof Error)) return typeof value === "string" ? redactSecrets(value) : value;
  const out: Record<string, unknown> = { type: value.name, message: redactSecrets(value.message) };
  const code = (value as { code?: unknown }).code;
  if (code !== undefined) out.code = code;
  if (value.stack) out.stack = redactSecrets(value.stack);
  if (value.cause !== undefined) out.cause = serializeError(value.cause);
  return out;
}

const PRETTY_SKIP = new Set(["level", "time", "component", "msg", "pid", "hostname"]);

/** "12:00:00.123 INFO  ca: message key=value" — our own tiny formatter, no runtime deps. */
export function formatPrettyLine(line: string): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.endsWith("\n") ? line : `${line}\n`;
  }
  const time = typeof record.time === "number" ? new Date(record.time).toISOString().slice(11, 23) : "";
  const level = String(record.level ?? "").toUpperCase().padEnd(5);
  const component = record.component === undefined ? "" : `${String(record.component)}: `;
  let text = `${time} ${level} ${component}${record.msg === undefined ? "" : String(record.msg)}`;
  for (const [key, value] of Object.entries(record)) {
    if (PRETTY_SKIP.has(key)) continue;
    if (key === "err" && value && typeof value === "object") {
      const err = value as { message?: unknown; code?: unknown; stack?: unknown };
      text += ` err=${JSON.stringify(err.code ? `${String(err.code)}: ${String(err.message)}` : err.message)}`;
      continue;
    }
    text += ` ${key}=${typeof value === "string" && /^[\w.:/@[\]-]+$/.test(value) ? value : JSON.stringify(value)}`;
  }
  // Messages and values carry what callers sent (a CSR's DNS name, an app id): a newline there
  // would start a forged line, an ESC or CSI byte would drive the terminal.
  return `${escapeControlCharacters(text)}\n`;
}

export { escapeControlCharacters };

function prettyStream(target: DestinationStream): DestinationStream {
  return {
    write(chunk: string) {
      for (const line of chunk.split("\n")) {
        if (line !== "") target.write(formatPrettyLine(line));
      }
    },
  };
}
