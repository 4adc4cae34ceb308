/**
 * A misbehaving "CA" for tests of what a workload identity accepts, after the one in the
 * workload-identity review (/tmp/review-identity/fake-ca.mts). It holds a real CA directory's
 * issuer key (from initAnchors), so its serving certificate chains to the real root and the
 * workload trusts it, and answers SignCertificate, /v1/bundle and /v1/crl as `mode` says. Use it
 * only for answers a real meshward CA never gives (a bundle without its own root, a certificate
 * under a foreign root); a real rotation is tested against the real CA.
 *
 * modes: ok | foreign-root (bundle, CRL and certificates of an unrelated root) |
 *        drop-root (certificates of the real issuer, returned with a foreign root set) |
 *        drop-root-bundle (a published bundle holding only a foreign root) |
 *        add-root (a published bundle holding the real root and a foreign one) |
 *        new-issuer-old-crl (certificates of a second issuer under the real root, the CRL still
 *          signed by the first: a real CA's answers in the moment after it rotated its issuer,
 *          before its next CRL refresh, made to last)
 */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureServer, type Http2SecureServer, type ServerHttp2Session } from "node:http2";
import type { Socket } from "node:net";
import { join } from "node:path";
import { createCrl } from "../../src/pki/crl.ts";
import { parseCsr } from "../../src/pki/csr.ts";
import { decodePrivateKey, generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem, toPem } from "../../src/pki/pem.ts";
import { createIssuerCertificate, createRootCertificate, issueLeafCertificate } from "../../src/pki/index.ts";
import { decodeSignRequest, encodeSignResponse } from "../../src/protocol/sentry.ts";

export type FakeCaMode = "ok" | "foreign-root" | "drop-root" | "drop-root-bundle" | "add-root" | "new-issuer-old-crl";

export interface FakeCa {
  readonly address: string;
  mode: FakeCaMode;
  /** The foreign root (DER). */
  readonly foreignRoot: Buffer;
  /** TCP connections accepted and not closed yet, whatever they reached (a TLS handshake, HTTP/2, HTTP/1.1). */
  openConnections(): number;
  /** Stops listening and destroys every connection it accepted; resolves once the server has closed. */
  close(): Promise<void>;
}

export async function startFakeCa(caDir: string, trustDomain: string): Promise<FakeCa> {
  const issuerDer = certificatesFromPem(readFileSync(join(caDir, "issuer.pem"), "utf8"))[0]!;
  const rootDer = certificatesFromPem(readFileSync(join(caDir, "root.pem"), "utf8"))[0]!;
  const issuer = { certificate: new X509Certificate(issuerDer), der: issuerDer, privateKey: decodePrivateKey(readFileSync(join(caDir, "issuer.key"), "utf8")) };
  const now0 = Date.now();
  const otherRootKeys = generateKeyPair();
  const otherRoot = await createRootCertificate({ trustDomain, keyPair: otherRootKeys, notBefore: new Date(now0 - 3600e3), notAfter: new Date(now0 + 86400e3) });
  const otherIssuerKeys = generateKeyPair();
  const otherIssuerCert = await createIssuerCertificate({
    trustDomain,
    publicKey: otherIssuerKeys.publicKey,
    signer: { certificate: new X509Certificate(otherRoot.der), der: otherRoot.der, privateKey: otherRootKeys.privateKey },
    notBefore: new Date(now0 - 3600e3),
    notAfter: new Date(now0 + 86400e3),
  });
  const otherIssuer = { certificate: new X509Certificate(otherIssuerCert.der), der: otherIssuerCert.der, privateKey: otherIssuerKeys.privateKey };
  // A second issuer under the real root (as `ca rotate-issuer` makes).
  const rootKey = decodePrivateKey(readFileSync(join(caDir, "root.key"), "utf8"));
  const nextIssuerKeys = generateKeyPair();
  const nextIssuerCert = await createIssuerCertificate({
    trustDomain,
    publicKey: nextIssuerKeys.publicKey,
    signer: { certificate: new X509Certificate(rootDer), der: rootDer, privateKey: rootKey },
    notBefore: new Date(now0 - 3600e3),
    notAfter: new Date(now0 + 86400e3),
  });
  const nextIssuer = { certificate: new X509Certificate(nextIssuerCert.der), der: nextIssuerCert.der, privateKey: nextIssuerKeys.privateKey };
  const servingKeys = generateKeyPair();
  const serving = issueLeafCertificate({
    spiffeId: `spiffe://${trustDomain}/ns/meshward-system/meshward-ca`,
    dnsNames: ["localhost"],
    publicKey: servingKeys.publicKey,
    signer: issuer,
    notBefore: new Date(now0 - 60e3),
    notAfter: new Date(now0 + 86400e3),
  });
  const fake = { mode: "ok" as FakeCaMode };
  const server: Http2SecureServer = createSecureServer(
    {
      cert: toPem(serving.der, "CERTIFICATE") + toPem(issuerDer, "CERTIFICATE"),
      key: servingKeys.privateKey.export({ format: "pem", type: "pkcs8" }) as string,
      allowHTTP1: true,
      requestCert: true,
      rejectUnauthorized: false,
    },
    async (req, res) => {
      const mode = fake.mode;
      const path = req.url ?? "";
      if (path.startsWith("/v1/bundle")) {
        const roots = mode === "foreign-root" || mode === "drop-root-bundle" ? [otherRoot.der] : mode === "add-root" ? [rootDer, otherRoot.der] : [rootDer];
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ keys: roots.map((r) => ({ use: "x509-svid", kty: "EC", x5c: [r.toString("base64")] })) }));
        return;
      }
      if (path.startsWith("/v1/crl")) {
        const signer = mode === "foreign-root" ? otherIssuer : issuer;
        res.writeHead(200, { "content-type": "application/pkix-crl" });
        res.end(await createCrl({ signer, entries: [], thisUpdate: new Date(Date.now() - 60e3), nextUpdate: new Date(Date.now() + 3600e3), crlNumber: BigInt(Date.now()) }));
        return;
      }
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const request = decodeSignRequest(Buffer.concat(chunks).subarray(5));
      const csr = parseCsr(Buffer.from(request.certificateSigningRequest).toString("utf8"));
      const now = Date.now();
      const signer = mode === "foreign-root" ? otherIssuer : mode === "new-issuer-old-crl" ? nextIssuer : issuer;
      const roots = mode === "foreign-root" || mode === "drop-root" ? [otherRoot.der] : [rootDer];
      const leaf = issueLeafCertificate({
        spiffeId: `spiffe://${trustDomain}/ns/${request.namespace || "default"}/${request.id || "web"}`,
        publicKey: csr.publicKey,
        signer,
        notBefore: new Date(now - 5e3),
        notAfter: new Date(now + 3600e3),
      });
      const message = encodeSignResponse({
        workloadCertificate: Buffer.from(toPem(leaf.der, "CERTIFICATE") + toPem(signer.der, "CERTIFICATE")),
        trustChainCertificates: roots.map((r) => Buffer.from(toPem(r, "CERTIFICATE"))),
        validUntil: { seconds: Math.floor((now + 3600e3) / 1000), nanos: 0 },
      });
      const framed = Buffer.alloc(5 + message.length);
      framed.writeUInt32BE(message.length, 1);
      framed.set(message, 5);
      res.writeHead(200, { "content-type": "application/grpc" });
      res.addTrailers({ "grpc-status": "0" });
      res.end(framed);
    },
  );
  const sessions = new Set<ServerHttp2Session>();
  server.on("session", (session: ServerHttp2Session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  // Every TCP connection, handshake or not: close() ends them all. Destroying the HTTP/2 sessions
  // alone missed a connection still in its TLS handshake (and an HTTP/1.1 one: allowHTTP1), and
  // server.close() waited for it (up to the 120 s handshake timeout); as 936fec2 did for the fake
  // Kubernetes API server in test/ca/kube-api.test.ts.
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return Object.assign(fake, {
    address: `127.0.0.1:${port}`,
    foreignRoot: otherRoot.der,
    openConnections: () => sockets.size,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Any connection left open would hold close(): the sessions first (their streams end), then every socket.
        for (const session of sessions) session.destroy();
        for (const socket of sockets) socket.destroy();
      }),
  });
}
