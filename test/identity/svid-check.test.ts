import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { requestCertificate, type SignedCertificate } from "../../src/identity/ca-client.ts";
import { checkSignedSvid } from "../../src/identity/svid-check.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";

// What a workload does with a CA's answer. The CA here is a real meshward CA; the misbehaving
// answers (a certificate for another key, an SVID of another trust domain) are what a compromised
// or misconfigured replica would send, and no real CA of ours sends them, so the check is driven
// with a real answer and the wrong expectation (another key, another trust domain).
const TD = "svid-check.test";
const ID = `spiffe://${TD}/ns/shop/cart`;

describe("checking what the CA signed before using it", () => {
  let work: string;
  let server: CaServer;
  let bundlePem: string;
  let otherBundlePem: string;
  const asked = generateKeyPair();
  let signed: SignedCertificate;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-svid-check-"));
    const dir = join(work, "ca");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    server = await startCaServer({ dir, config: caConfigSchema.parse({ listen: "127.0.0.1:0" }), logger: pino({ level: "silent" }) });
    bundlePem = readFileSync(join(dir, "bundle.pem"), "utf8");
    await initAnchors({ dir: join(work, "other-ca"), trustDomain: TD, now: new Date() });
    otherBundlePem = readFileSync(join(work, "other-ca", "bundle.pem"), "utf8");
    const token = (await issueJoinToken(server.store, { spiffeId: ID, ttlMs: 600_000 })).token;
    signed = await requestCertificate(
      { address: `127.0.0.1:${server.port}`, bundlePem, trustDomain: TD },
      { csrPem: await createCsr({ keyPair: asked, dnsNames: [] }), token, validator: "JOIN_TOKEN", namespace: "shop", appId: "cart" },
    );
  });
  afterAll(async () => {
    await server?.close();
    rmSync(work, { recursive: true, force: true });
  });

  const check = (overrides: Partial<Parameters<typeof checkSignedSvid>[0]> = {}) =>
    checkSignedSvid({ certChainPem: signed.certChainPem, rootsPem: signed.bundlePem, privateKey: asked.privateKey, trustDomain: TD, expectedId: ID, at: new Date(), ...overrides });

  it("accepts the certificate for the key this workload asked for", () => {
    expect(check().spiffeId).toBe(ID);
    expect(check({ expectedId: undefined }).spiffeId).toBe(ID);
  });

  it("refuses a certificate for another key (a file sink would write a mismatched pair)", () => {
    expect(() => check({ privateKey: generateKeyPair().privateKey })).toThrow(expect.objectContaining({ code: "E_KEY_MISMATCH" }));
  });

  it("refuses an SVID of another trust domain, even with no namespace or app ID configured", () => {
    expect(() => check({ trustDomain: "other.test", expectedId: undefined })).toThrow(expect.objectContaining({ code: "E_TRUST_DOMAIN_MISMATCH" }));
  });

  it("refuses another workload's SPIFFE ID", () => {
    expect(() => check({ expectedId: `spiffe://${TD}/ns/shop/orders` })).toThrow(expect.objectContaining({ code: "E_SPIFFE_MISMATCH" }));
  });

  it("refuses a chain that does not verify to the roots, or has expired", () => {
    expect(() => check({ rootsPem: bundlePem })).not.toThrow();
    expect(() => check({ rootsPem: otherBundlePem })).toThrow(expect.objectContaining({ code: "E_CHAIN_UNTRUSTED" }));
    expect(() => check({ at: new Date(Date.now() + 400 * 24 * 3600_000) })).toThrow(expect.objectContaining({ code: "E_CERT_EXPIRED" }));
    expect(() => check({ certChainPem: "" })).toThrow(expect.objectContaining({ code: "E_PEM_INVALID" }));
  });
});
