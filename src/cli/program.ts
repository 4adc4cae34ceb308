import { Command, Help, type Argument, type Option } from "commander";
import { packageVersion } from "../util/package-files.ts";
import { registerCommands } from "./commands.ts";

/**
 * The `meshward` command tree as src/cli/main.ts runs it for `argv` (only the command argv names
 * is registered, src/cli/commands.ts), with the behaviour every command shares: unknown options
 * reported first, a one-line pointer to help after a usage error, one style for defaults in help.
 * Kept apart from main.ts, which runs the CLI when loaded, so that a test can read the help of
 * every command in one process (test/cli/help-defaults.test.ts).
 */
export async function createProgram(argv: readonly string[]): Promise<Command> {
  const program = newProgram();
  await setUpProgram(program, argv);
  return program;
}

/** The bare `meshward` command: description, --version, errors thrown rather than exiting. */
export function newProgram(): Command {
  return new Command("meshward")
    .description("zero-trust service-to-service security: SPIFFE CA, workload identity, mTLS sidecar, config audit")
    .version(packageVersion(), "-V, --version", "print the meshward version")
    .exitOverride();
}

/** Registers the commands argv names on `program` and gives every command the shared behaviour. */
export async function setUpProgram(program: Command, argv: readonly string[]): Promise<void> {
  await registerCommands(program, argv);
  unknownOptionsFirst(program);
  pointToHelpAfterError(program);
  oneDefaultStyle(program);
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
