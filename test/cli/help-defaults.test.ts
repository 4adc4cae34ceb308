import type { Command } from "commander";
import { describe, expect, it } from "vitest";
import { createProgram } from "../../src/cli/program.ts";
import { runCli } from "../helpers/cli.ts";

/** Every command path, e.g. ["ca", "init"], with its command, from the command tree the CLI runs. */
async function commands(): Promise<{ path: string[]; command: Command }[]> {
  const program = await createProgram([]);
  const found: { path: string[]; command: Command }[] = [];
  const walk = (command: Command, path: string[]) => {
    for (const sub of command.commands) {
      found.push({ path: [...path, sub.name()], command: sub });
      walk(sub, [...path, sub.name()]);
    }
  };
  walk(program, []);
  return found;
}

/**
 * What `meshward PATH --help` prints to a pipe, read in this process: the same commander output
 * (help text and text added before or after it), 80 columns (commander's width when stdout is no terminal) and no colour, as on a pipe.
 */
function helpOf(command: Command): string {
  let text = "";
  command.configureOutput({ writeOut: (s) => void (text += s), getOutHelpWidth: () => 80, getOutHasColors: () => false });
  command.outputHelp();
  return text;
}

// Help showed defaults in several styles: commander's `(default: "json")` (quoted, inside the
// choices' parentheses), hand-written `[default: 24h]`, `(default info)`, `json (default)`.
// One style now, `(default: 24h)`, checked in every command's --help. Each command's help is read
// in this process (src/cli/program.ts builds the tree src/cli/main.ts runs); a few are also run as
// a user runs them, a process each, and must print exactly that text: one process per command
// cost ~0.12 s of CPU each, 29 of them.
describe("--help of every command", () => {
  it("shows each default one way: (default: VALUE), unquoted", async () => {
    const all = await commands();
    expect(all.length).toBeGreaterThan(20);
    const wrong: string[] = [];
    for (const { path, command } of all) {
      // Help wraps long descriptions: join the lines of one option before looking.
      const text = helpOf(command).replace(/\n\s{10,}/g, " ");
      for (const bad of [/\[default/i, /default: "/, /\(default [^:]/i, /\(default\)/i, /, default\)/i, /\bDefault \S/, /choices: "/]) {
        for (const match of text.matchAll(new RegExp(bad.source, `${bad.flags}g`))) {
          wrong.push(`meshward ${path.join(" ")}: ${text.slice(Math.max(0, (match.index ?? 0) - 40), (match.index ?? 0) + 40)}`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  it("what is read in-process is what the CLI prints: sidecar (the longest), audit (text added after), ca init, cert inspect", async () => {
    const all = await commands();
    for (const path of [["sidecar"], ["audit"], ["ca", "init"], ["cert", "inspect"]]) {
      const command = all.find((c) => c.path.join(" ") === path.join(" "))?.command;
      expect(command, path.join(" ")).toBeDefined();
      const result = await runCli([...path, "--help"]);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout.length).toBeGreaterThan(200);
      expect(helpOf(command!), path.join(" ")).toBe(result.stdout);
    }
  }, 60_000);
});
