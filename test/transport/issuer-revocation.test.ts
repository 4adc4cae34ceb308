import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { directoryFiles } from "../../src/ca/anchor-files.ts";
import { caLayout } from "../../src/ca/anchors.ts";
import { recordRetiredIssuer } from "../../src/ca/root-crl.ts";
import { rotateIssuer } from "../../src/ca/rotation.ts";
import { createIdentity, type CaIdentitySource } from "../../src/identity/ca-source.ts";
import { staticIdentity } from "../../src/identity/source.ts";
import type { IdentitySource } from "../../src/identity/source.ts";
import { issueLeafCertificate } from "../../src/pki/certificate.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem, toPem } from "../../src/pki/pem.ts";
import { normalizeSerial } from "../../src/tls/verify.ts";
import { connectMtls, createHttpsServer, createMtlsServer, httpsRequest } from "../../src/transport/index.ts";
import { startMeshCa, startTestSidecar, TD, type MeshCa, type TestSidecarWithApp } from "../proxy/fixtures.ts";
import { waitFor } from "../helpers/wait.ts";
import { makeLogger } from "./fixtures.ts";

// A leaked issuer key: `rotate-issuer --now` retires the issuer, and the root's CRL lists it. Whoever
// holds the old key can still mint a certificate with a fresh serial for any SPIFFE ID; it chains to
// the root, which is still trusted, so every meshward peer must refuse a chain that holds a revoked
// issuer (as OpenSSL's CRL_CHECK_ALL does), on new handshakes and on connections already open.
let ca: MeshCa;
const closers: (() => Promise<unknown> | void)[] = [];
let oldIssuer: X509Certificate;
let oldIssuerKey: ReturnType<typeof createPrivateKey>;
let api: CaIdentitySource;
let web: CaIdentitySource;
let sidecar: TestSidecarWithApp;
const webId = `spiffe://${TD}/ns/default/web`;
const apiId = `spiffe://${TD}/ns/default/api`;

/** A certificate for `spiffeId` signed with the retired issuer's key (fresh random serial), as an identity. */
function forged(spiffeId: string): IdentitySource {
  const keyPair = generateKeyPair();
  const now = Date.now();
  const leaf = issueLeafCertificate({ spiffeId, publicKey: keyPair.publicKey, signer: { certificate: oldIssuer, der: oldIssuer.raw, privateKey: oldIssuerKey }, notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000) });
  return staticIdentity({
    svid: { spiffeId, certChainPem: toPem(leaf.der, "CERTIFICATE") + toPem(oldIssuer.raw, "CERTIFICATE"), privateKey: keyPair.privateKey, notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000), serial: leaf.serial },
    bundle: { trustDomain: TD, rootsPem: ca.bundlePem, revokedSerials: new Set() },
  });
}

/**
 * As forged(), with `padding` extra certificates sent between the leaf and the retired issuer
 * (copies of a self-signed certificate: OpenSSL passes over what it does not need, as it passes
 * over an expired look-alike of the issuer), so that the real issuer comes late in what is sent.
 */
function forgedPadded(spiffeId: string, padding: number): IdentitySource {
  const source = forged(spiffeId);
  const current = source.current()!;
  const [leaf, issuer] = certificatesFromPem(current.svid.certChainPem);
  const filler = toPem(new X509Certificate(certificatesFromPem(ca.bundlePem)[0]!).raw, "CERTIFICATE");
  return staticIdentity({ ...current, svid: { ...current.svid, certChainPem: toPem(leaf!, "CERTIFICATE") + filler.repeat(padding) + toPem(issuer!, "CERTIFICATE") } });
}

const revokedIn = (source: IdentitySource) => source.current()?.bundle.revokedSerials.has(normalizeSerial(oldIssuer.serialNumber)) === true;
const issuerOf = (source: IdentitySource) => new X509Certificate(certificatesFromPem(source.current()!.svid.certChainPem)[1]!).serialNumber;

/** A raw TLS connection with a forged certificate to the sidecar's inbound: resolves with how it ended. */
function callInbound(port: number, source: IdentitySource): Promise<string> {
  const { svid } = source.current()!;
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, cert: svid.certChainPem, key: svid.privateKey.export({ format: "pem", type: "pkcs8" }) as string, ca: ca.bundlePem, checkServerIdentity: () => undefined });
    let data = "";
    socket.on("secureConnect", () => socket.write(`GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n`));
    socket.on("data", (chunk: Buffer) => (data += chunk.toString()));
    socket.on("error", () => undefined);
    socket.on("close", () => resolve(data === "" ? "closed without an answer" : data.split("\r\n")[0]!));
  });
}

describe("a certificate minted with the key of an issuer retired with --now", () => {
  let preOpen: { server: Awaited<ReturnType<typeof createMtlsServer>>; caller: Awaited<ReturnType<typeof connectMtls>>; clientSide: Awaited<ReturnType<typeof connectMtls>> };
  const serverLog = makeLogger();

  beforeAll(async () => {
    ca = await startMeshCa();
    closers.push(() => ca.close());
    const layout = caLayout(`${ca.dir}/ca`);
    oldIssuer = new X509Certificate(readFileSync(layout.issuerCert));
    oldIssuerKey = createPrivateKey(readFileSync(layout.issuerKey));
    const identity = async (appId: string) => {
      const source = createIdentity({ ca: ca.server.address, bundlePem: ca.bundlePem, namespace: "default", appId, token: await ca.token("default", appId), bundleRefreshMs: 200, backoff: { initialMs: 100, maxMs: 500 } });
      closers.push(() => source.close());
      await source.ready();
      return source;
    };
    api = await identity("api");
    web = await identity("web");
    const app = createHttpServer((_req, res) => res.end("app"));
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    closers.push(() => new Promise((r) => app.close(r)));
    sidecar = await startTestSidecar(ca, { appId: "inventory", app: `127.0.0.1:${(app.address() as AddressInfo).port}`, bundleRefreshInterval: "1s" });
    closers.push(() => sidecar.close());

    // Connections made with forged certificates while the issuer was still good (the key leaked
    // before the rotation): a caller on an SDK server, and an SDK client on a forged server.
    const server = await createMtlsServer({ identity: api, logger: serverLog }, (socket) => socket.on("error", () => undefined));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    closers.push(() => server.meshward.close());
    const caller = await connectMtls({ identity: forged(webId), expect: apiId, port: (server.address() as AddressInfo).port, logger: makeLogger() });
    caller.on("error", () => undefined);
    const forgedServer = await createMtlsServer({ identity: forged(apiId), logger: makeLogger() }, (socket) => socket.on("error", () => undefined));
    await new Promise<void>((r) => forgedServer.listen(0, "127.0.0.1", r));
    closers.push(() => forgedServer.meshward.close());
    const clientSide = await connectMtls({ identity: web, expect: apiId, port: (forgedServer.address() as AddressInfo).port, logger: makeLogger(), resumeSessions: false });
    clientSide.on("error", () => undefined);
    preOpen = { server, caller, clientSide };
    // An SDK server accepted such a caller before the rotation (the issuer was not revoked then).
    expect(caller.destroyed).toBe(false);

    // `meshward ca rotate-issuer --now`, as the CLI does it.
    const now = new Date();
    await rotateIssuer({ dir: `${ca.dir}/ca`, now, keepPrevious: false });
    recordRetiredIssuer(directoryFiles, layout, oldIssuer, now);
    // The root CRL reaches the workloads with a bundle refresh; they renew onto the new issuer.
    await waitFor("the root CRL to reach the workloads", () => revokedIn(api) && revokedIn(web));
    await waitFor("the workloads to renew onto the new issuer", () => issuerOf(api) !== oldIssuer.serialNumber && issuerOf(web) !== oldIssuer.serialNumber);
  }, 60_000);

  afterAll(async () => {
    for (const close of closers.reverse()) await close();
  });

  it("an open connection that used such a certificate is closed when the root CRL arrives (SDK server and SDK client)", async () => {
    await waitFor("the forged caller's connection to close", () => preOpen.caller.destroyed);
    await waitFor("the connection to the forged server to close", () => preOpen.clientSide.destroyed);
    expect(serverLog.lines.join("\n")).toMatch(/closing an open connection from spiffe:\/\/mesh\.test\/ns\/default\/web: .*issuer certificate \(serial [0-9A-F]+\) is revoked/);
  });

  it("an SDK server refuses it as a client; a certificate of the new issuer still works", async () => {
    const logger = makeLogger();
    const server = await createHttpsServer({ identity: api, logger }, (req, res) => res.end(req.peer.spiffeId));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    closers.push(() => server.meshward.close());
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    await expect(httpsRequest(url, { identity: forged(webId), expect: apiId, logger: makeLogger(), timeoutMs: 5000 })).rejects.toThrow();
    expect(logger.lines.join("\n")).toContain(`the peer's issuer certificate (serial ${normalizeSerial(oldIssuer.serialNumber)}) is revoked`);
    const res = await httpsRequest(url, { identity: web, expect: apiId, logger: makeLogger(), timeoutMs: 5000 });
    expect(res.text()).toBe(webId);
  });

  it("an SDK client refuses it as a server", async () => {
    const server = await createHttpsServer({ identity: forged(apiId), logger: makeLogger() }, (_req, res) => res.end("forged"));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    closers.push(() => server.meshward.close());
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    await expect(httpsRequest(url, { identity: web, expect: apiId, logger: makeLogger(), timeoutMs: 5000 })).rejects.toMatchObject({ code: "E_CERT_REVOKED" });
    await expect(connectMtls({ identity: web, expect: apiId, port: (server.address() as AddressInfo).port, logger: makeLogger() })).rejects.toThrow(/issuer certificate \(serial [0-9A-F]+\) is revoked/);
  });

  it("an SDK client refuses it however many certificates come before the retired issuer (every one sent is read; more than 16 are refused)", async () => {
    for (const padding of [12, 20]) {
      const server = await createHttpsServer({ identity: forgedPadded(apiId, padding), logger: makeLogger() }, (_req, res) => res.end("forged"));
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      closers.push(() => server.meshward.close());
      const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/`;
      await expect(httpsRequest(url, { identity: web, expect: apiId, logger: makeLogger(), timeoutMs: 5000 })).rejects.toMatchObject({ code: padding > 16 ? "E_PEER_UNTRUSTED" : "E_CERT_REVOKED" });
    }
  });

  it("a sidecar's inbound refuses it; a caller on the new issuer gets through", async () => {
    const port = sidecar.addresses.inbound.port;
    // The sidecar refreshes its own bundle (every second): the root CRL reaches it shortly after the SDK workloads.
    let answer = "";
    for (let deadline = Date.now() + 20_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 200))) {
      answer = await callInbound(port, forged(webId));
      if (answer !== "HTTP/1.1 200 OK") break;
    }
    expect(answer).toBe("closed without an answer");
    expect(JSON.stringify(sidecar.logs.lines)).toMatch(/issuer certificate \(serial [0-9A-F]+\) is revoked/);
    expect(await callInbound(port, web)).toBe("HTTP/1.1 200 OK");
  });
});
