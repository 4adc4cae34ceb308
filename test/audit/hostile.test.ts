import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MESHWARD_BIN } from "../helpers/cli.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { secretRules } from "../../src/audit/rules/secrets.ts";

const ROOT = join(import.meta.dirname, "..", "..");
const ANCHORS = join(ROOT, "test", "inject", "fixtures", "trust-anchors.pem");
const REDIS = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.redis\n  metadata:\n  - name: redisHost\n    value: r:6379\n";

/** The real CLI as a child process, from the TypeScript sources (killed by the timeout if it hangs). */
function meshward(...args: string[]) {
  const run = spawnSync(process.execPath, [MESHWARD_BIN, ...args], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 120_000,
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, MESHWARD_FROM_SOURCE: "1", NO_COLOR: undefined, FORCE_COLOR: undefined },
  });
  return { code: run.status, signal: run.signal, stdout: run.stdout, stderr: run.stderr };
}

/** No crash: a normal exit, and no JavaScript stack trace on stderr. */
function expectNoCrash(run: ReturnType<typeof meshward>): void {
  expect(run.signal).toBeNull();
  expect(run.code).not.toBeNull();
  expect(run.stderr).not.toMatch(/RangeError|Maximum call stack|^\s+at /m);
}

const DEEP: Record<string, string> = {
  "deep.json": "[".repeat(100_000),
  "flow.yaml": `a: ${"[".repeat(100_000)}`,
  "sequences.yaml": `${"- ".repeat(50_000)}x\n`,
  "maps.yaml": Array.from({ length: 2_000 }, (_, i) => `${" ".repeat(i)}a:`).join("\n"),
};

describe("meshward audit and inject on hostile trees (real process)", () => {
  let base: string;
  let tree: string;
  let outside: string;
  let secretPem: string;

  beforeAll(() => {
    base = mkdtempSync(join(tmpdir(), "meshward-hostile-"));
    tree = join(base, "tree");
    outside = join(base, "outside");
    mkdirSync(join(tree, "sub"), { recursive: true });
    mkdirSync(outside);
    for (const [name, text] of Object.entries(DEEP)) writeFileSync(join(tree, name), text);
    writeFileSync(join(tree, "sub", "store.yaml"), REDIS);
    // Inside the root: a link to a file is followed (read under the name reached first).
    symlinkSync(join(tree, "sub", "store.yaml"), join(tree, "linked.yaml"));
    // Outside the root: a folder, a file, the parent and /etc. Their content must never be read.
    const { privateKey } = generateKeyPair();
    secretPem = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    writeFileSync(join(outside, "id.key"), secretPem);
    writeFileSync(join(outside, "store.yaml"), REDIS.replace("name: s", "name: outside-secret"));
    symlinkSync(outside, join(tree, "out-dir"));
    symlinkSync(join(outside, "store.yaml"), join(tree, "out-file.yaml"));
    symlinkSync(base, join(tree, "parent"));
    symlinkSync("/etc", join(tree, "etc"));
    // Loops must not hang.
    symlinkSync(tree, join(tree, "sub", "loop"));
    symlinkSync(join(tree, "self"), join(tree, "self"));
  });

  afterAll(() => {
    rmSync(base, { recursive: true, force: true });
  });

  it("reports deeply nested files as YAML errors, skips links outside the root, and audits the rest", () => {
    const run = meshward("audit", tree, "--format", "json");
    expectNoCrash(run);
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as {
      findings: { file: string; ruleId: string }[];
      parseErrors: { file: string; message: string }[];
      skipped: { file: string; reason: string; detail: string }[];
    };
    const nested = report.parseErrors.filter((problem) => /nested more than 100 levels deep/.test(problem.message)).map((problem) => problem.file.slice(tree.length + 1));
    expect(nested.sort()).toEqual(Object.keys(DEEP).sort());
    // The other files are still audited, an inside link included.
    expect(report.findings.map((finding) => `${finding.file.slice(tree.length + 1)}:${finding.ruleId}`)).toEqual(["linked.yaml:MW-TLS-001"]);
    const skipped = report.skipped.map((entry) => `${entry.file.slice(tree.length + 1)}:${entry.reason}`).sort();
    expect(skipped).toEqual(["etc:outside-root", "out-dir:outside-root", "out-file.yaml:outside-root", "parent:outside-root", "self:symlink-loop", "sub/loop:symlink-loop"]);
    // Nothing from outside the root was read or quoted.
    expect(run.stdout).not.toContain("outside-secret");
    expect(run.stdout).not.toContain(secretPem.split("\n")[1]);
    expect(run.stdout).not.toContain("MW-SECRET-003");
  }, 150_000);

  it("the text report names the reason and --fail-on-unparsed counts the deep files; exit codes unchanged", () => {
    const run = meshward("audit", tree);
    expectNoCrash(run);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`${join(tree, "deep.json")}:1:`);
    expect(run.stdout).toMatch(/nested more than 100 levels deep/);
    expect(run.stdout).toMatch(/out-dir {2}outside-root: symbolic link to .*outside.*: not followed/);
    const gate = meshward("audit", tree, "--fail-on-unparsed");
    expectNoCrash(gate);
    expect(gate.code).toBe(1);
  }, 150_000);

  it("meshward inject refuses a deeply nested manifest with E_INJECT_INVALID and no stack trace", () => {
    for (const name of Object.keys(DEEP)) {
      const run = meshward("inject", join(tree, name), "--trust-anchors", ANCHORS);
      expectNoCrash(run);
      expect(run.code).toBe(1);
      expect(run.stdout).toBe("");
      expect(run.stderr).toMatch(/nested more than 100 levels deep.*\[E_INJECT_INVALID\]/);
    }
  }, 150_000);
});

describe("the private-key scan (MW-SECRET-003) is linear in the file (review audit finding 8)", () => {
  // Split so this test file is not itself a private-key finding.
  const BEGIN_LINE = `${"-----BEGIN"} PRIVATE KEY-----\n`;
  /** A string that counts the characters indexOf scans: the work the scan does, without a clock. */
  class Counting extends String {
    scanned = 0;
    override indexOf(search: string, from = 0): number {
      const found = super.indexOf(search, from);
      this.scanned += (found < 0 ? this.length : found) - from;
      return found;
    }
  }
  const rule = secretRules.find((each) => each.id === "MW-SECRET-003");
  const scan = (text: string): { hits: string[]; scanned: number } => {
    const counting = new Counting(text);
    const hits = rule?.check({ kind: "raw-file", file: "k.yaml", text: counting as unknown as string }, { resources: [], configurations: [] }) ?? [];
    return { hits: hits.map((hit) => `${hit.position?.line}:${hit.evidence}`), scanned: counting.scanned };
  };

  it("a file of BEGIN lines with no END: each character searched about once (was once per BEGIN before it)", () => {
    const text = BEGIN_LINE.repeat(20_000); // 560 kB
    const { hits, scanned } = scan(text);
    expect(hits).toEqual([]);
    expect(scanned).toBeLessThanOrEqual(2 * text.length);
  });

  it("BEGIN lines, then a real key: found, at its line, with the same linear work", () => {
    const real = generateKeyPair().privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    const text = BEGIN_LINE.repeat(5_000) + real;
    const { hits, scanned } = scan(text);
    expect(hits).toEqual(["5001:PRIVATE KEY block"]);
    expect(scanned).toBeLessThanOrEqual(3 * text.length);
  });

  it("a block of 19,000 backslashes and a quote between BEGIN and END is no key (the escape regexes are bounded)", () => {
    const text = `${BEGIN_LINE}${"\\".repeat(19_000)}"\n${"-----END"} PRIVATE KEY-----\n`.repeat(3);
    expect(scan(text).hits).toEqual([]);
  });
});
