import { createLogger, type LogLevel, type Logger } from "../telemetry/logger.ts";

/** Logs go to stderr so stdout stays for results a script reads. */
export function cliLogger(component: string, options: { logFormat?: string; logLevel?: string }): Logger {
  return createLogger({ component, format: options.logFormat === "pretty" ? "pretty" : "json", level: (options.logLevel ?? "info") as LogLevel });
}
