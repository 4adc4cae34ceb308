import { CommanderError } from "commander";
import { noWorkflowCommands, printable } from "../util/printable.ts";
import { MeshwardError } from "../errors.ts";
import { newProgram, setUpProgram } from "./program.ts";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export async function runCli(argv: readonly string[]): Promise<number> {
  const program = newProgram();
  try {
    await setUpProgram(program, argv);
    await program.parseAsync([...argv], { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : EXIT_OK;
  } catch (error) {
    return reportCliError(error);
  }
}

function reportCliError(error: unknown): number {
  if (error instanceof CommanderError) {
    // commander already printed help or the usage error.
    return error.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  }
  if (error instanceof MeshwardError) {
    // A message may quote a path or a value from an audited tree: no control character, no workflow command.
    process.stderr.write(noWorkflowCommands(`meshward: ${printable(error.message, { keepNewlines: true })} [${error.code}]\n`));
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
