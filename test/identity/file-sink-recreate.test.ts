import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFileSink } from "../../src/identity/file-sink.ts";
import { prepareOutDir } from "../../src/identity/local-paths.ts";
import { createTestPki, manualIdentitySource, type TestPki } from "../helpers/test-pki.ts";

const NOBODY = 65534;

/** Reads `file` as uid/gid `uid` (a child process): its content, or undefined when refused. */
function readAs(uid: number, file: string): string | undefined {
  const r = spawnSync("cat", [file], { uid, gid: uid, encoding: "utf8" });
  return r.status === 0 ? r.stdout : undefined;
}

// Review atrest, LOW-5: `identity --out DIR --owner USER` prepares DIR 0755 so that USER reaches
// its files; removed while running, the sink re-created it 0700 (root's), and USER could no
// longer read its own key. It is now re-created as it was at the start: same mode, same owner.
describe("file sink: an output directory removed while running is re-created as it was", () => {
  let pki: TestPki;
  let work: string;
  beforeAll(async () => {
    // Giving files to another user needs root; this test must fail, not pass unseen, without it.
    if (process.getuid?.() !== 0) throw new Error("file-sink-recreate.test.ts needs root (uid 0): it hands files to uid 65534 and reads them as that user");
    pki = await createTestPki();
    work = mkdtempSync(join(tmpdir(), "mw-sink-recreate-"));
    chmodSync(work, 0o755); // uid 65534 must reach the directories inside
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("with an owner (identity --owner): 0755 and root's again, so the owner still reads its key", async () => {
    const dir = prepareOutDir(join(work, "for-nobody"), "--out", 0o755, NOBODY); // as `meshward identity --owner` does
    const source = manualIdentitySource(pki.snapshot());
    const files = startFileSink({ source, dir, owner: { uid: NOBODY, gid: NOBODY }, retryMs: { initial: 60_000, max: 60_000 } });
    try {
      await files.ready();
      expect(readAs(NOBODY, join(dir, "key.pem"))).toContain("PRIVATE KEY");
      rmSync(dir, { recursive: true });
      const next = pki.snapshot();
      source.rotate(next);
      await files.idle();
      expect(files.problem()).toBeUndefined();
      const stats = statSync(dir);
      expect((stats.mode & 0o7777).toString(8)).toBe("755");
      expect(stats.uid).toBe(0);
      expect(statSync(join(dir, "key.pem")).uid).toBe(NOBODY);
      expect(readAs(NOBODY, join(dir, "key.pem"))).toContain("PRIVATE KEY");
      expect(new X509Certificate(readAs(NOBODY, join(dir, "cert.pem")) ?? "").serialNumber).toBe(next.svid.serial);
    } finally {
      await files.close();
    }
  });

  it("without an owner: the mode the directory had (an operator's 0750), not a fixed one; one the sink made is 0700", async () => {
    const made = join(work, "operator-made");
    mkdirSync(made, { mode: 0o750 });
    chmodSync(made, 0o750);
    const own = join(work, "sink-made");
    for (const [dir, mode] of [[made, "750"], [own, "700"]] as const) {
      const source = manualIdentitySource(pki.snapshot());
      const files = startFileSink({ source, dir, retryMs: { initial: 60_000, max: 60_000 } });
      try {
        await files.ready();
        expect((statSync(dir).mode & 0o7777).toString(8)).toBe(mode);
        rmSync(dir, { recursive: true });
        source.rotate(pki.snapshot());
        await files.idle();
        expect((statSync(dir).mode & 0o7777).toString(8), dir).toBe(mode);
        expect(readFileSync(join(dir, "key.pem"), "utf8")).toContain("PRIVATE KEY");
      } finally {
        await files.close();
      }
    }
  });
});
