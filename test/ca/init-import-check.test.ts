import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startCli } from "../helpers/cli.ts";
import { makeDaprAnchors } from "../dapr/openssl-anchors.ts";

// `ca init` refuses at import whatever `ca serve` would refuse (issue 16): before, an Ed448
// issuer (or one without keyCertSign) imported fine and the server then failed or issued leaves
// nobody could verify. Anchors are made by openssl, shaped like Dapr's dapr-trust-bundle Secret.
describe("ca init --root-cert/--issuer-cert/--issuer-key checks what ca serve needs", () => {
  let work: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), "meshward-import-check-"));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  const init = (anchors: { rootCert: string; issuerCert: string; issuerKey: string }, dir: string) =>
    runCli(["ca", "init", "--trust-domain", "public", "--dir", dir, "--root-cert", anchors.rootCert, "--issuer-cert", anchors.issuerCert, "--issuer-key", anchors.issuerKey]);

  it("refuses an Ed448 issuer (ca serve cannot sign with it) and writes nothing", async () => {
    const anchors = makeDaprAnchors(join(work, "ed448"), { key: "ed448" });
    const dir = join(work, "ca-ed448");
    const r = await init(anchors, dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_IMPORT_INVALID/);
    expect(r.stderr).toMatch(/Ed448/);
    expect(r.stderr).toMatch(/meshward ca serve/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(existsSync(join(dir, "ca.json"))).toBe(false);
    expect(existsSync(join(dir, "issuer.key"))).toBe(false);
  });

  it("refuses an issuer without keyCertSign (its leaves would not verify)", async () => {
    const anchors = makeDaprAnchors(join(work, "no-certsign"), { key: "p256", issuerKeyUsage: "digitalSignature,cRLSign" });
    const r = await init(anchors, join(work, "ca-no-certsign"));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_IMPORT_INVALID/);
    // OpenSSL's X509_check_ca (node's X509Certificate.ca) already says no CA without keyCertSign.
    expect(r.stderr).toMatch(/not a CA certificate/);
  });

  it("refuses an Ed448 issuer in ca import-issuer too, and keeps the current one", async () => {
    const good = makeDaprAnchors(join(work, "p256"), { key: "p256" });
    const dir = join(work, "ca-p256");
    expect((await init(good, dir)).code).toBe(0);
    const bad = makeDaprAnchors(join(work, "ed448-2"), { key: "ed448" });
    const r = await runCli(["ca", "import-issuer", "--dir", dir, "--issuer-cert", bad.issuerCert, "--issuer-key", bad.issuerKey]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_IMPORT_INVALID/);
  });

  it("accepts Dapr >= 1.18 Ed25519 anchors, and ca serve then starts with them", async () => {
    const anchors = makeDaprAnchors(join(work, "ed25519"), { key: "ed25519" });
    const dir = join(work, "ca-ed25519");
    const r = await init(anchors, dir);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/imported root/);
    const served = await startCli(["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0"], /listening on (\S+) as (\S+)/);
    try {
      expect(served.match[2]).toBe("spiffe://public/ns/meshward-system/meshward-ca");
    } finally {
      await served.stop();
    }
  }, 60_000);
});
