// Option helpers for the command definitions and the actions. Loaded by every `--help`, so
// nothing here imports more than commander and node's built-ins (the logger is ./logger.ts).
import { InvalidArgumentError, Option, type Command } from "commander";
import { checkCaDir } from "../util/dir-safety.ts";
import { validatorEnumName, validatorFlagName } from "../config/validator-names.ts";
import type { Logger } from "../telemetry/logger.ts";
import { fileReadError, MeshwardError } from "../errors.ts";
import { assertPrivateFile } from "../util/files.ts";
import { INPUT_LIMITS, readInputText } from "../util/read-input.ts";

/** Passphrase for encrypted key files: --passphrase-file wins over MESHWARD_CA_PASSPHRASE. */
export function readPassphrase(file: string | undefined): string | undefined {
  if (file !== undefined) {
    // It decrypts the CA's keys: held to the key files' rule (owner only, or a Kubernetes Secret with fsGroup).
    assertPrivateFile(file, "passphrase file");
    try {
      const text = readInputText(file, { what: "passphrase file", maxBytes: INPUT_LIMITS.secret }).replace(/\r?\n$/, "");
      if (text.length === 0) throw new MeshwardError("E_PASSPHRASE_EMPTY", `passphrase file ${file} is empty`);
      return text;
    } catch (error) {
      if (error instanceof MeshwardError) throw error;
      throw fileReadError(`cannot read passphrase file ${file}`, error);
    }
  }
  const env = process.env.MESHWARD_CA_PASSPHRASE;
  return env === undefined || env === "" ? undefined : env;
}

/**
 * A preAction hook for the commands that read or write a CA directory (ca, cert, token): their
 * --dir is checked (E_CA_DIR_UNSAFE) before the action reads or writes anything in it.
 */
export function checkCaDirOption(_hooked: Command, action: Command): void {
  const dir: unknown = action.opts().dir;
  if (typeof dir === "string") checkCaDir(dir);
}

/**
 * A join token or JWT given with --token stays accepted (SPIRE's agent takes -joinToken, and
 * scripts depend on the flag), with a warning: while the process runs every local user reads its
 * arguments (ps, /proc/PID/cmdline), and a single-use join token read there can be spent first,
 * which gets that workload's certificate. The warning never contains the token. A `token` in the
 * sidecar's config file is a file and is not warned about.
 */
export const TOKEN_ON_COMMAND_LINE =
  "--token puts the token in the process list, where every local user can read it (ps, /proc/PID/cmdline) and spend a single-use join token before this process does: give it with --token-file FILE or MESHWARD_TOKEN";

/** For the daemons (identity, sidecar): the warning once, at start, through the structured logger. */
export function warnTokenOnCommandLine(logger: Logger): void {
  logger.warn({ event: "token-on-command-line" }, TOKEN_ON_COMMAND_LINE);
}

/**
 * A file named on the command line, through the bounded reader (util/read-input.ts): a regular
 * file or a pipe of at most `maxBytes` (PEM by default), never a device (review files LOW-3).
 */
export function readTextFile(file: string, what: string, maxBytes: number = INPUT_LIMITS.pem): string {
  try {
    return readInputText(file, { what, maxBytes });
  } catch (error) {
    if (error instanceof MeshwardError) throw error;
    throw fileReadError(`cannot read ${what} ${file}`, error);
  }
}

/**
 * `--validator NAME` (or `--default-validator`): the CLI spelling (`join-token`) and Dapr's enum
 * spelling that the docs use (`JOIN_TOKEN`) are both accepted; the value is the CLI spelling.
 */
export function validatorOption(flags: string, description: string, names: readonly string[], defaultName?: string): Option {
  const listed = names.map((n) => `${n} (${validatorEnumName(n)})`).join(", ");
  const option = new Option(flags, `${description}: ${listed}`).argParser((value: string) => {
    const name = validatorFlagName(value);
    if (!names.includes(name)) throw new InvalidArgumentError(`Allowed: ${listed}.`);
    return name;
  });
  return defaultName === undefined ? option : option.default(defaultName);
}

export const logFormatOption = () =>
  new Option("--log-format <format>", "log format: json (for machines) or pretty (for people)").choices(["json", "pretty"]).default("json");
export const logLevelOption = () =>
  new Option("--log-level <level>", "log level").choices(["trace", "debug", "info", "warn", "error"]).default("info");

/**
 * What stops a long-running command: a signal, or (with MESHWARD_STOP_ON_STDIN_CLOSE=1) the end
 * of its standard input.
 */
export type StopReason = NodeJS.Signals | "stdin closed";

/**
 * Set to 1 by a supervisor that gives the command a pipe as stdin: the command then stops as on
 * SIGTERM when the pipe closes, which the kernel does whenever the supervisor ends, `kill -9`
 * included (`meshward demo` sets it for its sidecars). Node has no PR_SET_PDEATHSIG.
 */
export const STOP_ON_STDIN_CLOSE_ENV = "MESHWARD_STOP_ON_STDIN_CLOSE";

/**
 * Resolves when SIGTERM, SIGINT or SIGHUP arrives (or stdin closes, see STOP_ON_STDIN_CLOSE_ENV),
 * and keeps the process up until then. Signal
 * handlers do not hold Node's event loop open, and a long-running command may have nothing
 * else that does: `meshward identity --out DIR` alone has only its (unref'd) renewal timer,
 * so without this it exited right after "ready" (code 13, unsettled top-level await) and never
 * renewed (issue 15, item 1). Call it before printing a ready line: a signal that arrives
 * before its handler is installed kills the process with Node's default action (a test or a
 * supervisor that stops the process as soon as it reads "ready" saw exit by SIGTERM).
 */
export function untilSignal(): Promise<StopReason> {
  return new Promise((resolve) => {
    const keepAlive = setInterval(() => undefined, 1 << 30);
    const watchStdin = process.env[STOP_ON_STDIN_CLOSE_ENV] === "1";
    let stopped = false;
    const stop = (reason: StopReason) => {
      if (stopped) return;
      stopped = true;
      clearInterval(keepAlive);
      for (const name of STOP_SIGNALS) process.off(name, handler);
      if (watchStdin) process.stdin.destroy();
      resolve(reason);
    };
    const handler = (signal: NodeJS.Signals) => stop(signal);
    for (const name of STOP_SIGNALS) process.on(name, handler);
    if (watchStdin) {
      // Whatever arrives is read and dropped; the end of the pipe (or an error on it) is the stop.
      process.stdin.on("data", () => undefined);
      process.stdin.once("end", () => stop("stdin closed"));
      process.stdin.once("close", () => stop("stdin closed"));
      process.stdin.on("error", () => stop("stdin closed"));
    }
  });
}

/**
 * The signals that stop a long-running command cleanly (listeners closed, sockets unlinked,
 * --on-rotate commands ended). SIGHUP (a closed terminal, a `kill -HUP` from a supervisor's
 * reload) stops it the same way: no command documents a reload, and Node's default action would
 * kill the process at once (exit 129) without any of that.
 */
const STOP_SIGNALS: readonly NodeJS.Signals[] = ["SIGTERM", "SIGINT", "SIGHUP"];

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** A flag's whole-number value (undefined when the flag was not given); E_USAGE otherwise. */
export function wholeNumber(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const text = String(value).trim();
  if (!/^\d+$/.test(text)) throw new MeshwardError("E_USAGE", `${flag} takes a whole number, got ${JSON.stringify(value)}`);
  return Number(text);
}
