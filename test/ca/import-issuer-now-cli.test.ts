import { X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { caLayout } from "../../src/ca/anchors.ts";
import { createIssuerCertificate } from "../../src/pki/certificate.ts";
import { decodePrivateKey, encodePrivateKey, generateKeyPair } from "../../src/pki/keys.ts";
import { toPem } from "../../src/pki/pem.ts";
import { runCli } from "../helpers/cli.ts";

/*
 * `meshward ca import-issuer` keeps the replaced issuer as issuer.prev.* (it signs its own CRL
 * while its certificates may be valid); `--now`, as with rotate-issuer, retires it at once (the
 * answer to a leaked issuer key under an external root). Real `meshward` processes, no CA running.
 */
const TD = "import-issuer-now.test";
const DAY = 86_400_000;
let work: string;
let dir: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "meshward-import-now-"));
  dir = join(work, "ca");
  const init = await runCli(["ca", "init", "--trust-domain", TD, "--dir", dir]);
  expect(init.code, init.stderr).toBe(0);
}, 60_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A new issuer signed by the CA's root, written to files as an external root's owner would hand them over (key generated now, in the temp dir). */
async function newIssuerFiles(name: string): Promise<{ cert: string; key: string; fingerprint: string }> {
  const layout = caLayout(dir);
  const root = new X509Certificate(readFileSync(layout.rootCert));
  const rootKey = decodePrivateKey(readFileSync(layout.rootKey, "utf8"));
  const keys = generateKeyPair();
  const issued = await createIssuerCertificate({ trustDomain: TD, publicKey: keys.publicKey, signer: { certificate: root, der: root.raw, privateKey: rootKey }, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 30 * DAY) });
  const cert = join(work, `${name}.pem`);
  const key = join(work, `${name}.key`);
  writeFileSync(cert, toPem(issued.der, "CERTIFICATE"));
  writeFileSync(key, encodePrivateKey(keys.privateKey), { mode: 0o600 });
  return { cert, key, fingerprint: new X509Certificate(issued.der).fingerprint256 };
}

const fingerprintOf = (file: string) => new X509Certificate(readFileSync(file)).fingerprint256;

describe("meshward ca import-issuer --now", () => {
  it("keeps the replaced issuer as issuer.prev.* by default; --now retires it at once; --help names it", async () => {
    const layout = caLayout(dir);
    const initial = fingerprintOf(layout.issuerCert);

    const first = await newIssuerFiles("issuer-2");
    const kept = await runCli(["ca", "import-issuer", "--dir", dir, "--issuer-cert", first.cert, "--issuer-key", first.key]);
    expect(kept.code, kept.stderr).toBe(0);
    expect(kept.stdout).toMatch(/the old issuer keeps signing its CRL/);
    expect(fingerprintOf(layout.issuerCert)).toBe(first.fingerprint);
    expect(fingerprintOf(layout.previousIssuerCert)).toBe(initial);
    expect(existsSync(layout.previousIssuerKey)).toBe(true);

    const second = await newIssuerFiles("issuer-3");
    const now = await runCli(["ca", "import-issuer", "--dir", dir, "--issuer-cert", second.cert, "--issuer-key", second.key, "--now"]);
    expect(now.code, now.stderr).toBe(0);
    expect(now.stdout).toMatch(/the old issuer's CRL is no longer published/);
    expect(fingerprintOf(layout.issuerCert)).toBe(second.fingerprint);
    // Neither the issuer it replaced nor the one kept before stays to sign a CRL.
    expect(existsSync(layout.previousIssuerCert)).toBe(false);
    expect(existsSync(layout.previousIssuerKey)).toBe(false);

    const help = await runCli(["ca", "import-issuer", "--help"]);
    expect(help.stdout).toMatch(/--now\s+retire the old issuer at once/);
  }, 60_000);
});
