import { X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { caLayout, initAnchors } from "../../src/ca/anchors.ts";
import { JwtSvidIssuer } from "../../src/ca/jwt-svid.ts";
import { directoryFiles } from "../../src/ca/anchor-files.ts";
import { readRetiredIssuers } from "../../src/ca/root-crl.ts";
import { rotateIssuer } from "../../src/ca/rotation.ts";
import { fetchFromCa } from "../../src/identity/ca-client.ts";
import { normalizeSerial } from "../../src/pki/certificate.ts";
import { decodePrivateKey } from "../../src/pki/keys.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";

/**
 * Review rotation (task 3), as an operator meets it: a running `meshward ca serve`; an ordinary
 * issuer rotation keeps the first issuer in issuer.prev.* and its JWT-SVID key published; then
 * `meshward ca rotate-issuer --now` (a real process) drops issuer.prev.* with the issuer it replaces.
 * Before, only the replaced issuer was listed as retired, so the first issuer's JWT key stayed in
 * /.well-known/jwks.json (and jwt-keys.json) up to the JWT-SVID TTL although its key was dropped
 * with the leaked one. Now every issuer whose key --now drops is retired and its JWT key withdrawn.
 * The ordinary rotation is made in-process (the CLI rotates without --now only at the thresholds).
 */
const TD = "now-previous.test";

describe("rotate-issuer --now after an ordinary rotation (real processes)", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-now-previous-"));
  const dir = join(work, "ca");
  let ca: LongRunning | undefined;
  afterAll(async () => {
    await ca?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("retires the issuer kept in issuer.prev.* too: listed in issuers-retired.json and its JWT-SVID key withdrawn from the JWKS", async () => {
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const layout = caLayout(dir);
    const bundlePem = readFileSync(layout.bundle, "utf8");
    const issuerNow = () => {
      const certificate = new X509Certificate(readFileSync(layout.issuerCert));
      return { certificate, privateKey: decodePrivateKey(readFileSync(layout.issuerKey, "utf8")), serial: normalizeSerial(certificate.serialNumber) };
    };
    const kidOf = async (issuer: ReturnType<typeof issuerNow>) =>
      (await new JwtSvidIssuer({ algorithm: "ES256", ttlMs: 3_600_000, issuer: () => "https://anything", clock: () => new Date() }).jwks(issuer)).keys[0]!.kid as string;
    const started = await startCli(["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0"], /listening on (\S+)/);
    ca = started;
    const address = started.match[1] as string;
    const kids = async () => (JSON.parse((await fetchFromCa({ address, bundlePem, trustDomain: TD }, "/.well-known/jwks.json")).toString("utf8")) as { keys: { kid: string }[] }).keys.map((k) => k.kid);
    const until = async (what: string, done: () => Promise<boolean>) => {
      for (const deadline = Date.now() + 15_000; !(await done()); ) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; JWKS: ${JSON.stringify(await kids())}`);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    };

    const first = issuerNow();
    const firstKid = await kidOf(first);
    await rotateIssuer({ dir, now: new Date(), keepPrevious: true });
    const second = issuerNow();
    await until("the ordinary rotation to be published (the first issuer's key kept)", async () => (await kids()).includes(await kidOf(second)));
    expect(await kids()).toContain(firstKid);

    const now = await runCli(["ca", "rotate-issuer", "--dir", dir, "--now"]);
    expect(now.code, now.stderr).toBe(0);
    const retired = readRetiredIssuers(directoryFiles, layout).map((r) => r.certificate.fingerprint256);
    expect(retired.sort()).toEqual([first.certificate.fingerprint256, second.certificate.fingerprint256].sort());
    expect(existsSync(layout.previousIssuerCert) || existsSync(layout.previousIssuerKey)).toBe(false);

    const third = await kidOf(issuerNow());
    await until("the JWKS to hold the new issuer's key alone", async () => {
      const published = await kids();
      return published.length === 1 && published[0] === third;
    });
    expect(readFileSync(join(dir, "jwt-keys.json"), "utf8")).not.toContain(firstKid);
  });
});
