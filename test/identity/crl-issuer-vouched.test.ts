import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { caLayout, initAnchors } from "../../src/ca/anchors.ts";
import { rotateIssuer } from "../../src/ca/rotation.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { caSpiffeId, fetchFromCa } from "../../src/identity/ca-client.ts";
import { createIdentity, type CaIdentitySource } from "../../src/identity/ca-source.ts";
import { createIssuerCertificate, issueLeafCertificate, normalizeSerial, type Signer } from "../../src/pki/certificate.ts";
import { createCrl } from "../../src/pki/crl.ts";
import { decodePrivateKey, encodePrivateKey, generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem, toPem } from "../../src/pki/pem.ts";
import { startSwitchableForwarder } from "../helpers/forwarder.ts";

// A workload takes a CRL only from an issuer its CA vouches for (ca-source.ts #vouchedIssuers): its
// own issuer, one of the set in force, or the one that signed the CA's serving certificate, never
// one a root CRL lists as retired. It used to take a CRL under any issuer chain that verified to a
// held root: a CRL signed by another intermediate under the same root (one made for something
// else, or an issuer retired with --now whose key leaked), numbered above the set in force,
// replaced that set: the CRLs handed on (crl.pem, the Workload API) were the forged one, and every
// later set, numbered lower, was ignored. Here a front that answers as the CA (its serving
// certificate signed by the CA's first issuer, as a leaked key allows) adds such CRLs to the set.
const TD = "crl-vouched.test";
const silent = pino({ level: "silent" });
const HUGE = 1n << 120n;

type SetDocument = { crls: { issuer_sha256?: string; issuer_chain: string[]; current: boolean; root?: boolean; crl: string }[] };

describe("a workload takes CRLs only from issuers its CA vouches for", () => {
  let work: string;
  let dir: string;
  let ca: CaServer;
  let front: HttpsServer;
  let balancer: Awaited<ReturnType<typeof startSwitchableForwarder>>;
  let bundlePem: string;
  let firstIssuer: Signer;
  let root: Signer;
  /** CRL set entries the front adds to the CA's answer. */
  let added: SetDocument["crls"] = [];
  const sources: CaIdentitySource[] = [];

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-crl-vouched-"));
    dir = join(work, "ca");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const layout = caLayout(dir);
    bundlePem = readFileSync(layout.bundle, "utf8");
    const signerOf = (certPath: string, keyPath: string): Signer => {
      const der = certificatesFromPem(readFileSync(certPath, "utf8"))[0]!;
      return { certificate: new X509Certificate(der), der, privateKey: decodePrivateKey(readFileSync(keyPath, "utf8")) };
    };
    firstIssuer = signerOf(layout.issuerCert, layout.issuerKey);
    root = signerOf(layout.rootCert, layout.rootKey);
    ca = await startCaServer({ dir, config: caConfigSchema.parse({ listen: "127.0.0.1:0", workloadTtl: "1h", crlRefresh: "100ms", anchorPoll: "100ms", signingWorkers: 0, signRateLimit: false }), logger: silent });
    front = await startFront(firstIssuer);
    balancer = await startSwitchableForwarder();
    balancer.route = () => ca.port;
  });
  afterAll(async () => {
    for (const source of sources) await source.close();
    await balancer?.close();
    await new Promise((resolve) => front?.close(resolve));
    await ca?.close();
    rmSync(work, { recursive: true, force: true });
  });

  /** A front answering as the CA (its serving certificate signed by `signer`) that adds `added` to the CA's CRL set. */
  const startFront = async (signer: Signer): Promise<HttpsServer> => {
    const keys = generateKeyPair();
    const now = Date.now();
    const leaf = issueLeafCertificate({ spiffeId: caSpiffeId(TD), publicKey: keys.publicKey, signer, notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000) });
    const server = createHttpsServer({ key: encodePrivateKey(keys.privateKey), cert: toPem(leaf.der, "CERTIFICATE") + toPem(signer.der, "CERTIFICATE") }, (req, res) => {
      fetchFromCa({ address: ca.address, bundlePem, trustDomain: TD }, req.url ?? "/")
        .then((body) => {
          if (req.url === "/v1/crl?format=set") {
            const document = JSON.parse(body.toString("utf8")) as SetDocument;
            body = Buffer.from(JSON.stringify({ crls: [...document.crls, ...added] }));
          }
          res.writeHead(200).end(body);
        })
        .catch(() => res.writeHead(502).end());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return server;
  };
  const identity = async (appId: string, logged: Record<string, unknown>[] = []) => {
    const token = (await issueJoinToken(ca.store, { spiffeId: `spiffe://${TD}/ns/shop/${appId}`, ttlMs: 600_000 })).token;
    const logger = pino({ level: "info" }, { write: (line: string) => void logged.push(JSON.parse(line) as Record<string, unknown>) });
    const source = createIdentity({ ca: `127.0.0.1:${balancer.port}`, bundlePem, token, rng: () => 0.5, bundleRefreshMs: 3_600_000, backoff: { initialMs: 3_600_000, maxMs: 3_600_000 }, logger });
    sources.push(source);
    await source.ready();
    return source;
  };
  const crlBy = async (signer: Signer, number: bigint) => {
    const now = Date.now();
    return createCrl({ signer, entries: [], thisUpdate: new Date(now - 1000), nextUpdate: new Date(now + 3_600_000), crlNumber: number });
  };
  const entry = (der: Buffer, chain: Buffer[]) => ({ issuer_chain: chain.map((d) => d.toString("base64")), current: false, crl: der.toString("base64") });
  const hex = (crls: readonly Buffer[] | undefined) => (crls ?? []).map((c) => c.toString("hex"));
  const viaFront = async (source: CaIdentitySource, through = front) => {
    const port = (through.address() as { port: number }).port;
    balancer.route = () => port;
    try {
      await source.refreshBundle();
    } finally {
      balancer.route = () => ca.port;
    }
  };

  it("refuses a CRL signed by another intermediate under the same root (numbered above the set in force); takes the CA's next set", async () => {
    const logged: Record<string, unknown>[] = [];
    const source = await identity("web", logged);
    const held = source.current()!.bundle.crls!;
    const keys = generateKeyPair();
    const now = Date.now();
    const other = await createIssuerCertificate({ trustDomain: TD, publicKey: keys.publicKey, signer: root, notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000), commonName: "other" });
    const otherSigner: Signer = { certificate: new X509Certificate(other.der), der: other.der, privateKey: keys.privateKey };
    const forged = await crlBy(otherSigner, HUGE);
    added = [entry(forged, [other.der]), entry(forged, [])];
    await viaFront(source);
    expect(hex(source.current()!.bundle.crls)).not.toContain(forged.toString("hex"));
    expect(hex(source.current()!.bundle.crls)).toEqual(hex(held));
    expect(logged.some((line) => line.event === "crl-issuer-not-vouched" && line.named === otherSigner.certificate.fingerprint256)).toBe(true);
    added = [];

    // Acceptance: the CA's next set (a revocation) is taken, and a renewal is not refused.
    const victim = await identity("victim");
    await ca.store.revoke({ serial: victim.current()!.svid.serial, revokedAt: new Date(), reason: "keyCompromise" });
    await new Promise((resolve) => setTimeout(resolve, 400)); // the CA re-signs its CRL every 100 ms here
    await source.refreshBundle();
    expect(source.current()!.bundle.revokedSerials.has(victim.current()!.svid.serial)).toBe(true);
    expect(hex(source.current()!.bundle.crls)).not.toEqual(hex(held));
    const before = source.current()!.svid.serial;
    await source.renewNow();
    expect(source.current()!.svid.serial).not.toBe(before);
    expect(logged.some((line) => line.event === "renewal-issuer-retired")).toBe(false);
  });

  it("after rotate-issuer --now, refuses a front serving with the retired issuer at the handshake, and a CRL signed by the retired issuer (the root CRL lists it), named or not, from one serving with the current issuer; takes the new issuer's", async () => {
    const logged: Record<string, unknown>[] = [];
    const source = await identity("api", logged);
    const issuerOf = () => new X509Certificate(certificatesFromPem(source.current()!.svid.certChainPem)[1]!).fingerprint256;
    expect(issuerOf()).toBe(firstIssuer.certificate.fingerprint256);
    const installed = await rotateIssuer({ dir, now: new Date(), keepPrevious: false });
    const retiredSerial = normalizeSerial(firstIssuer.certificate.serialNumber);
    // Moved to the new issuer, and holding the root CRL that lists the retired one (it may come a CRL refresh later).
    for (const deadline = Date.now() + 15_000; issuerOf() !== installed.fingerprint256 || !source.current()!.bundle.revokedSerials.has(retiredSerial); ) {
      if (Date.now() > deadline) throw new Error("the workload did not move to the new issuer, or holds no root CRL listing the retired one");
      await new Promise((resolve) => setTimeout(resolve, 200));
      await source.refreshBundle(); // no CRL of its issuer any more: it renews (crl-issuer-changed)
    }
    // Taken: the new issuer's CRL and the root CRL that lists the retired one.
    const held = source.current()!.bundle.crls!;
    expect(held.length).toBeGreaterThanOrEqual(2);
    expect(source.current()!.bundle.revokedSerials.has(normalizeSerial(firstIssuer.certificate.serialNumber))).toBe(true);

    const forged = await crlBy(firstIssuer, HUGE);
    added = [entry(forged, [firstIssuer.der]), entry(forged, [])];
    // A front serving with the retired issuer itself is refused at the handshake (ca-client.ts
    // servingChainRefusal): nothing it serves is read.
    await expect(viaFront(source)).rejects.toMatchObject({ code: "E_CA_ISSUER_RETIRED" });
    expect(logged.some((line) => line.event === "ca-refused" && line.issuerSerial === normalizeSerial(firstIssuer.certificate.serialNumber))).toBe(true);
    expect(hex(source.current()!.bundle.crls)).toEqual(hex(held));
    // One serving with the current issuer (a compromised replica) that adds the retired issuer's CRL: not used.
    const layout = caLayout(dir);
    const currentFront = await startFront({ certificate: installed, der: Buffer.from(installed.raw), privateKey: decodePrivateKey(readFileSync(layout.issuerKey, "utf8")) });
    try {
      await viaFront(source, currentFront);
    } finally {
      await new Promise((resolve) => currentFront.close(resolve));
    }
    expect(hex(source.current()!.bundle.crls)).not.toContain(forged.toString("hex"));
    expect(hex(source.current()!.bundle.crls)).toEqual(hex(held));
    expect(logged.some((line) => line.event === "crl-issuer-not-vouched")).toBe(true);
    added = [];
    const before = source.current()!.svid.serial;
    await source.renewNow();
    expect(source.current()!.svid.serial).not.toBe(before);
    expect(issuerOf()).toBe(installed.fingerprint256);
  });
});
