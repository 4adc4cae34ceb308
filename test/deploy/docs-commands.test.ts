import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Command, type Option } from "commander";
import { beforeAll, describe, expect, it } from "vitest";
import { registerCommands } from "../../src/cli/commands.ts";

// The operator's guides must not invent flags: every `meshward <command> … --flag` they show is
// looked up in the real CLI definition (the same commander tree `meshward --help` prints).
const DOCS = new URL("../../docs/", import.meta.url).pathname;
/** The guides the issue asked for (they must exist); every other page under docs/ and the README are read too. */
const GUIDES = ["getting-started.md", "troubleshooting.md", "operations.md", "migrating-from-dapr-sentry.md", "threat-model.md", "kubernetes.md", "rotation.md"];
const PAGES = [...new Set([...GUIDES, ...readdirSync(DOCS).filter((f) => f.endsWith(".md"))])].map((f) => join(DOCS, f)).concat(join(DOCS, "../README.md"));

/** `inline`: quoted in prose (`meshward egress could not reach …` is a log line, not a command): judged only once its first word names a command. */
interface Usage { file: string; line: number; text: string; inline: boolean }

/** `meshward …` invocations in the guides' code (fenced blocks and inline code), with shell line continuations joined. */
function usages(): Usage[] {
  const out: Usage[] = [];
  for (const path of PAGES) {
    const file = path.slice(path.lastIndexOf("/") + 1);
    const lines = readFileSync(path, "utf8").split("\n");
    let fenced = false;
    let shell = false;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i] as string;
      const fence = /^\s*```(\S*)/.exec(line);
      if (fence) {
        fenced = !fenced;
        // Shell blocks (and unlabelled ones); a pg_ident.conf or YAML block may mention meshward.
        shell = fenced && /^(|sh|bash|shell|console|text)$/.test(fence[1] ?? "");
        continue;
      }
      if (fenced && !shell) continue;
      let snippets: string[];
      if (fenced) {
        let text = line;
        while (text.endsWith("\\") && i + 1 < lines.length) text = text.slice(0, -1) + (lines[++i] as string);
        snippets = [text.split(/(?:^|\s)#(?:\s|$)/)[0] as string]; // shell comments show output, not commands
      } else {
        snippets = [...line.matchAll(/`([^`]+)`/g)].map((m) => m[1] as string);
      }
      for (const snippet of snippets) {
        for (const match of snippet.matchAll(/(?:^|[\s(])meshward((?:\s+[^\s|;)]+)+)/g)) out.push({ file, line: i + 1, text: `meshward${match[1]}`, inline: !fenced });
      }
    }
  }
  return out;
}

/** Walks the words after `meshward` down the command tree; returns the deepest command and the rest. */
function resolve(program: Command, words: string[]): { command: Command; path: string[]; rest: string[] } {
  let command = program;
  const path: string[] = [];
  let k = 0;
  for (; k < words.length; k++) {
    const word = words[k] as string;
    // `meshward audit PATH` runs audit's default subcommand (scan), which defines its flags.
    const fallback = (command as Command & { _defaultCommandName?: string })._defaultCommandName;
    const next = command.commands.find((c) => c.name() === word || c.aliases().includes(word)) ?? (path.length > 0 && fallback !== undefined && !word.startsWith("-") ? command.commands.find((c) => c.name() === fallback) : undefined);
    if (!next) break;
    command = next;
    path.push(word);
  }
  return { command, path, rest: words.slice(k) };
}

describe("CLI invocations in docs/", () => {
  let program: Command;
  beforeAll(async () => {
    program = new Command("meshward");
    await registerCommands(program);
  });

  it("name existing commands and only flags those commands define", () => {
    const found = usages();
    expect(found.length).toBeGreaterThan(30);
    const problems: string[] = [];
    for (const usage of found) {
      const words = usage.text.split(/\s+/).slice(1);
      const { command, path, rest } = resolve(program, words);
      if (path.length === 0) {
        if (usage.inline) continue;
        problems.push(`${usage.file}:${usage.line}: unknown command in ${JSON.stringify(usage.text)}`);
        continue;
      }
      const longs = new Set(command.options.map((o: Option) => o.long).filter((l): l is string => l !== undefined));
      longs.add("--help");
      for (const word of rest) {
        const flag = /^(--[a-z][a-z0-9-]*)/.exec(word)?.[1];
        if (flag !== undefined && !longs.has(flag)) problems.push(`${usage.file}:${usage.line}: meshward ${path.join(" ")} has no ${flag}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it("negative control: an invented flag or command is reported", () => {
    const { command, rest } = resolve(program, ["cert", "issue", "--ca", "x", "--no-such-flag"]);
    const longs = new Set(command.options.map((o: Option) => o.long));
    expect(rest.filter((w) => w.startsWith("--")).filter((f) => !longs.has(f))).toEqual(["--no-such-flag"]);
    expect(resolve(program, ["frobnicate"]).path).toEqual([]);
  });

  it("every guide the issue asks for exists", () => {
    const present = new Set(readdirSync(DOCS));
    for (const file of [...GUIDES, "configuration.md"]) expect(present.has(file), file).toBe(true);
  });
});
