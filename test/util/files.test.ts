import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { assertPrivateFile } from "../../src/util/files.ts";

/**
 * Key file permissions. The exception is a Kubernetes Secret volume with fsGroup: the kubelet
 * makes its files root-owned, group <fsGroup>, mode defaultMode (0440), and the CA (uid 10001,
 * in that group) reads them but cannot chmod them. Files owned by another user are made with
 * chown, so these cases need root (the test machines run as root; said plainly, not skipped).
 */
describe("assertPrivateFile", () => {
  const dir = mkdtempSync(join(tmpdir(), "meshward-files-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, mode: number, owner?: { uid: number; gid: number }) => {
    const path = join(dir, name);
    writeFileSync(path, "secret");
    if (owner !== undefined) chownSync(path, owner.uid, owner.gid);
    chmodSync(path, mode);
    return path;
  };

  it("accepts owner-only files and refuses group- or world-accessible ones of this user, naming the fix", () => {
    expect(() => assertPrivateFile(file("a", 0o600))).not.toThrow();
    expect(() => assertPrivateFile(file("b", 0o400))).not.toThrow();
    for (const mode of [0o640, 0o644, 0o604, 0o660, 0o440]) {
      expect(() => assertPrivateFile(file(`m${mode.toString(8)}`, mode), "issuer key file")).toThrow(/E_KEY_PERMISSIONS|accessible by group or others.*chmod 600/);
    }
  });

  it("accepts the Kubernetes Secret shape (another owner, a group this process is in, 0440), and nothing looser", () => {
    expect(process.getuid?.()).toBe(0); // chown to another user needs root
    const ourGroup = process.getgid!();
    expect(() => assertPrivateFile(file("k8s", 0o440, { uid: 12345, gid: ourGroup }))).not.toThrow();
    expect(() => assertPrivateFile(file("k8s-world", 0o444, { uid: 12345, gid: ourGroup }))).toThrow(/accessible by group or others/);
    expect(() => assertPrivateFile(file("k8s-group-write", 0o460, { uid: 12345, gid: ourGroup }))).toThrow(/accessible by group or others/);
    expect(() => assertPrivateFile(file("k8s-other-group", 0o440, { uid: 12345, gid: 54321 }))).toThrow(/accessible by group or others/);
  });
});
