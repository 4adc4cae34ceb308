import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, SignJWT } from "jose";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { caLayout, initAnchors } from "../../src/ca/anchors.ts";
import { rotateIssuer } from "../../src/ca/rotation.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { caSpiffeId, fetchFromCa, fetchFromCaWithChain, requestCertificate } from "../../src/identity/ca-client.ts";
import { rootCrlRevocations } from "../../src/identity/ca-source.ts";
import { createJwtSvidValidator } from "../../src/index.ts";
import { issueLeafCertificate, normalizeSerial, type Signer } from "../../src/pki/certificate.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { decodePrivateKey, encodePrivateKey, generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem, toPem } from "../../src/pki/pem.ts";
import { startSwitchableForwarder } from "../helpers/forwarder.ts";

// A JWT-SVID validator built without `ca.revokedSerials` (an app that validates tokens and holds no
// identity source) fetched the CA's JWKS from whoever presented the CA's SPIFFE ID under a held
// root. After `rotate-issuer --now` whoever holds the retired issuer's key can mint such a
// certificate, serve its own JWKS, and have every token it forges accepted. The validator now keeps
// the serials the CA's root CRLs list (fetched with its keys) and refuses that server at the
// handshake, as an identity source does.
const TD = "jwt-svid-ca-refused.test";

describe("a JWT-SVID validator without revokedSerials refuses a CA endpoint serving under a retired issuer", () => {
  let work: string;
  let dir: string;
  let ca: CaServer;
  let bundlePem: string;
  let retired: Signer;
  let impostor: { server: Server; port: number; requests: string[] };
  let balancer: Awaited<ReturnType<typeof startSwitchableForwarder>>;
  const forgedKey = generateKeyPairSync("ec", { namedCurve: "P-256" });

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-jwt-svid-ca-refused-"));
    dir = join(work, "ca");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const layout = caLayout(dir);
    bundlePem = readFileSync(layout.bundle, "utf8");
    // The key that will leak: kept in memory before the rotation.
    const der = certificatesFromPem(readFileSync(layout.issuerCert, "utf8"))[0]!;
    retired = { certificate: new X509Certificate(der), der, privateKey: decodePrivateKey(readFileSync(layout.issuerKey, "utf8")) };
    ca = await startCaServer({ dir, config: caConfigSchema.parse({ listen: "127.0.0.1:0", workloadTtl: "1h", crlRefresh: "100ms", anchorPoll: "100ms", signingWorkers: 0, signRateLimit: false }), logger: pino({ level: "silent" }) });

    // The impostor: the CA's SPIFFE ID under the retired issuer, publishing its own key.
    const keys = generateKeyPair();
    const leaf = issueLeafCertificate({ spiffeId: caSpiffeId(TD), publicKey: keys.publicKey, signer: retired, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 3_600_000) });
    const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(forgedKey.publicKey)), kid: "forged", alg: "ES256", use: "sig" }] });
    const requests: string[] = [];
    const server = createServer({ key: encodePrivateKey(keys.privateKey), cert: toPem(leaf.der, "CERTIFICATE") + toPem(retired.der, "CERTIFICATE") }, (req, res) => {
      requests.push(`${req.method} ${req.url}`);
      res.setHeader("content-type", "application/json").end(jwks);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    impostor = { server, port: (server.address() as { port: number }).port, requests };
    balancer = await startSwitchableForwarder();
    balancer.route = () => ca.port;
  });
  afterAll(async () => {
    await balancer?.close();
    await new Promise<void>((resolve) => (impostor ? impostor.server.close(() => resolve()) : resolve()));
    await ca?.close();
    rmSync(work, { recursive: true, force: true });
  });

  const forged = () =>
    new SignJWT({}).setProtectedHeader({ alg: "ES256", kid: "forged", typ: "JWT" }).setSubject(`spiffe://${TD}/ns/prod/admin`).setAudience("payments").setIssuedAt().setExpirationTime("5m").sign(forgedKey.privateKey);
  const outcome = (validator: ReturnType<typeof createJwtSvidValidator>, jwt: string) =>
    validator.validate(jwt, "payments").then(
      (v) => `accepted ${v.spiffeId}`,
      (error: { code?: string }) => `refused ${error.code}`,
    );

  it("refuses the impostor's keys (E_CA_ISSUER_RETIRED, no request reaches it) once the CA's root CRL lists the issuer; the genuine CA's tokens still pass", async () => {
    const validator = createJwtSvidValidator({ ca: { address: `127.0.0.1:${balancer.port}`, bundlePem, trustDomain: TD }, keysMaxAgeMs: 0, refreshCooldownMs: 0 });
    await validator.refresh();

    const installed = await rotateIssuer({ dir, now: new Date(), keepPrevious: false });
    const retiredSerial = normalizeSerial(retired.certificate.serialNumber);
    const direct = { address: ca.address, bundlePem, trustDomain: TD };
    for (const deadline = Date.now() + 15_000; ; ) {
      const listed = rootCrlRevocations(await fetchFromCa(direct, "/v1/crl?format=set"), bundlePem).has(retiredSerial);
      const serving = (await fetchFromCaWithChain(direct, "/readyz")).servingChain[1];
      if (listed && serving !== undefined && new X509Certificate(serving).fingerprint256 === installed.fingerprint256) break;
      if (Date.now() > deadline) throw new Error("the CA did not publish the root CRL listing the retired issuer, or serve with the new one");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    // One key fetch from the genuine CA since the retirement: the validator now holds the root CRL.
    await validator.refresh();

    balancer.route = () => impostor.port;
    const refused = await validator.refresh().then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toMatchObject({ code: "E_CA_ISSUER_RETIRED", message: expect.stringContaining(retiredSerial) });
    expect(impostor.requests).toEqual([]);
    expect(await outcome(validator, await forged())).toMatch(/^refused E_/);
    expect(impostor.requests).toEqual([]);

    // The genuine CA, under the new issuer: its keys are fetched and its tokens pass.
    balancer.route = () => ca.port;
    await validator.refresh();
    const token = (await issueJoinToken(ca.store, { spiffeId: `spiffe://${TD}/ns/shop/web`, ttlMs: 600_000 })).token;
    const signed = await requestCertificate(direct, { csrPem: await createCsr({ keyPair: generateKeyPair() }), token, validator: "JOIN_TOKEN", namespace: "shop", appId: "web", jwtAudiences: ["payments"] });
    expect(await outcome(validator, signed.jwtSvid!)).toBe(`accepted spiffe://${TD}/ns/shop/web`);
  });
});
