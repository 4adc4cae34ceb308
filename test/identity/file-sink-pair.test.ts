import { execFileSync } from "node:child_process";
import { createHash, createPublicKey, X509Certificate, type KeyObject } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFileSink, type FileSinkEvent } from "../../src/identity/file-sink.ts";
import { encodePrivateKey } from "../../src/pki/keys.ts";
import { createTestPki, manualIdentitySource, type TestPki } from "../helpers/test-pki.ts";

function spkiHash(key: string | KeyObject): string {
  const publicKey = typeof key !== "string" && key.type === "public" ? key : createPublicKey(key);
  return createHash("sha256").update(publicKey.export({ type: "spki", format: "der" })).digest("hex");
}

/** Sets this process's soft RLIMIT_FSIZE (bytes; "unlimited" to lift it) with util-linux prlimit: the kernel then fails a write past it with EFBIG. */
function fileSizeLimit(soft: number | "unlimited"): void {
  execFileSync("prlimit", ["--pid", String(process.pid), `--fsize=${soft}:`]);
}

// Review of workload identity, MEDIUM 3: a write that fails after key.pem was renamed into place
// left the new key beside the old certificate. The failure here is real: the kernel refuses to
// grow a file past this process's RLIMIT_FSIZE (EFBIG), set between the key's size and the
// certificate chain's, exactly as in the review's repro (prlimit on the running identity).
describe("file sink: a failed write keeps the old cert/key pair", () => {
  let pki: TestPki;
  let root: string;
  beforeAll(async () => {
    pki = await createTestPki();
    root = mkdtempSync(join(tmpdir(), "mw-sink-pair-"));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it("leaves cert.pem and key.pem of the old identity, matching, and no temp files, then writes the new pair once it can", async () => {
    const first = pki.snapshot();
    const source = manualIdentitySource(first);
    const events: FileSinkEvent[] = [];
    const dir = join(root, "out");
    const files = startFileSink({ source, dir, retryMs: { initial: 60_000, max: 60_000 }, onEvent: (event) => events.push(event) });
    try {
      await files.ready();
      await files.idle();

      const second = pki.snapshot();
      const keyBytes = Buffer.byteLength(encodePrivateKey(second.svid.privateKey));
      const bundleBytes = Buffer.byteLength(second.bundle.rootsPem);
      const certBytes = Buffer.byteLength(second.svid.certChainPem);
      const limit = certBytes - 1;
      expect(limit).toBeGreaterThan(Math.max(keyBytes, bundleBytes)); // the key and the bundle fit, the chain does not
      fileSizeLimit(limit);
      try {
        source.rotate(second);
        await files.idle();
      } finally {
        fileSizeLimit("unlimited");
      }
      const failed = events.find((event) => event.type === "write-failed") as { error: Error } | undefined;
      expect(failed?.error.message).toMatch(/EFBIG|too large/);
      const certOnDisk = new X509Certificate(readFileSync(join(dir, "cert.pem")));
      expect(certOnDisk.serialNumber).toBe(first.svid.serial);
      expect(spkiHash(readFileSync(join(dir, "key.pem"), "utf8"))).toBe(spkiHash(certOnDisk.publicKey));
      expect(readdirSync(dir).filter((name) => name.endsWith(".tmp"))).toEqual([]);

      // Space again: the next write puts the new pair in place.
      source.rotate(pki.snapshot());
      await files.idle();
      const now = new X509Certificate(readFileSync(join(dir, "cert.pem")));
      expect(now.serialNumber).not.toBe(first.svid.serial);
      expect(spkiHash(readFileSync(join(dir, "key.pem"), "utf8"))).toBe(spkiHash(now.publicKey));
    } finally {
      await files.close();
    }
  });

  it("creates the output directory again (0700) when it was removed while running, and writes the pair there", async () => {
    const source = manualIdentitySource(pki.snapshot());
    const dir = join(root, "gone");
    const files = startFileSink({ source, dir, retryMs: { initial: 60_000, max: 60_000 } });
    try {
      await files.ready();
      await files.idle();
      rmSync(dir, { recursive: true });
      const next = pki.snapshot();
      source.rotate(next);
      await files.idle();
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      expect(new X509Certificate(readFileSync(join(dir, "cert.pem"))).serialNumber).toBe(next.svid.serial);
      expect(spkiHash(readFileSync(join(dir, "key.pem"), "utf8"))).toBe(spkiHash(next.svid.privateKey));
      expect(statSync(join(dir, "key.pem")).mode & 0o777).toBe(0o600);
    } finally {
      await files.close();
    }
  });
});
