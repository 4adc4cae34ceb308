import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createSecureServer, type Http2SecureServer } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { caLayout, initAnchors } from "../../src/ca/anchors.ts";
import { rotateIssuer } from "../../src/ca/rotation.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { isMeshwardError } from "../../src/errors.ts";
import { caSpiffeId, fetchFromCa, servingChainRefusal } from "../../src/identity/ca-client.ts";
import { avoidCaEndpoint } from "../../src/identity/ca-endpoints.ts";
import { createIdentity, type CaIdentitySource } from "../../src/identity/ca-source.ts";
import { instrumentIdentity } from "../../src/identity/instrument.ts";
import { createMeshMetrics, createMetrics, type Metrics } from "../../src/telemetry/metrics.ts";
import { issueLeafCertificate, normalizeSerial, type Signer } from "../../src/pki/certificate.ts";
import { decodePrivateKey, encodePrivateKey, generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem, toPem } from "../../src/pki/pem.ts";
import { startSwitchableForwarder } from "../helpers/forwarder.ts";

// After `rotate-issuer --now` (the answer to a leaked issuer key) the root CRL lists the retired
// issuer. Whoever holds its key can mint a certificate with the CA's own SPIFFE ID: the workload's
// connection to the CA (sign, bundle, CRL) must refuse it at the handshake, as peers do, before a
// token or CSR goes out, and go on with the genuine CA (another endpoint). It used to check the
// CA's SPIFFE ID and its chain to a held root only, so such an impostor stood in for the CA.
const TD = "ca-serving-retired.test";
const silent = pino({ level: "silent" });

/**
 * A CA endpoint that presents the CA's SPIFFE ID with a certificate `signer` signed (TLS 1.3,
 * session tickets on: Node's default): GETs are answered with the genuine CA's answers, sign calls
 * (gRPC) are recorded and answered UNAVAILABLE. Counts connections and resumed sessions.
 */
async function startImpostor(signer: Signer, genuine: () => string, bundlePem: string) {
  const keys = generateKeyPair();
  const now = Date.now();
  const leaf = issueLeafCertificate({ spiffeId: caSpiffeId(TD), publicKey: keys.publicKey, signer, notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000) });
  const seen = { requests: [] as string[], connections: 0, resumed: 0 };
  const server: Http2SecureServer = createSecureServer({ key: encodePrivateKey(keys.privateKey), cert: toPem(leaf.der, "CERTIFICATE") + toPem(signer.der, "CERTIFICATE"), allowHTTP1: true }, (req, res) => {
    seen.requests.push(`${req.method} ${req.url}`);
    if (req.method !== "GET") {
      req.resume();
      res.writeHead(200, { "content-type": "application/grpc", "grpc-status": "14", "grpc-message": "impostor" }).end();
      return;
    }
    fetchFromCa({ address: genuine(), bundlePem, trustDomain: TD }, req.url ?? "/")
      .then((body) => res.writeHead(200).end(body))
      .catch(() => res.writeHead(502).end());
  });
  server.on("connection", () => seen.connections++);
  // A resumed session completes here (the client skips its identity checks on one).
  server.on("secureConnection", (socket: TLSSocket) => {
    if (socket.isSessionReused()) seen.resumed++;
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    seen,
    serial: normalizeSerial(leaf.serial),
    port: (server.address() as { port: number }).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe("a workload refuses a CA endpoint whose serving chain the revocations in force revoke", () => {
  let work: string;
  let dir: string;
  let ca: CaServer;
  let bundlePem: string;
  let retired: Signer;
  let balancer: Awaited<ReturnType<typeof startSwitchableForwarder>>;
  let impostor: Awaited<ReturnType<typeof startImpostor>>;
  const closers: (() => Promise<void>)[] = [];
  const sources: CaIdentitySource[] = [];

  const signerOf = (certPath: string, keyPath: string): Signer => {
    const der = certificatesFromPem(readFileSync(certPath, "utf8"))[0]!;
    return { certificate: new X509Certificate(der), der, privateKey: decodePrivateKey(readFileSync(keyPath, "utf8")) };
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-ca-serving-retired-"));
    dir = join(work, "ca");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const layout = caLayout(dir);
    bundlePem = readFileSync(layout.bundle, "utf8");
    // The key that will leak: kept in memory before the rotation (the CA directory is a temporary one).
    retired = signerOf(layout.issuerCert, layout.issuerKey);
    ca = await startCaServer({ dir, config: caConfigSchema.parse({ listen: "127.0.0.1:0", workloadTtl: "1h", crlRefresh: "100ms", anchorPoll: "100ms", signingWorkers: 0, signRateLimit: false }), logger: silent });
    impostor = await startImpostor(retired, () => ca.address, bundlePem);
    closers.push(impostor.close);
    balancer = await startSwitchableForwarder();
    balancer.route = () => ca.port;
  });
  afterAll(async () => {
    for (const source of sources) await source.close();
    for (const close of closers) await close();
    await balancer?.close();
    await ca?.close();
    rmSync(work, { recursive: true, force: true });
  });

  const identity = async (appId: string, ca: string, logged: Record<string, unknown>[]) => {
    const token = (await issueJoinToken(caServer().store, { spiffeId: `spiffe://${TD}/ns/shop/${appId}`, ttlMs: 600_000 })).token;
    const logger = pino({ level: "info" }, { write: (line: string) => void logged.push(JSON.parse(line) as Record<string, unknown>) });
    const source = createIdentity({ ca, bundlePem, token, rng: () => 0.5, bundleRefreshMs: 3_600_000, backoff: { initialMs: 3_600_000, maxMs: 3_600_000 }, logger });
    sources.push(source);
    await source.ready();
    return source;
  };
  const caServer = () => ca;
  /** The identity's meshward_identity_ca_refused_total by reason (the `reason` label). */
  const instrumented = (source: CaIdentitySource) => {
    const metrics: Metrics = createMetrics();
    instrumentIdentity(source, createMeshMetrics(metrics));
    return async (reason: string) => Number(new RegExp(`^meshward_identity_ca_refused_total\\{reason="${reason}"\\} (\\d+)$`, "m").exec(await metrics.registry.metrics())?.[1] ?? -1);
  };
  const issuerOf = (source: CaIdentitySource) => new X509Certificate(certificatesFromPem(source.current()!.svid.certChainPem)[1]!).fingerprint256;
  const refusalOf = async (promise: Promise<unknown>) => {
    try {
      await promise;
    } catch (error) {
      return error;
    }
    return undefined;
  };

  it("after rotate-issuer --now, refuses a CA impostor serving with the retired issuer's key (bundle, CRL, sign; no session resumed), and keeps working with the genuine CA", async () => {
    const logged: Record<string, unknown>[] = [];
    const source = await identity("web", `127.0.0.1:${balancer.port}`, logged);
    const refusedCount = instrumented(source);
    expect(await refusedCount("issuer_retired")).toBe(0);
    expect(await refusedCount("cert_revoked")).toBe(0);
    expect(issuerOf(source)).toBe(retired.certificate.fingerprint256);

    // Before the retirement the impostor's chain is as good as the CA's: a refresh through it passes.
    balancer.route = () => impostor.port;
    await source.refreshBundle();
    balancer.route = () => ca.port;
    expect(impostor.seen.requests.length).toBeGreaterThan(0);
    const connectionsBefore = impostor.seen.connections;

    const installed = await rotateIssuer({ dir, now: new Date(), keepPrevious: false });
    const retiredSerial = normalizeSerial(retired.certificate.serialNumber);
    for (const deadline = Date.now() + 15_000; issuerOf(source) !== installed.fingerprint256 || !source.current()!.bundle.revokedSerials.has(retiredSerial); ) {
      if (Date.now() > deadline) throw new Error("the workload did not move to the new issuer, or holds no root CRL listing the retired one");
      await new Promise((resolve) => setTimeout(resolve, 200));
      await source.refreshBundle();
    }
    const held = source.current()!;

    // Through the impostor: every request is refused at the handshake, nothing reaches it.
    balancer.route = () => impostor.port;
    const requestsBefore = impostor.seen.requests.length;
    const refused = await refusalOf(source.refreshBundle());
    expect(isMeshwardError(refused, "E_CA_ISSUER_RETIRED")).toBe(true);
    const message = (refused as Error).message;
    expect(message).toContain(retiredSerial);
    expect(message).not.toMatch(/BEGIN|PRIVATE/);
    await source.renewNow(); // a renewal through it fails (logged, retried with backoff)
    balancer.route = () => ca.port;
    expect(impostor.seen.requests.slice(requestsBefore)).toEqual([]); // no token, no CSR, no bundle or CRL request
    expect(impostor.seen.connections).toBeGreaterThan(connectionsBefore); // it was dialled, and refused at the handshake
    expect(impostor.seen.resumed).toBe(0); // the session from before the retirement was not resumed
    expect(source.current()!.svid.serial).toBe(held.svid.serial);
    expect(source.current()!.bundle.crls).toEqual(held.bundle.crls);
    const refusals = logged.filter((line) => line.event === "ca-refused");
    expect(refusals.length).toBeGreaterThanOrEqual(2);
    expect(refusals.every((line) => line.reason === "E_CA_ISSUER_RETIRED" && line.issuerSerial === retiredSerial && line.ca === `127.0.0.1:${balancer.port}`)).toBe(true);
    // Each refused attempt is counted once, by reason.
    expect(await refusedCount("issuer_retired")).toBe(refusals.length);
    expect(await refusedCount("cert_revoked")).toBe(0);
    expect(logged.some((line) => line.event === "renewal-failed" && line.reason === "E_CA_ISSUER_RETIRED")).toBe(true);
    expect(JSON.stringify(logged)).not.toMatch(/BEGIN|PRIVATE/);

    // The genuine CA still serves: a refresh and a renewal onto the new issuer.
    await source.refreshBundle();
    await source.renewNow();
    expect(source.current()!.svid.serial).not.toBe(held.svid.serial);
    expect(issuerOf(source)).toBe(installed.fingerprint256);

    // Several CA endpoints: the impostor, tried first, is refused, and the next endpoint serves.
    const ha = `127.0.0.1:${impostor.port},${ca.address}`;
    const haLogged: Record<string, unknown>[] = [];
    const haSource = await identity("api", ha, haLogged);
    await haSource.refreshBundle();
    expect(haSource.current()!.bundle.revokedSerials.has(retiredSerial)).toBe(true);
    const haRequests = impostor.seen.requests.length;
    avoidCaEndpoint(ha, ca.address); // the next call starts at the impostor
    const haBefore = haSource.current()!.svid.serial;
    await haSource.renewNow();
    expect(haSource.current()!.svid.serial).not.toBe(haBefore);
    expect(issuerOf(haSource)).toBe(installed.fingerprint256);
    expect(haLogged.some((line) => line.event === "ca-refused" && line.ca === `127.0.0.1:${impostor.port}` && line.issuerSerial === retiredSerial)).toBe(true);
    expect(impostor.seen.requests.slice(haRequests)).toEqual([]);
  });

  it("refuses a CA endpoint whose serving certificate the CA's CRL lists (issued by the current issuer, then revoked)", async () => {
    const logged: Record<string, unknown>[] = [];
    const source = await identity("shop", `127.0.0.1:${balancer.port}`, logged);
    const refusedCount = instrumented(source);
    const layout = caLayout(dir);
    const current = signerOf(layout.issuerCert, layout.issuerKey);
    const revokedFront = await startImpostor(current, () => ca.address, bundlePem);
    closers.push(revokedFront.close);
    await ca.store.revoke({ serial: revokedFront.serial, revokedAt: new Date(), reason: "keyCompromise" });
    for (const deadline = Date.now() + 15_000; !source.current()!.bundle.revokedSerials.has(revokedFront.serial); ) {
      if (Date.now() > deadline) throw new Error("the CRL did not list the revoked serving certificate");
      await new Promise((resolve) => setTimeout(resolve, 200));
      await source.refreshBundle();
    }
    balancer.route = () => revokedFront.port;
    const refused = await refusalOf(source.refreshBundle());
    balancer.route = () => ca.port;
    expect(isMeshwardError(refused, "E_CA_CERT_REVOKED")).toBe(true);
    expect((refused as Error).message).toContain(revokedFront.serial);
    expect(revokedFront.seen.requests).toEqual([]);
    expect(logged.some((line) => line.event === "ca-refused" && line.reason === "E_CA_CERT_REVOKED" && line.serial === revokedFront.serial)).toBe(true);
    expect(await refusedCount("cert_revoked")).toBe(logged.filter((line) => line.event === "ca-refused").length);
    expect(await refusedCount("issuer_retired")).toBe(0);
    await source.refreshBundle();
  });

  it("the genuine CA renews its own serving certificate as soon as the CRL in force lists it; workloads go on refreshing and renewing", async () => {
    // `cert revoke` cannot reach a serving certificate (not an issuance record); a direct store
    // write can. The CA used to keep serving the revoked certificate until its half-life renewal
    // (up to 12 h), while every workload holding that CRL refused it (E_CA_CERT_REVOKED).
    const servingSerial = () =>
      new Promise<string>((resolve, reject) => {
        const socket = tlsConnect({ host: "127.0.0.1", port: ca.port, ca: bundlePem, servername: "localhost", ALPNProtocols: ["h2"], checkServerIdentity: () => undefined });
        socket.once("secureConnect", () => {
          resolve(normalizeSerial(socket.getPeerX509Certificate()!.serialNumber));
          socket.destroy();
        });
        socket.once("error", reject);
      });
    const logged: Record<string, unknown>[] = [];
    const source = await identity("cart", ca.address, logged);
    const revokedServing = await servingSerial();
    await ca.store.revoke({ serial: revokedServing, revokedAt: new Date(), reason: "keyCompromise" });
    // The workload fetches the CRL from the CA itself: once it holds the serial, that CRL was in force at the CA.
    const failures: unknown[] = [];
    for (const deadline = Date.now() + 15_000; ![...source.current()!.bundle.revokedSerials].some((s) => normalizeSerial(s) === revokedServing); ) {
      if (Date.now() > deadline) throw new Error(`the workload never held the serving serial as revoked (refresh failures: ${failures.map((e) => (e as Error).message).join("; ")})`);
      await new Promise((resolve) => setTimeout(resolve, 200));
      await source.refreshBundle().catch((error: unknown) => failures.push(error));
    }
    // The CA renewed its serving certificate when that CRL came into force, before serving it.
    const renewedServing = await servingSerial();
    expect(renewedServing).not.toBe(revokedServing);
    const held = source.current()!;
    await source.refreshBundle();
    await source.renewNow();
    expect(source.current()!.svid.serial).not.toBe(held.svid.serial);
    expect(logged.filter((line) => line.event === "ca-refused" || line.event === "renewal-failed" || line.event === "bundle-refresh-failed")).toEqual([]);
  });

  it("a resumed TLS session never passes the CA's serving-chain check (it shows no chain); the CA clients offer none", async () => {
    // Node skips checkServerIdentity on a resumed session. The CA clients offer no session (a fresh
    // connection per request, no session cache: the first test saw none resumed); should one ever
    // be resumed, servingChainRefusal refuses it.
    const dial = (session?: Buffer) =>
      new Promise<{ socket: TLSSocket; ticket: Promise<Buffer> }>((resolve, reject) => {
        const socket = tlsConnect({ host: "127.0.0.1", port: impostor.port, ca: bundlePem, servername: "localhost", ALPNProtocols: ["h2"], checkServerIdentity: () => undefined, ...(session ? { session } : {}) });
        const ticket = new Promise<Buffer>((got) => socket.once("session", got));
        socket.once("secureConnect", () => resolve({ socket, ticket }));
        socket.once("error", reject);
      });
    const first = await dial();
    const ticket = await first.ticket;
    first.socket.destroy();
    const second = await dial(ticket);
    try {
      expect(second.socket.isSessionReused()).toBe(true);
      const refusal = servingChainRefusal(second.socket, new Set(["01"]));
      expect(refusal?.code).toBe("E_CA_UNTRUSTED");
      expect(servingChainRefusal(second.socket, new Set())?.code).toBe("E_CA_UNTRUSTED");
    } finally {
      second.socket.destroy();
    }
  });
});
