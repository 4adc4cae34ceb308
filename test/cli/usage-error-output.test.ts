import { describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.ts";

// Review newuser L2: a one-letter typo printed the command's whole help after the error (~190
// lines for `sidecar`), so the error scrolled away. Now: the error, commander's "Did you mean …?"
// when it has one, and one line naming the command's help; still exit 2.
describe("a usage error is a few lines, not the whole help", () => {
  const cases: readonly [readonly string[], RegExp, string][] = [
    [["ca", "init", "--dri", "x"], /^error: unknown option '--dri'\n\(Did you mean --dir\?\)\n/, "meshward ca init"],
    [["ca", "int"], /^error: unknown command 'int'\n\(Did you mean init\?\)\n/, "meshward ca"],
    [["serts"], /^error: unknown command 'serts'\n\(Did you mean cert\?\)\n/, "meshward"],
    [["sidecar", "--mode", "stritc"], /^error: option '--mode <mode>' argument 'stritc' is invalid\. Allowed: strict, permissive\.\n/, "meshward sidecar"],
    [["ca", "rotate-root", "prepare", "--foo"], /^error: unknown option '--foo'\n/, "meshward ca rotate-root prepare"],
  ];
  for (const [args, error, command] of cases) {
    it(`meshward ${args.join(" ")}`, async () => {
      const r = await runCli(args);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(error);
      expect(r.stderr.endsWith(`see '${command} --help'\n`), r.stderr).toBe(true);
      expect(r.stderr).not.toContain("Usage:");
      expect(r.stderr.split("\n").length).toBeLessThanOrEqual(4);
    });
  }
});
