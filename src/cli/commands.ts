import type { Command } from "commander";

type Register = (program: Command) => void;

/**
 * Every CLI command, one module per command (DESIGN.md: src/cli), in help order. Loaded
 * lazily: `meshward sidecar` does not pay for the CA, the auditor or the demo (measured
 * ~18 MB of RSS in a long-running sidecar). A command's module is its definition only (flags,
 * help); what it does is in ./actions/, imported when it runs, so that help and the usage
 * errors commander reports load commander and the definitions alone
 * (test/cli/lazy-commands.test.ts).
 */
const COMMANDS: Readonly<Record<string, () => Promise<Register>>> = {
  audit: async () => (await import("./audit.ts")).registerAuditCommand,
  ca: async () => (await import("./ca.ts")).registerCaCommand,
  token: async () => (await import("./token.ts")).registerTokenCommand,
  cert: async () => (await import("./cert.ts")).registerCertCommand,
  identity: async () => (await import("./identity.ts")).registerIdentityCommand,
  status: async () => (await import("./status.ts")).registerStatusCommand,
  demo: async () => (await import("./demo.ts")).registerDemoCommand,
  sidecar: async () => (await import("./sidecar.ts")).registerSidecarCommand,
  inject: async () => (await import("./inject.ts")).registerInjectCommand,
  injector: async () => (await import("./injector.ts")).registerInjectorCommand,
};

/** `meshward --version` needs no command. */
const VERSION_FLAGS = new Set(["-V", "--version"]);

/**
 * Registers the command named first in argv, or every command when none is (top-level help,
 * a typo that commander should answer with suggestions), or none when argv asks only for the
 * version.
 */
export async function registerCommands(program: Command, argv: readonly string[] = []): Promise<void> {
  if (argv.length > 0 && argv.every((arg) => VERSION_FLAGS.has(arg))) return;
  const first = argv.find((arg) => !arg.startsWith("-"));
  const names = first !== undefined && Object.hasOwn(COMMANDS, first) ? [first] : Object.keys(COMMANDS);
  const registers = await Promise.all(names.map((name) => (COMMANDS[name] as () => Promise<Register>)()));
  for (const register of registers) register(program);
}
