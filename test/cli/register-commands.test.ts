import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { registerCommands } from "../../src/cli/commands.ts";

// Which command modules a CLI process loads for its argv (the process-level behaviour of
// --version and --help is in test/deploy/bundle.test.ts and the CLI end-to-end tests).
async function registered(argv: string[]): Promise<string[]> {
  const program = new Command("meshward");
  await registerCommands(program, argv);
  return program.commands.map((command) => command.name());
}

describe("registerCommands", () => {
  it("loads only the command argv names", async () => {
    expect(await registered(["ca", "init", "--dir", "x"])).toEqual(["ca"]);
    expect(await registered(["ca", "--version"])).toEqual(["ca"]);
  });

  it("loads every command for top-level help, no argv, or a name that is no command (for suggestions)", async () => {
    const all = ["audit", "ca", "token", "cert", "identity", "status", "demo", "sidecar", "inject", "injector"];
    expect(await registered([])).toEqual(all);
    expect(await registered(["--help"])).toEqual(all);
    expect(await registered(["--version", "--help"])).toEqual(all);
    expect(await registered(["sidcar"])).toEqual(all);
  });

  it("loads none when argv asks only for the version", async () => {
    expect(await registered(["--version"])).toEqual([]);
    expect(await registered(["-V"])).toEqual([]);
  });
});
