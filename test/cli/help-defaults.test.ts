import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { registerCommands } from "../../src/cli/commands.ts";
import { runCli } from "../helpers/cli.ts";

/** Every command path, e.g. ["ca", "init"], from the registered command tree. */
async function commandPaths(): Promise<string[][]> {
  const program = new Command("meshward");
  await registerCommands(program, []);
  const paths: string[][] = [];
  const walk = (command: Command, path: string[]) => {
    for (const sub of command.commands) {
      paths.push([...path, sub.name()]);
      walk(sub, [...path, sub.name()]);
    }
  };
  walk(program, []);
  return paths;
}

// Help showed defaults in several styles: commander's `(default: "json")` (quoted, inside the
// choices' parentheses), hand-written `[default: 24h]`, `(default info)`, `json (default)`.
// One style now, `(default: 24h)`, checked in every command's --help as a user runs it.
describe("--help of every command", () => {
  it("shows each default one way: (default: VALUE), unquoted", async () => {
    const paths = await commandPaths();
    expect(paths.length).toBeGreaterThan(20);
    const wrong: string[] = [];
    for (const path of paths) {
      const result = await runCli([...path, "--help"]);
      expect(result.code, result.stderr).toBe(0);
      // Help wraps long descriptions: join the lines of one option before looking.
      const text = result.stdout.replace(/\n\s{10,}/g, " ");
      for (const bad of [/\[default/i, /default: "/, /\(default [^:]/i, /\(default\)/i, /, default\)/i, /\bDefault \S/, /choices: "/]) {
        for (const match of text.matchAll(new RegExp(bad.source, `${bad.flags}g`))) {
          wrong.push(`meshward ${path.join(" ")}: ${text.slice(Math.max(0, (match.index ?? 0) - 40), (match.index ?? 0) + 40)}`);
        }
      }
    }
    expect(wrong).toEqual([]);
  }, 120_000);
});
