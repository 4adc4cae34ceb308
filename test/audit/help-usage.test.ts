import type { Command } from "commander";
import { describe, expect, it } from "vitest";
import { createProgram } from "../../src/cli/program.ts";

/** What `meshward audit --help` prints, read in this process (as test/cli/help-defaults.test.ts does). */
function helpOf(command: Command): string {
  let text = "";
  command.configureOutput({ writeOut: (s) => void (text += s), getOutHelpWidth: () => 80, getOutHasColors: () => false });
  command.outputHelp();
  return text;
}

// `meshward audit --help` ends with a usage line per subcommand, written by hand: it lacked
// --kustomize-remote (and --max-file-size, --no-kustomize, --no-color). Each option a subcommand
// takes must be in that subcommand's line, so an option added later is not left out again.
describe("meshward audit --help", () => {
  it("names every option of scan, drift and rules in their usage lines", async () => {
    const program = await createProgram(["audit"]);
    const audit = program.commands.find((command) => command.name() === "audit");
    if (audit === undefined) throw new Error("no audit command");
    const usage = helpOf(audit).split("\n").filter((line) => /^\s*(Usage: )?meshward audit /.test(line));
    const missing: string[] = [];
    for (const sub of audit.commands) {
      const line = usage.find((candidate) => sub.name() === "scan" ? /meshward audit \[scan\]/.test(candidate) : candidate.includes(`meshward audit ${sub.name()}`));
      if (line === undefined) {
        missing.push(`${sub.name()}: no usage line`);
        continue;
      }
      for (const option of sub.options) {
        const flag = option.long ?? option.short ?? "";
        if (!new RegExp(`\\[${flag.replace(/[-]/g, "\\-")}[\\] ]`).test(line)) missing.push(`${sub.name()}: ${flag}`);
      }
    }
    expect(missing).toEqual([]);
  });
});
