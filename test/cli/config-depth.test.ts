import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadPolicyFile } from "../../src/proxy/policy-source.ts";
import { runCli } from "../helpers/cli.ts";

/**
 * Config and policy files nested far deeper than any real one (100k flow levels, 20k indented
 * block levels) used to reach the `yaml` parser, which recurses once per level and answered with
 * "Maximum call stack size exceeded". They are refused by the linear pre-check in
 * src/util/yaml-depth.ts with the line and column where the limit was passed, before any parsing,
 * before a token is spent or a directory is created. The block file has 2,500 indented levels
 * (3 MiB): 20k levels take 200 MB, which the 4 MiB cap on config files (src/util/read-input.ts)
 * now refuses before the depth is looked at.
 */
let dir: string;
let flow: string;
let block: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "meshward-config-depth-"));
  flow = join(dir, "flow.yaml");
  block = join(dir, "block.yaml");
  writeFileSync(flow, `appId: ${"[".repeat(100_000)}${"]".repeat(100_000)}\n`);
  writeFileSync(block, `${Array.from({ length: 2_500 }, (_, i) => `${" ".repeat(i)}a:`).join("\n")}\n`);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("deeply nested config and policy files", () => {
  for (const [name, file] of [
    ["flow", () => flow],
    ["block", () => block],
  ] as const) {
    it(`meshward sidecar --config (${name}) exits 1 with E_CONFIG_INVALID and the position, no stack trace`, async () => {
      const r = await runCli(["sidecar", "--config", file(), "--token", "never-sent-0123456789"]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`${file().replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}:\\d+:\\d+: nested more than 100 levels deep`));
      expect(r.stderr).toContain("E_CONFIG_INVALID");
      expect(r.stderr).not.toContain("Maximum call stack");
      expect(r.stderr).not.toMatch(/\n\s+at /);
    });
    it(`meshward ca serve --config (${name}) refuses the file before creating the CA directory`, async () => {
      const caDir = join(dir, `ca-${name}`);
      const r = await runCli(["ca", "serve", "--dir", caDir, "--config", file()]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("nested more than 100 levels deep");
      expect(r.stderr).toContain("E_CONFIG_INVALID");
      expect(existsSync(caDir)).toBe(false);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    });
  }

  it("a policy file: E_POLICY_INVALID naming file:line:column", () => {
    const policy = join(dir, "policy.yaml");
    writeFileSync(policy, `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec:\n  accessControl: ${"{a: ".repeat(50_000)}1${"}".repeat(50_000)}\n`);
    expect(() => loadPolicyFile(policy)).toThrow(expect.objectContaining({ code: "E_POLICY_INVALID", message: expect.stringMatching(/policy\.yaml:4:\d+: nested more than 100 levels deep/) }));
  });
});
