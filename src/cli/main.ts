import { Command, CommanderError, Help, type Argument, type Option } from "commander";
import { MeshwardError } from "../errors.ts";
import { packageVersion } from "../util/package-files.ts";
import { registerCommands } from "./commands.ts";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export async function runCli(argv: readonly string[]): Promise<number> {
  const program = new Command("meshward")
    .description("zero-trust service-to-service security: SPIFFE CA, workload identity, mTLS sidecar, config audit")
    .version(packageVersion(), "-V, --version", "print the meshward version")
    .exitOverride();
  try {
    await registerCommands(program, argv);
    unknownOptionsFirst(program);
    pointToHelpAfterError(program);
    oneDefaultStyle(program);
    await program.parseAsync([...argv], { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : EXIT_OK;
  } catch (error) {
    return reportCliError(error);
  }
}

/**
 * Commander checks required options before unknown ones, so a typo such as `--ca-addr` for
 * `--ca` was answered "required option '--ca' not specified" (issue 15, item 9). Every
 * command here reports an unknown option first; commands that allow unknown options still do.
 */
function unknownOptionsFirst(command: Command): void {
  // Both methods are commander's own (lib/command.js), left out of its type declarations.
  const internal = command as unknown as { missingMandatoryOptionValue(option: unknown): void; unknownOption(flag: string): void };
  const missing = internal.missingMandatoryOptionValue.bind(command);
  internal.missingMandatoryOptionValue = (option: unknown) => {
    const unknown = command.args.find((arg) => arg.length > 1 && arg.startsWith("-") && arg !== "--");
    if (unknown !== undefined) internal.unknownOption(unknown.split("=")[0] as string);
    missing(option);
  };
  for (const sub of command.commands) unknownOptionsFirst(sub);
}

/**
 * After a usage error commander printed the command's whole help (~190 lines for `sidecar`), so
 * one mistyped letter scrolled the error and its "Did you mean …?" off the screen (review
 * newuser L2). Each command now ends its error with one line naming its own help instead.
 */
function pointToHelpAfterError(command: Command, path = command.name()): void {
  command.showHelpAfterError(`see '${path} --help'`);
  for (const sub of command.commands) pointToHelpAfterError(sub, `${path} ${sub.name()}`);
}

/**
 * Every default in help reads the same way, `(default: 5m)`: commander's own (from .default())
 * printed `(default: "json")`, quoted and run together with its choices, next to hand-written
 * `(default: 24h)`, `(default info)` and `(default http)`. Choices are listed unquoted too.
 */
function oneDefaultStyle(command: Command): void {
  const plain = (value: unknown) => (typeof value === "string" ? value : JSON.stringify(value));
  const extras = (choices: readonly string[] | undefined, shown: unknown, description: string | undefined) => {
    // A default written into the description (a flag whose default comes from the config schema) stays last.
    const written = /^(.*?)\s*(\(default: [^)]*\))$/s.exec(description ?? "");
    const parts = [written?.[1] ?? description ?? ""];
    if (choices !== undefined) parts.push(`(choices: ${choices.join(", ")})`);
    if (shown !== undefined) parts.push(`(default: ${shown})`);
    else if (written !== null) parts.push(written[2] as string);
    return parts.filter((part) => part !== "").join(" ");
  };
  command.configureHelp({
    optionDescription(option: Option): string {
      const showDefault = option.defaultValue !== undefined && (option.required || option.optional || (option.isBoolean() && typeof option.defaultValue === "boolean"));
      // An empty list (a repeatable flag) is no default worth showing.
      const empty = Array.isArray(option.defaultValue) && option.defaultValue.length === 0 && option.defaultValueDescription === undefined;
      const shown = showDefault && !empty ? (option.defaultValueDescription ?? plain(option.defaultValue)) : undefined;
      const base = extras(option.argChoices, shown, option.description);
      return option.envVar === undefined ? base : `${base} (env: ${option.envVar})`;
    },
    argumentDescription(argument: Argument): string {
      const shown = argument.defaultValue === undefined ? undefined : (argument.defaultValueDescription ?? plain(argument.defaultValue));
      return extras(argument.argChoices, shown, argument.description);
    },
  } satisfies Partial<Help>);
  for (const sub of command.commands) oneDefaultStyle(sub);
}

function reportCliError(error: unknown): number {
  if (error instanceof CommanderError) {
    // commander already printed help or the usage error.
    return error.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  }
  if (error instanceof MeshwardError) {
    process.stderr.write(`meshward: ${error.message} [${error.code}]\n`);
    // A flag or argument the command cannot take exits 2, as commander's own usage errors do:
    // E_USAGE, or an error a flag's value caused, which keeps its own code (details.usage, set by
    // src/cli/usage.ts: not imported here, so that --version and help load no more than they did).
    const usage = error.code === "E_USAGE" || error.code === "E_AUDIT_USAGE" || error.details?.["usage"] === true;
    return usage ? EXIT_USAGE : EXIT_FAILURE;
  }
  process.stderr.write(`meshward: unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  return EXIT_FAILURE;
}

/**
 * When the reader of our output goes away (`meshward audit … | head -1`), writing to the pipe
 * fails with EPIPE, which Node reports as an unhandled 'error' event with a stack trace (review
 * M5). Node ignores SIGPIPE, so the shell's usual quiet end does not happen by itself: here the
 * stream stops writing and the command ends as it would have, quietly, as cat and grep do. A
 * long-running command (ca serve, sidecar) keeps serving: losing its ready-line reader is no
 * reason to drop traffic. Any other error on the stream is still thrown.
 */
function stopWritingWhenReaderGoes(stream: NodeJS.WriteStream): void {
  stream.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code !== "EPIPE") throw error;
    stream.write = (() => true) as typeof stream.write;
  });
}

stopWritingWhenReaderGoes(process.stdout);
stopWritingWhenReaderGoes(process.stderr);
const code = await runCli(process.argv.slice(2));
process.exitCode = code;
// A failed command has said why; whatever it left open (a listener, a timer) must not keep the process up.
if (code !== EXIT_OK) setTimeout(() => process.exit(code), 2000).unref();
