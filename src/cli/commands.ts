import type { Command } from "commander";

/** Every CLI command is registered here, one module per command (DESIGN.md: src/cli). */
export function registerCommands(program: Command): void {
  void program;
}
