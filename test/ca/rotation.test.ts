import { createHash, X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { directoryFiles } from "../../src/ca/anchor-files.ts";
import { caLayout, initAnchors, loadAnchors, readCaState } from "../../src/ca/anchors.ts";
import { activateRoot, importIssuer, issuerRotationStage, prepareRoot, retireRoot, rotateIssuer } from "../../src/ca/rotation.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { fetchFromCa } from "../../src/identity/ca-client.ts";
import { createIdentity, type CaIdentitySource } from "../../src/identity/ca-source.ts";
import { staticIdentity, type IdentitySource } from "../../src/identity/source.ts";
import { parseCrl } from "../../src/pki/crl.ts";
import { createIssuerCertificate } from "../../src/pki/certificate.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { decodePrivateKey, encodePrivateKey, generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem, toPem } from "../../src/pki/pem.ts";
import { createHttpsServer, httpsRequest, type MtlsHttpsServer } from "../../src/transport/index.ts";
import { runCli } from "../helpers/cli.ts";
import { bundleRootCount, svidChainsTo } from "../helpers/identity-checks.ts";
import { capturingLogger } from "../helpers/ca-server.ts";

const TD = "rotation.test";
const silent = pino({ level: "silent" });
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function certWithDates(notBefore: number, notAfter: number): X509Certificate {
  // issuerRotationStage reads only validFrom/validTo.
  return { validFrom: new Date(notBefore).toUTCString(), validTo: new Date(notAfter).toUTCString() } as unknown as X509Certificate;
}

describe("issuer rotation thresholds (SPIRE's: prepare at min(½ life, 30d), activate at min(⅙ life, 7d))", () => {
  const t0 = Date.parse("2026-01-01T00:00:00Z");
  it.each([
    ["1-year issuer, 200 days left", "current", 365 * DAY, 165 * DAY],
    ["1-year issuer, 29 days left", "prepare", 365 * DAY, 336 * DAY],
    ["1-year issuer, 6 days left", "activate", 365 * DAY, 359 * DAY],
    ["6-hour issuer, 4 hours left", "current", 6 * HOUR, 2 * HOUR],
    ["6-hour issuer, 2 hours left", "prepare", 6 * HOUR, 4 * HOUR],
    ["6-hour issuer, 50 minutes left", "activate", 6 * HOUR, 6 * HOUR - 50 * 60_000],
  ])("%s → %s", (_name, stage, life, elapsed) => {
    expect(issuerRotationStage(certWithDates(t0, t0 + life), new Date(t0 + elapsed))).toBe(stage);
  });
});

describe("rotation on a running CA", () => {
  let work: string;
  let dir: string;
  let server: CaServer | undefined;
  let port = 0;
  const closers: (() => Promise<unknown>)[] = [];

  const startCa = async () => {
    const config = caConfigSchema.parse({ listen: `127.0.0.1:${port}`, workloadTtl: "1h", anchorPoll: "100ms", crlRefresh: "200ms" });
    server = await startCaServer({ dir, config, logger: silent });
    port = server.port;
    return server;
  };
  const token = async (appId: string) => (await issueJoinToken(server!.store, { spiffeId: `spiffe://${TD}/ns/shop/${appId}`, ttlMs: HOUR })).token;
  const signOnce = async () => {
    return server!.authority.sign({ csr: await createCsr({ keyPair: generateKeyPair() }), token: await token("probe"), validator: "join-token", appId: "", namespace: "", trustDomain: "", peer: undefined });
  };
  const issuerOf = (chainPem: string) => new X509Certificate(certificatesFromPem(chainPem)[1] as Buffer).fingerprint256;

  beforeEach(() => {
    work = mkdtempSync(join(tmpdir(), "meshward-rotation-"));
    dir = join(work, "ca");
    port = 0;
  });
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    await server?.close();
    server = undefined;
    rmSync(work, { recursive: true, force: true });
  });

  it("switches to a new issuer by itself once the current one reaches its threshold", async () => {
    await initAnchors({ dir, trustDomain: TD, now: new Date(Date.now() - 55 * 60_000), issuerTtlMs: HOUR });
    const before = new X509Certificate(readFileSync(caLayout(dir).issuerCert)).fingerprint256;
    await startCa();
    const signed = await signOnce();
    const issuer = issuerOf(signed.certificateChainPem);
    expect(issuer).not.toBe(before);
    expect(issuer).toBe(new X509Certificate(readFileSync(caLayout(dir).issuerCert)).fingerprint256);
    expect(await server!.registry.metrics()).toMatch(/meshward_rotation_total\{kind="issuer",result="ok"\} 1/);
  });

  it("picks up a replaced issuer from disk, and refuses a bad one while keeping the old", async () => {
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    await startCa();
    const original = issuerOf((await signOnce()).certificateChainPem);
    const layout = caLayout(dir);

    // A key that does not belong to the certificate: refused, the CA keeps signing with the old issuer.
    writeFileSync(layout.issuerKey, encodePrivateKey(generateKeyPair().privateKey), { mode: 0o600 });
    await new Promise((r) => setTimeout(r, 600));
    expect(issuerOf((await signOnce()).certificateChainPem)).toBe(original);
    await waitFor(async () => /meshward_rotation_total\{kind="issuer",result="error"\} [1-9]/.test(await server!.registry.metrics()), "the refusal to be counted");

    // A correct issuer signed by the root, installed by import-issuer: adopted without a restart.
    const rootKey = decodePrivateKey(readFileSync(layout.rootKey, "utf8"));
    const root = new X509Certificate(readFileSync(layout.rootCert));
    const keys = generateKeyPair();
    const issued = await createIssuerCertificate({ trustDomain: TD, publicKey: keys.publicKey, signer: { certificate: root, der: root.raw, privateKey: rootKey }, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + DAY) });
    writeFileSync(join(work, "new-issuer.pem"), toPem(issued.der, "CERTIFICATE"));
    writeFileSync(join(work, "new-issuer.key"), encodePrivateKey(keys.privateKey));
    const imported = await runCli(["ca", "import-issuer", "--dir", dir, "--issuer-cert", join(work, "new-issuer.pem"), "--issuer-key", join(work, "new-issuer.key")]);
    expect(imported.code, imported.stderr).toBe(0);
    const fingerprint = new X509Certificate(issued.der).fingerprint256;
    await waitFor(async () => issuerOf((await signOnce()).certificateChainPem) === fingerprint, "the new issuer to sign");

    // An issuer from another CA is refused by import-issuer, and nothing on disk changes.
    await initAnchors({ dir: join(work, "other"), trustDomain: TD, now: new Date() });
    const other = caLayout(join(work, "other"));
    const before = readFileSync(layout.issuerCert, "utf8");
    const refused = await runCli(["ca", "import-issuer", "--dir", dir, "--issuer-cert", other.issuerCert, "--issuer-key", other.issuerKey]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/does not chain to any root.*E_IMPORT_INVALID/);
    expect(readFileSync(layout.issuerCert, "utf8")).toBe(before);
  });

  it("rotates issuer and root (prepare → activate → retire) under continuous mTLS traffic, even with the CA down between steps", async () => {
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    await startCa();
    const bundlePem = readFileSync(caLayout(dir).bundle, "utf8");
    const identity = async (appId: string): Promise<CaIdentitySource> => {
      const source = createIdentity({ ca: `127.0.0.1:${port}`, bundlePem, token: await token(appId), bundleRefreshMs: 200, backoff: { initialMs: 100, maxMs: 500 } });
      closers.push(() => source.close());
      await source.ready();
      return source;
    };
    const api = await identity("api");
    const web = await identity("web");
    const https: MtlsHttpsServer = await createHttpsServer({ identity: api, logger: silent }, (req, res) => res.end(req.peer.spiffeId));
    await new Promise<void>((r) => https.listen(0, "127.0.0.1", r));
    closers.push(() => https.meshward.close());
    const url = `https://127.0.0.1:${(https.address() as AddressInfo).port}/`;

    // A client calling the server in a loop for the whole test; every failure is kept.
    let ok = 0;
    const failures: string[] = [];
    let running = true;
    const traffic = (async () => {
      for (let i = 0; running && i < 100_000; i++) {
        try {
          const res = await httpsRequest(url, { identity: web, expect: `spiffe://${TD}/ns/shop/api`, logger: silent, timeoutMs: 5000 });
          if (res.status === 200 && res.text() === `spiffe://${TD}/ns/shop/web`) ok += 1;
          else failures.push(`status ${res.status}: ${res.text()}`);
        } catch (error) {
          failures.push((error as Error).message);
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const settleTraffic = async (n = 20) => {
      const target = ok + n;
      await waitFor(() => ok >= target || failures.length > 0, `${n} more requests`);
    };
    const oldRootPem = readFileSync(caLayout(dir).rootCert, "utf8");
    try {
      await settleTraffic();
      // Issuer rotation: new leaves come from the new issuer at the next renewal.
      await rotateIssuer({ dir, now: new Date() });
      await api.renewNow();
      await web.renewNow();
      await settleTraffic();

      // 1. prepare: both workloads pick up the two-root bundle while running.
      const newRoot = await prepareRoot({ dir, now: new Date() });
      await waitFor(() => bundleRootCount(api) === 2 && bundleRootCount(web) === 2, "the two-root bundle to reach both workloads");
      await settleTraffic();

      // The CA goes down between steps: workloads keep serving with what they have.
      await server!.close();
      server = undefined;
      await settleTraffic();
      await startCa();

      // 2. activate with --reissue: workloads renew at once onto the new root.
      const refusedEarly = await retireRoot({ dir, store: server!.store, now: new Date() }).catch((e: { code: string }) => e.code);
      expect(refusedEarly).toBe("E_ROTATION_NOT_ACTIVATED");
      await activateRoot({ dir, now: new Date(), reissue: true });
      const newRootPem = toPem(newRoot.raw, "CERTIFICATE");
      await waitFor(() => svidChainsTo(api, newRootPem) && svidChainsTo(web, newRootPem), "both workloads to move to the new root");
      await settleTraffic();

      // 3. retire: refused while a live certificate still chains to the old root, then done.
      const status = await runCli(["ca", "status", "--dir", dir, "--json"]);
      const anchors = (JSON.parse(status.stdout) as { anchors: { kind: string; liveCertificates?: number }[] }).anchors;
      expect(anchors.find((a) => a.kind === "root (retiring)")?.liveCertificates).toBe(0);
      await retireRoot({ dir, store: server!.store, now: new Date() });
      await waitFor(() => bundleRootCount(api) === 1 && bundleRootCount(web) === 1, "the old root to leave both bundles");
      await settleTraffic(40);
      expect(svidChainsTo(api, oldRootPem)).toBe(false);
      expect(svidChainsTo(web, oldRootPem)).toBe(false);
      expect(readFileSync(caLayout(dir).bundle, "utf8")).toBe(newRootPem);
    } finally {
      running = false;
      await traffic;
    }
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(100);
  }, 90_000);

  it("an issuer rotation makes no workload renew: each keeps its old-issuer certificate until its scheduled renewal, peers accept it, and a certificate of either issuer revoked after it is refused within a bundle refresh", async () => {
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    await startCa();
    const layout = caLayout(dir);
    const bundlePem = readFileSync(layout.bundle, "utf8");
    const events: { appId: string; event: string }[] = [];
    const identity = async (appId: string): Promise<CaIdentitySource> => {
      const logger = pino({ level: "info" }, { write: (line: string) => void events.push({ appId, event: String((JSON.parse(line) as { event?: unknown }).event) }) });
      const source = createIdentity({ ca: `127.0.0.1:${port}`, bundlePem, token: await token(appId), bundleRefreshMs: 100, backoff: { initialMs: 100, maxMs: 500 }, logger });
      closers.push(() => source.close());
      await source.ready();
      return source;
    };
    // A certificate held outside any identity source (a copy a thief holds): nothing renews it.
    const held = async (appId: string) => {
      const keyPair = generateKeyPair();
      const signed = await server!.authority.sign({ csr: await createCsr({ keyPair }), token: await token(appId), validator: "join-token", appId: "", namespace: "", trustDomain: "", peer: undefined });
      const svid = { spiffeId: signed.spiffeId, certChainPem: signed.certificateChainPem, privateKey: keyPair.privateKey, notBefore: signed.notBefore, notAfter: signed.notAfter, serial: signed.serial };
      // A new identity object per call: a new agent, so each call is a new handshake.
      return { serial: signed.serial, chainPem: signed.certificateChainPem, client: () => staticIdentity({ svid, bundle: { trustDomain: TD, rootsPem: bundlePem, revokedSerials: new Set() } }) };
    };
    const api = await identity("api");
    const web = await identity("web");
    const stolen = await held("stolen");
    const https: MtlsHttpsServer = await createHttpsServer({ identity: api, logger: silent }, (req, res) => res.end(req.peer.spiffeId));
    await new Promise<void>((r) => https.listen(0, "127.0.0.1", r));
    closers.push(() => https.meshward.close());
    const url = `https://127.0.0.1:${(https.address() as AddressInfo).port}/`;
    const call = (client: IdentitySource) =>
      httpsRequest(url, { identity: client, expect: `spiffe://${TD}/ns/shop/api`, logger: silent, timeoutMs: 5000 }).then(
        (res) => res.text(),
        (error: Error) => `refused: ${error.message}`,
      );
    const oldIssuer = issuerOf(api.current()!.svid.certChainPem);
    const before = { api: api.current()!.svid.serial, web: web.current()!.svid.serial };
    expect(await call(web)).toBe(`spiffe://${TD}/ns/shop/web`);
    expect(await call(stolen.client())).toBe(`spiffe://${TD}/ns/shop/stolen`);

    await rotateIssuer({ dir, now: new Date() });
    const newIssuer = new X509Certificate(readFileSync(layout.issuerCert)).fingerprint256;
    expect(newIssuer).not.toBe(oldIssuer);
    await waitFor(async () => issuerOf((await signOnce()).certificateChainPem) === newIssuer, "the CA to sign with the new issuer");
    // The CA publishes a CRL per live issuer; the workloads verify both (one with their own issuer,
    // the other with the new issuer, which chains to their root).
    // (Beside the root's CRL, root-crl.ts: three in all.)
    await waitFor(() => [api, web].every((w) => w.current()?.bundle.crls?.length === 3), "the two CRLs to reach both workloads");
    await new Promise((r) => setTimeout(r, 1_000)); // ten bundle refreshes
    expect(events.filter((e) => e.event === "crl-issuer-changed" || e.event === "crl-refresh-failed")).toEqual([]);
    expect(api.current()!.svid.serial).toBe(before.api);
    expect(web.current()!.svid.serial).toBe(before.web);
    expect(issuerOf(web.current()!.svid.certChainPem)).toBe(oldIssuer);
    expect(await call(web)).toBe(`spiffe://${TD}/ns/shop/web`);

    // A certificate of the old issuer revoked after the rotation: refused within a bundle refresh.
    await server!.store.revokeLineage({ serial: stolen.serial, revokedAt: new Date(), reason: "keyCompromise" });
    await waitFor(() => api.current()!.bundle.revokedSerials.has(stolen.serial), "the revocation to reach the server's workload");
    expect(await call(stolen.client())).toMatch(/^refused: /);

    // And one of the new issuer.
    const fresh = await held("fresh");
    expect(issuerOf(fresh.chainPem)).toBe(newIssuer);
    expect(await call(fresh.client())).toBe(`spiffe://${TD}/ns/shop/fresh`);
    await server!.store.revokeLineage({ serial: fresh.serial, revokedAt: new Date(), reason: "keyCompromise" });
    await waitFor(() => api.current()!.bundle.revokedSerials.has(fresh.serial), "the second revocation to reach the server's workload");
    expect(await call(fresh.client())).toMatch(/^refused: /);
    expect(await call(web)).toBe(`spiffe://${TD}/ns/shop/web`);
    expect(web.current()!.svid.serial).toBe(before.web);

    // The renewal a workload schedules for itself takes it to the new issuer.
    await web.renewNow();
    expect(issuerOf(web.current()!.svid.certChainPem)).toBe(newIssuer);
    expect(await call(web)).toBe(`spiffe://${TD}/ns/shop/web`);
  });

  it("rotate-issuer --now retires the old issuer at once: its CRL is no longer published and its workloads renew within a bundle refresh", async () => {
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    await startCa();
    const layout = caLayout(dir);
    const source = createIdentity({ ca: `127.0.0.1:${port}`, bundlePem: readFileSync(layout.bundle, "utf8"), token: await token("api"), bundleRefreshMs: 100, backoff: { initialMs: 100, maxMs: 500 } });
    closers.push(() => source.close());
    const first = await source.ready();
    const cli = await runCli(["ca", "rotate-issuer", "--dir", dir, "--now"]);
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toMatch(/no longer published/);
    expect(existsSync(layout.previousIssuerCert)).toBe(false);
    const newIssuer = new X509Certificate(readFileSync(layout.issuerCert)).fingerprint256;
    await waitFor(() => issuerOf(source.current()!.svid.certChainPem) === newIssuer, "the workload to renew onto the new issuer");
    expect(source.current()!.svid.serial).not.toBe(first.svid.serial);
  });

  // Review crlset LOW-1: the previous issuer's key stayed at rest (and in memory, and in the
  // store's shared state) for the rest of its validity, after nothing needed it any more.
  it("removes issuer.prev.* once the last certificate the previous issuer signed has expired (plus a margin for clock skew), and logs it", async () => {
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    let offsetMs = 0;
    const { logger, logged } = capturingLogger();
    const config = caConfigSchema.parse({ listen: "127.0.0.1:0", workloadTtl: "1h", anchorPoll: "100ms", crlRefresh: "200ms", rotationCheck: "100ms" });
    server = await startCaServer({ dir, config, logger, clock: () => new Date(Date.now() + offsetMs) });
    port = server.port;
    const layout = caLayout(dir);
    const connection = { address: `127.0.0.1:${port}`, bundlePem: readFileSync(layout.bundle, "utf8"), trustDomain: TD };
    const crlCount = async () => (JSON.parse((await fetchFromCa(connection, "/v1/crl?format=set")).toString("utf8")) as { crls: unknown[] }).crls.length;
    const lastSigned = await signOnce(); // notAfter: in an hour
    const oldIssuer = issuerOf(lastSigned.certificateChainPem);
    await rotateIssuer({ dir, now: new Date() });
    await waitFor(async () => (await crlCount()) === 2, "the CA to publish the previous issuer's CRL");
    await new Promise((r) => setTimeout(r, 500)); // several rotation checks: still needed, kept
    expect(existsSync(layout.previousIssuerKey) && existsSync(layout.previousIssuerCert)).toBe(true);

    // (From here the CA's clock is ahead: its serving certificate is not valid yet for this host.)
    offsetMs = lastSigned.notAfter.getTime() - Date.now() + 60_000; // expired, within the margin
    await new Promise((r) => setTimeout(r, 800)); // several rotation checks
    expect(existsSync(layout.previousIssuerKey)).toBe(true); // clocks behind the CA's may still need it

    offsetMs = lastSigned.notAfter.getTime() - Date.now() + 6 * 60_000; // past the 5-minute margin
    await waitFor(() => !existsSync(layout.previousIssuerKey) && !existsSync(layout.previousIssuerCert), "issuer.prev.* to be removed");
    await waitFor(() => logged.some((line) => line.includes('"previous-issuer-removed"')), "the removal to be logged");
    const line = JSON.parse(logged.find((l) => l.includes('"previous-issuer-removed"'))!) as { issuer?: string };
    expect(line.issuer).toBe(oldIssuer);
    expect(logged.some((l) => l.includes('"previous-issuer-unusable"'))).toBe(false);
  });

  // Review crlset LOW-2: these were dropped without a word, and the workloads on that issuer renewed with no CA log saying why.
  it("reports an issuer.prev.* without its other half, or one under no held root, as a previous-issuer problem", async () => {
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    await rotateIssuer({ dir, now: new Date() });
    const layout = caLayout(dir);
    expect(loadAnchors({ dir }).previousIssuerProblem).toBeUndefined();
    expect(loadAnchors({ dir }).previousIssuer).toBeDefined();
    const key = readFileSync(layout.previousIssuerKey, "utf8");
    const cert = readFileSync(layout.previousIssuerCert, "utf8");

    rmSync(layout.previousIssuerKey);
    expect(loadAnchors({ dir }).previousIssuerProblem).toMatch(/issuer\.prev\.key is missing/);
    writeFileSync(layout.previousIssuerKey, key, { mode: 0o600 });
    rmSync(layout.previousIssuerCert);
    expect(loadAnchors({ dir }).previousIssuerProblem).toMatch(/issuer\.prev\.pem is missing/);

    const foreignDir = join(work, "foreign");
    await initAnchors({ dir: foreignDir, trustDomain: TD, now: new Date() });
    writeFileSync(layout.previousIssuerCert, readFileSync(caLayout(foreignDir).issuerCert));
    expect(loadAnchors({ dir }).previousIssuerProblem).toMatch(/does not chain to any root/);
    expect(loadAnchors({ dir }).previousIssuer).toBeUndefined();

    writeFileSync(layout.previousIssuerCert, cert);
    expect(loadAnchors({ dir }).previousIssuerProblem).toBeUndefined();
  });

  it("publishes a CRL per live issuer, each signed by its own issuer; /v1/crl stays the current issuer's", async () => {
    await initAnchors({ dir, trustDomain: TD, passphrase: "correct horse", now: new Date() });
    const config = caConfigSchema.parse({ listen: "127.0.0.1:0", workloadTtl: "1h", anchorPoll: "100ms", crlRefresh: "200ms" });
    server = await startCaServer({ dir, config, logger: silent, passphrase: "correct horse" });
    port = server.port;
    const layout = caLayout(dir);
    const connection = { address: `127.0.0.1:${port}`, bundlePem: readFileSync(layout.bundle, "utf8"), trustDomain: TD };
    const oldIssuer = new X509Certificate(readFileSync(layout.issuerCert));
    const sha = (c: X509Certificate) => createHash("sha256").update(c.raw).digest("hex");
    await signOnce();
    await rotateIssuer({ dir, now: new Date(), passphrase: "correct horse" });
    // The previous issuer's key is kept like the current one: owner-only, encrypted.
    expect(statSync(layout.previousIssuerKey).mode & 0o777).toBe(0o600);
    const previousKeyPem = readFileSync(layout.previousIssuerKey, "utf8");
    expect(() => decodePrivateKey(previousKeyPem)).toThrow(expect.objectContaining({ code: "E_KEY_PASSPHRASE_REQUIRED" }));
    expect(decodePrivateKey(previousKeyPem, "correct horse").asymmetricKeyType).toBe("ec");
    const newIssuer = new X509Certificate(readFileSync(layout.issuerCert));
    type SetDocument = { crls: { issuer_sha256?: string; current: boolean; crl: string; issuer_chain: string[]; root?: boolean }[] };
    const set = async () => JSON.parse((await fetchFromCa(connection, "/v1/crl?format=set")).toString("utf8")) as SetDocument;
    await waitFor(async () => (await set()).crls.length === 3, "the CA to publish the previous issuer's CRL");
    const document = await set();
    // Then the root's CRL (root-crl.ts), with no issuer_chain: clients older than root CRLs leave it out.
    const root = new X509Certificate(readFileSync(layout.rootCert));
    expect(document.crls.map((c) => [c.issuer_sha256, c.current, c.root === true, c.issuer_chain.length > 0])).toEqual([
      [sha(newIssuer), true, false, true],
      [sha(oldIssuer), false, false, true],
      [sha(root), false, true, false],
    ]);
    expect(() => parseCrl(Buffer.from(document.crls[2]!.crl, "base64"), root)).not.toThrow();
    const [current, previous] = document.crls.map((c) => Buffer.from(c.crl, "base64"));
    expect(() => parseCrl(current!, newIssuer)).not.toThrow();
    expect(() => parseCrl(previous!, oldIssuer)).not.toThrow();
    expect(parseCrl(current!).crlNumber).toBe(parseCrl(previous!).crlNumber);
    const plain = await fetchFromCa(connection, "/v1/crl");
    expect(() => parseCrl(plain, newIssuer)).not.toThrow();
    const byIssuer = await fetchFromCa(connection, `/v1/crl?issuer=${sha(oldIssuer)}`);
    expect(() => parseCrl(byIssuer, oldIssuer)).not.toThrow();
    expect(await fetchFromCa(connection, `/v1/crl?issuer=${"0".repeat(64)}`).catch((e: Error) => e.message)).toMatch(/404/);
  });

  it("--reissue moves workloads by the root their certificate chains to, not by comparing clocks", async () => {
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    await startCa();
    const layout = caLayout(dir);
    const renewals = new Map<string, number>();
    // Why each workload renewed, from its own log: a reissue request, or a CRL signed by an issuer
    // its certificate does not chain to (ca-source.ts: `crl-issuer-changed`, at most once per 5 min).
    const reasons: { appId: string; event: string }[] = [];
    const identity = async (appId: string): Promise<CaIdentitySource> => {
      const logger = pino({ level: "info" }, { write: (line: string) => void reasons.push({ appId, event: String((JSON.parse(line) as { event?: unknown }).event) }) });
      const source = createIdentity({ ca: `127.0.0.1:${port}`, bundlePem: readFileSync(layout.bundle, "utf8"), token: await token(appId), bundleRefreshMs: 100, backoff: { initialMs: 100, maxMs: 500 }, logger });
      closers.push(() => source.close());
      source.subscribe((event) => void (event.type === "rotated" && renewals.set(appId, (renewals.get(appId) ?? 0) + 1)));
      await source.ready();
      return source;
    };
    const workloads = [await identity("api"), await identity("web")];
    const bundleDocument = async () =>
      JSON.parse((await fetchFromCa({ address: `127.0.0.1:${port}`, bundlePem: readFileSync(layout.bundle, "utf8"), trustDomain: TD }, "/v1/bundle?format=spiffe")).toString("utf8")) as Record<string, unknown>;

    const newRoot = await prepareRoot({ dir, now: new Date() });
    await waitFor(() => workloads.every((w) => bundleRootCount(w) === 2), "the two-root bundle");
    expect(await bundleDocument()).not.toHaveProperty("meshward_reissue_root_sha256");

    // The CA's clock 10 minutes behind the workloads' (or a renewal in flight while it switched):
    // every certificate arrived after the reissue instant, yet chains to the old root.
    await activateRoot({ dir, now: new Date(Date.now() - 10 * 60_000), reissue: true });
    const newRootPem = toPem(newRoot.raw, "CERTIFICATE");
    await waitFor(() => workloads.every((w) => svidChainsTo(w, newRootPem)), "both workloads on the new root");
    const document = await bundleDocument();
    expect(document.meshward_reissue_root_sha256).toBe(createHash("sha256").update(newRoot.raw).digest("hex"));
    expect(typeof document.meshward_reissue_before).toBe("number");
    const moved = new Map(renewals);
    const reasonsBefore = reasons.length;
    const since = (event: string) => reasons.slice(reasonsBefore).filter((r) => r.event === event).map((r) => r.appId);

    // The CA's clock an hour ahead: the reissue instant lies in the workloads' future. They are on
    // the new root already, so they stay put (a time comparison would renew them at every refresh).
    const state = JSON.parse(readFileSync(layout.state, "utf8")) as Record<string, unknown>;
    writeFileSync(layout.state, JSON.stringify({ ...state, reissueBefore: new Date(Date.now() + HOUR).toISOString() }));
    const ahead = Math.floor((Date.now() + HOUR) / 1000);
    await waitFor(async () => ((await bundleDocument()).meshward_reissue_before as number) >= ahead - 5, "the CA to publish the later reissue instant");
    await new Promise((r) => setTimeout(r, 1_000)); // ten bundle refreshes
    expect(renewals).toEqual(moved);
    expect(since("reissue-requested")).toEqual([]);

    // Retire ends the reissue request; a later activation without --reissue does not inherit it.
    await retireRoot({ dir, store: server!.store, now: new Date() });
    await waitFor(async () => !("meshward_reissue_before" in (await bundleDocument())), "the reissue request to end with the rotation");
    const thirdRoot = toPem((await prepareRoot({ dir, now: new Date() })).raw, "CERTIFICATE");
    await activateRoot({ dir, now: new Date() });
    expect(readCaState(dir)).not.toHaveProperty("reissueBefore");
    const signsUnder = (chainPem: string, rootPem: string) => svidChainsTo({ current: () => ({ svid: { certChainPem: chainPem } }) } as unknown as CaIdentitySource, rootPem);
    await waitFor(async () => signsUnder((await signOnce()).certificateChainPem, thirdRoot), "the CA to sign under the third root");
    expect(await bundleDocument()).not.toHaveProperty("meshward_reissue_before");
    await new Promise((r) => setTimeout(r, 1_000));
    // No reissue request reached a workload. The third root's issuer now signs the current CRL, and
    // the second root's issuer keeps signing its own (a CRL per live issuer): no workload renews for
    // the CRL (crl-issuer-changed), each stays on the second root until its scheduled renewal.
    expect(since("reissue-requested")).toEqual([]);
    const forCrl = since("crl-issuer-changed");
    expect(new Set(forCrl).size).toBe(forCrl.length);
    for (const [index, appId] of ["api", "web"].entries()) {
      const renewedForCrl = forCrl.includes(appId);
      expect(renewals.get(appId)).toBe(moved.get(appId)! + (renewedForCrl ? 1 : 0));
      expect(svidChainsTo(workloads[index]!, renewedForCrl ? thirdRoot : newRootPem)).toBe(true);
    }
  });

  it("refuses to retire a root that live certificates still chain to, and says how many", async () => {
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    await startCa();
    await signOnce();
    await signOnce();
    await prepareRoot({ dir, now: new Date() });
    await activateRoot({ dir, now: new Date() });
    const refusal = await retireRoot({ dir, store: server!.store, now: new Date() }).catch((e: { code: string; message: string }) => e);
    expect(refusal).toMatchObject({ code: "E_ROTATION_CERTS_REMAIN" });
    expect((refusal as unknown as Error).message).toMatch(/^2 unexpired certificates still chain to the old root/);
    const cli = await runCli(["ca", "rotate-root", "retire", "--dir", dir]);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/E_ROTATION_CERTS_REMAIN/);
    const forced = await runCli(["ca", "rotate-root", "retire", "--dir", dir, "--force"]);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stdout).toMatch(/forced: 2 certificates/);
  });

  it("rotates the root automatically when enabled: prepare, activate after the delay, retire once nothing live chains to the old root", async () => {
    await initAnchors({ dir, trustDomain: TD, now: new Date(), rootTtlMs: HOUR });
    const oldRoot = new X509Certificate(readFileSync(caLayout(dir).rootCert)).fingerprint256;
    const config = caConfigSchema.parse({
      listen: "127.0.0.1:0",
      anchorPoll: "100ms",
      rotationCheck: "100ms",
      autoRotateRoot: { enabled: true, prepareBefore: "2h", activateAfter: "300ms" },
    });
    server = await startCaServer({ dir, config, logger: silent });
    const live = await signOnce(); // issued under the old root; keeps it from retiring
    const state = () => JSON.parse(readFileSync(caLayout(dir).state, "utf8")) as { rootRotation?: { phase: string } };
    await waitFor(() => state().rootRotation?.phase === "activated", "prepare, then activation after the delay");
    expect(readFileSync(caLayout(dir).bundle, "utf8").match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    await new Promise((r) => setTimeout(r, 500));
    expect(state().rootRotation?.phase).toBe("activated"); // a live certificate still chains to the old root
    await server.store.revoke({ serial: live.serial, revokedAt: new Date(), reason: "superseded" });
    await waitFor(() => state().rootRotation === undefined, "retirement once nothing live chains to the old root");
    const bundle = certificatesFromPem(readFileSync(caLayout(dir).bundle, "utf8")).map((d) => new X509Certificate(d).fingerprint256);
    expect(bundle).toHaveLength(1);
    expect(bundle[0]).not.toBe(oldRoot);
    const metrics = await server.registry.metrics();
    expect(metrics).toMatch(/meshward_rotation_total\{kind="root",result="ok"\} 3/);
  });

  it("automatic root rotation after an interrupted prepare: takes up its key and root, and logs rotation-resumed", async () => {
    await initAnchors({ dir, trustDomain: TD, now: new Date(), rootTtlMs: HOUR });
    // A prepare interrupted before its last change (ca.json recording the root): key, root and bundle written.
    let changes = 0;
    const interrupted = await prepareRoot({
      dir,
      now: new Date(),
      files: {
        ...directoryFiles,
        write: (path, content, options) => {
          if (path === caLayout(dir).state && ++changes === 2) throw new Error("interrupted");
          directoryFiles.write(path, content, options);
        },
      },
    }).catch((error: Error) => error.message);
    expect(interrupted).toBe("interrupted");
    const left = new X509Certificate(readFileSync(caLayout(dir).nextRootCert)).fingerprint256;
    const { logger, logged } = capturingLogger();
    const config = caConfigSchema.parse({ listen: "127.0.0.1:0", anchorPoll: "100ms", rotationCheck: "100ms", autoRotateRoot: { enabled: true, prepareBefore: "2h", activateAfter: "1h" } });
    server = await startCaServer({ dir, config, logger });
    await waitFor(() => readCaState(dir).rootRotation?.phase === "prepared", "the automatic prepare");
    expect(readCaState(dir).rootRotation?.nextRootFingerprint).toBe(left);
    const resumed = logged.map((line) => JSON.parse(line) as { event?: string; rootKept?: boolean; recorded?: boolean }).filter((entry) => entry.event === "rotation-resumed");
    expect(resumed).toMatchObject([{ rootKept: true, recorded: true }]);
  });

  it("refuses steps out of order with the next step to take", async () => {
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    expect((await runCli(["ca", "rotate-root", "activate", "--dir", dir])).stderr).toMatch(/rotate-root prepare.*E_ROTATION_NOT_PREPARED/);
    expect((await runCli(["ca", "rotate-root", "prepare", "--dir", dir])).code).toBe(0);
    expect((await runCli(["ca", "rotate-root", "prepare", "--dir", dir])).stderr).toMatch(/rotate-root activate.*E_ROTATION_IN_PROGRESS/);
  });

  it("an external-root CA cannot generate issuers: it says to import one", async () => {
    await initAnchors({ dir: join(work, "org"), trustDomain: TD, now: new Date() });
    const org = caLayout(join(work, "org"));
    await initAnchors({ dir, trustDomain: TD, now: new Date(), imported: { rootCertPem: readFileSync(org.rootCert, "utf8"), issuerCertPem: readFileSync(org.issuerCert, "utf8"), issuerKeyPem: readFileSync(org.issuerKey, "utf8") }, trustEveryCaUnderRoot: true });
    await expect(rotateIssuer({ dir, now: new Date() })).rejects.toMatchObject({ code: "E_ROTATION_EXTERNAL_ROOT" });
    expect(() => importIssuer({ dir, issuerCertPem: "garbage", issuerKeyPem: "garbage", now: new Date() })).toThrow();
  });
});
