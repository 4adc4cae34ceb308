import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditPaths } from "../../src/audit/audit.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";

const REDIS = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.redis\n  metadata:\n  - name: redisHost\n    value: r:6379\n";

describe("reading files", () => {
  let root: string;

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), "meshward-audit-"));
    mkdirSync(join(root, "tree", "nested"), { recursive: true });
    writeFileSync(join(root, "tree", "nested", "store.yaml"), REDIS);
    // a loop: tree/nested/back -> tree
    symlinkSync(join(root, "tree"), join(root, "tree", "nested", "back"));
    // a link that points at itself
    symlinkSync(join(root, "tree", "self"), join(root, "tree", "self"));
    symlinkSync(join(root, "tree", "missing.yaml"), join(root, "tree", "dangling.yaml"));
    writeFileSync(join(root, "tree", "image.yaml"), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x00, 0x00, 0x0d, 0x0a]));
    writeFileSync(join(root, "tree", "huge.yaml"), `${"# padding\n".repeat(2000)}${REDIS}`);
    const { privateKey } = generateKeyPair();
    writeFileSync(join(root, "tree", "notes.txt"), `deploy notes\n\n${privateKey.export({ type: "pkcs8", format: "pem" }).toString()}`);
    const encrypted = privateKey.export({ type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: "test-only" }).toString();
    writeFileSync(join(root, "tree", "issuer.key"), encrypted);
    mkdirSync(join(root, "tree", "node_modules"));
    writeFileSync(join(root, "tree", "node_modules", "x.yaml"), REDIS);
    // A named pipe: opening it would block the audit forever (coreutils mkfifo; no Node API).
    execFileSync("mkfifo", [join(root, "tree", "pipe.yaml")]);
    // An alias: a link to a folder scanned elsewhere in the tree is not a loop.
    mkdirSync(join(root, "tree", "shared"));
    writeFileSync(join(root, "tree", "shared", "pubsub.yaml"), REDIS.replace("name: s", "name: p"));
    symlinkSync(join(root, "tree", "shared"), join(root, "tree", "alias"));
  });

  afterAll(() => {
    rmSync(root, { recursive: true, force: true });
  });

  it("handles symlink loops, pipes, binary, oversized and dangling files, and still audits the rest", () => {
    const result = auditPaths([join(root, "tree")], { maxFileBytes: 10_000 });
    const skipped = result.skipped.map((entry) => `${entry.file.slice(root.length + 1)}:${entry.reason}:${entry.detail}`).sort();
    expect(skipped).toEqual([
      "tree/dangling.yaml:unreadable:dangling symbolic link",
      "tree/huge.yaml:too-large:20141 bytes is over the 10000-byte limit",
      `tree/nested/back:symlink-loop:links back to ${join(root, "tree")}, a folder that contains it`,
      "tree/pipe.yaml:not-regular:named pipe, not read",
      "tree/self:symlink-loop:symbolic link points back at itself",
    ]);
    // Binary files are counted, not listed.
    expect(result.binaryFiles).toBe(1);
    // tree/alias is the same folder as tree/shared: read once (under the name reached first), not a loop.
    const findings = result.findings.map((finding) => `${finding.file.slice(root.length + 1)}:${finding.line}:${finding.ruleId}`);
    expect(findings).toEqual(["tree/alias/pubsub.yaml:6:MW-TLS-001", "tree/nested/store.yaml:6:MW-TLS-001", "tree/notes.txt:3:MW-SECRET-003"]);
  });

  it("reads a large file once the limit allows it", () => {
    const result = auditPaths([join(root, "tree", "huge.yaml")]);
    expect(result.skipped).toEqual([]);
    expect(result.findings.map((finding) => `${finding.line}:${finding.ruleId}`)).toEqual(["2006:MW-TLS-001"]);
  });

  it("reports a path that does not exist without throwing", () => {
    const result = auditPaths([join(root, "nope")]);
    expect(result.skipped).toEqual([{ file: join(root, "nope"), reason: "unreadable", detail: "does not exist" }]);
    expect(result.filesScanned).toBe(0);
  });

  it("never crashes on arbitrary text", () => {
    const samples = ["{", "]]]", "key: [", "!!binary |\n  ???", "a: *unknown", "&a [*a]", "? : :", "---\n---\n...\n", "\t\tx: y", "%YAML 9.9\n---\na: 1"];
    for (const [index, text] of samples.entries()) writeFileSync(join(root, `odd-${index}.yaml`), text);
    expect(() => auditPaths(samples.map((_, index) => join(root, `odd-${index}.yaml`)))).not.toThrow();
  });
});
