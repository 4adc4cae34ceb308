import { createHash, createPrivateKey } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair as joseKeyPair, SignJWT } from "jose";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { caConfigSchema } from "../../src/config/ca.ts";
import { initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { fetchFromCa, requestCertificate, type CaConnection, type CertificateRequest } from "../../src/identity/ca-client.ts";
import { parseCrl } from "../../src/pki/crl.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { inspectCertificate } from "../../src/pki/inspect.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem, pemBlocks, toPem } from "../../src/pki/pem.ts";
import { exec } from "../helpers/exec.ts";
import { refusal } from "../helpers/refusal.ts";
import { csrWithRawDnsNames } from "../pki/helpers.ts";

type SigningKey = Awaited<ReturnType<typeof joseKeyPair>>["privateKey"];
const TD = "authority.test";
const silent = pino({ level: "silent" });

const refused = (promise: Promise<unknown>) => refusal(promise, "the CA signed");

describe("CA signing API: every refusal, and the CA keeps serving", () => {
  let work: string;
  let server: CaServer;
  let connection: CaConnection;
  let jwtKey: SigningKey;
  let otherJwtKey: SigningKey;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-authority-"));
    await initAnchors({ dir: join(work, "ca"), trustDomain: TD, now: new Date() });
    const jwt = await joseKeyPair("ES256");
    jwtKey = jwt.privateKey as SigningKey;
    otherJwtKey = (await joseKeyPair("ES256")).privateKey as SigningKey;
    const jwk = { ...(await exportJWK(jwt.publicKey)), kid: "k1", alg: "ES256", use: "sig" };
    writeFileSync(join(work, "jwks.json"), JSON.stringify({ keys: [jwk] }));
    const config = caConfigSchema.parse({
      listen: "127.0.0.1:0",
      workloadTtl: "1h",
      maxRequestBytes: 16 * 1024,
      jwks: { jwksFile: join(work, "jwks.json"), issuer: "https://kubernetes.default.svc", audience: "meshward" },
      crlRefresh: "100ms",
    });
    server = await startCaServer({ dir: join(work, "ca"), config, logger: silent });
    connection = { address: server.address, bundlePem: readFileSync(join(work, "ca", "bundle.pem"), "utf8"), trustDomain: TD };
  });

  afterAll(async () => {
    await server?.close();
    rmSync(work, { recursive: true, force: true });
  });

  const joinToken = async (namespace: string, appId: string, opts: { dnsNames?: string[]; expiresInMs?: number; uses?: number } = {}) => {
    const { token } = await issueJoinToken(server.store, {
      spiffeId: `spiffe://${TD}/ns/${namespace}/${appId}`,
      ttlMs: opts.expiresInMs ?? 3_600_000,
      ...(opts.uses !== undefined ? { uses: opts.uses } : {}),
      ...(opts.dnsNames !== undefined ? { dnsNames: opts.dnsNames } : {}),
    });
    return token;
  };
  const csr = async (opts: { spiffeId?: string; dnsNames?: string[] } = {}) => {
    const keyPair = generateKeyPair();
    return { keyPair, csrPem: await createCsr({ keyPair, ...opts }) };
  };
  const ask = (request: Partial<CertificateRequest> & { csrPem: string; token: string }, conn: CaConnection = connection) =>
    requestCertificate(conn, { validator: "JOIN_TOKEN", namespace: "", appId: "", ...request });
  const stillServes = async () => {
    const signed = await ask({ ...(await csr()), token: await joinToken("health", "probe") });
    expect(inspectCertificate(certificatesFromPem(signed.certChainPem)[0] as Buffer).uris).toEqual([`spiffe://${TD}/ns/health/probe`]);
  };

  it("signs with the attested identity, lifetime = --workload-ttl, NotBefore backdated by the clock skew", async () => {
    const before = Date.now();
    const signed = await ask({ ...(await csr()), token: await joinToken("orders", "api") });
    const leaf = inspectCertificate(certificatesFromPem(signed.certChainPem)[0] as Buffer);
    expect(leaf.uris).toEqual([`spiffe://${TD}/ns/orders/api`]);
    expect(leaf.isCa).toBe(false);
    expect(leaf.notAfter.getTime() - before).toBeGreaterThan(3_590_000);
    expect(leaf.notAfter.getTime() - before).toBeLessThanOrEqual(3_605_000);
    expect(before - leaf.notBefore.getTime()).toBeGreaterThanOrEqual(15 * 60_000 - 2000);
    expect(signed.validUntil.getTime()).toBe(Math.floor(leaf.notAfter.getTime() / 1000) * 1000);
    const record = await server.store.getIssuance(leaf.serial);
    expect(record).toMatchObject({ spiffeId: `spiffe://${TD}/ns/orders/api`, attestation: "join-token" });
  });

  it.each([
    ["malformed PEM", async () => ({ csrPem: "-----BEGIN CERTIFICATE REQUEST-----\nnot base64!\n-----END CERTIFICATE REQUEST-----\n" }), "E_CSR_INVALID"],
    ["not a CSR at all", async () => ({ csrPem: "hello" }), "E_CSR_INVALID"],
    [
      "a CSR whose signature does not verify",
      async () => {
        const { csrPem } = await csr();
        const der = Buffer.from(pemBlocks(csrPem)[0]!.der);
        der.writeUInt8(der.readUInt8(der.length - 5) ^ 0x01, der.length - 5);
        return { csrPem: toPem(der, "CERTIFICATE REQUEST") };
      },
      "E_CSR_SIGNATURE",
    ],
    ["a CSR naming another app's SPIFFE ID", async () => await csr({ spiffeId: `spiffe://${TD}/ns/orders/payments` }), "E_CSR_IDENTITY_MISMATCH"],
    ["a CSR asking for a DNS name the token does not allow", async () => await csr({ dnsNames: ["db.internal"] }), "E_CSR_DNS_NOT_ALLOWED"],
  ])("refuses %s", async (_name, make, code) => {
    const r = await refused(ask({ ...(await make()), token: await joinToken("orders", "api") }));
    expect(r.code).toBe(code);
    await stillServes();
  });

  // As every other bad CSR: E_CSR_INVALID (gRPC INVALID_ARGUMENT, grpc-status.test.ts), answered
  // before the token is spent, the name escaped in what the client (and the CA's log) gets.
  it("refuses a CSR whose DNS name is not printable ASCII with E_CSR_INVALID, the name escaped, and keeps the token", async () => {
    const token = await joinToken("orders", "dns-name");
    for (const name of ["app\u0000.example.org", "app.example.org\nforged", "app\u007f.example.org", Buffer.from("caf\u00e9.example.org", "utf8")]) {
      const r = await refused(ask({ csrPem: csrWithRawDnsNames(generateKeyPair(), [name]), token }));
      expect(r.code, JSON.stringify(r)).toBe("E_CSR_INVALID");
      expect(r.message).toMatch(/^[\x20-\x7e]+$/);
      expect(r.message).toMatch(/\\x(00|0a|7f|c3\\xa9)/);
    }
    await ask({ ...(await csr()), token });
    await stillServes();
  });

  it("does not spend a join token on a CSR it refuses", async () => {
    const token = await joinToken("orders", "retry");
    expect((await refused(ask({ csrPem: "garbage", token }))).code).toBe("E_CSR_INVALID");
    await ask({ ...(await csr()), token });
  });

  it.each([
    ["a CSR asking to be a CA", ["-addext", "basicConstraints=critical,CA:TRUE"], "ec", "E_CSR_REQUESTS_CA"],
    ["an RSA-1024 key", [], "rsa:1024", "E_KEY_WEAK"],
  ])("refuses %s (CSR made by openssl)", async (_name, ext, keyType, code) => {
    const dir = mkdtempSync(join(work, "req-"));
    const keyArgs = keyType === "ec" ? ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] : ["-newkey", keyType];
    const made = await exec("openssl", ["req", "-new", ...keyArgs, "-nodes", "-subj", "/CN=x", "-keyout", join(dir, "k.pem"), "-out", join(dir, "csr.pem"), ...ext]);
    expect(made.code, made.stderr).toBe(0);
    const r = await refused(ask({ csrPem: readFileSync(join(dir, "csr.pem"), "utf8"), token: await joinToken("orders", "api") }));
    expect(r.code).toBe(code);
    await stillServes();
  });

  // Issue 14: the token is only read at attestation; the use is spent with the issuance, so every
  // refusal after attestation leaves it for the following good request.
  const usesLeft = async (token: string) => {
    const hash = createHash("sha256").update(token).digest("hex");
    return (await server.store.listTokens()).find((t) => t.tokenHash === hash)?.usesLeft;
  };
  const opensslCaCsr = async (spiffeId: string) => {
    const dir = mkdtempSync(join(work, "req-"));
    const made = await exec("openssl", [
      "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=x",
      "-keyout", join(dir, "k.pem"), "-out", join(dir, "csr.pem"),
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", `subjectAltName=URI:${spiffeId}`,
    ]);
    expect(made.code, made.stderr).toBe(0);
    return { csrPem: readFileSync(join(dir, "csr.pem"), "utf8") };
  };
  it.each([
    ["a CSR naming another ID", async () => ({ ...(await csr({ spiffeId: `spiffe://${TD}/ns/orders/payments` })) }), "E_CSR_IDENTITY_MISMATCH"],
    ["a CSR asking for CA:TRUE", async () => await opensslCaCsr(`spiffe://${TD}/ns/orders/once`), "E_CSR_REQUESTS_CA"],
    ["a DNS name the token does not allow", async () => await csr({ dnsNames: ["admin.internal"] }), "E_CSR_DNS_NOT_ALLOWED"],
    ["an app id mismatch", async () => ({ ...(await csr()), appId: "payments" }), "E_IDENTITY_MISMATCH"],
    ["a namespace mismatch", async () => ({ ...(await csr()), namespace: "billing" }), "E_IDENTITY_MISMATCH"],
  ])("leaves a single-use token unspent when it refuses %s", async (_name, make, code) => {
    const token = await joinToken("orders", "once");
    expect((await refused(ask({ ...(await make()), token }))).code).toBe(code);
    expect(await usesLeft(token)).toBe(1);
    const signed = await ask({ ...(await csr()), token });
    expect(inspectCertificate(certificatesFromPem(signed.certChainPem)[0] as Buffer).uris).toEqual([`spiffe://${TD}/ns/orders/once`]);
    expect(await usesLeft(token)).toBe(0);
    expect((await refused(ask({ ...(await csr()), token }))).code).toBe("E_TOKEN_USED");
  });

  it("gives exactly one certificate for a single-use token raced by 24 requests, and logs only that one", async () => {
    const token = await joinToken("orders", "raced");
    const outcomes = await Promise.allSettled(Array.from({ length: 24 }, async () => ask({ ...(await csr()), token })));
    const issued = outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value] : []));
    expect(issued).toHaveLength(1);
    for (const o of outcomes) if (o.status === "rejected") expect((o.reason as { code?: string }).code).toBe("E_TOKEN_USED");
    const serial = inspectCertificate(certificatesFromPem(issued[0]!.certChainPem)[0] as Buffer).serial;
    const logged = await server.store.listIssuances({ spiffeId: `spiffe://${TD}/ns/orders/raced` });
    expect(logged.map((r) => r.serial)).toEqual([serial]);
  });

  it("accepts P-384 and RSA-2048 CSRs from openssl", async () => {
    for (const keyArgs of [["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"], ["-newkey", "rsa:2048"]]) {
      const dir = mkdtempSync(join(work, "req-"));
      await exec("openssl", ["req", "-new", ...keyArgs, "-nodes", "-subj", "/CN=x", "-keyout", join(dir, "k.pem"), "-out", join(dir, "csr.pem")]);
      const signed = await ask({ csrPem: readFileSync(join(dir, "csr.pem"), "utf8"), token: await joinToken("orders", "legacy") });
      expect(signed.certChainPem).toMatch(/BEGIN CERTIFICATE/);
    }
  });

  it("issues DNS SANs the join token allows", async () => {
    const signed = await ask({ ...(await csr({ dnsNames: ["db.internal"] })), token: await joinToken("data", "postgres", { dnsNames: ["db.internal"] }) });
    expect(inspectCertificate(certificatesFromPem(signed.certChainPem)[0] as Buffer).dnsNames).toEqual(["db.internal"]);
  });

  it("refuses a reused, an expired and an unknown join token", async () => {
    const token = await joinToken("orders", "api");
    await ask({ ...(await csr()), token });
    expect((await refused(ask({ ...(await csr()), token }))).code).toBe("E_TOKEN_USED");
    expect((await refused(ask({ ...(await csr()), token: await joinToken("orders", "api", { expiresInMs: -1000 }) }))).code).toBe("E_TOKEN_EXPIRED");
    expect((await refused(ask({ ...(await csr()), token: "mwjt_" + "A".repeat(43) }))).code).toBe("E_TOKEN_UNKNOWN");
    expect((await refused(ask({ ...(await csr()), token: "" }))).code).toBe("E_TOKEN_MISSING");
    await stillServes();
  });

  it("refuses a request for another trust domain", async () => {
    const r = await refused(ask({ ...(await csr()), token: await joinToken("orders", "api") }, { ...connection, trustDomain: "other.test" }).catch((e) => Promise.reject(e)));
    // The client itself refuses to talk to a CA that is not other.test's (server identity check) …
    expect(["E_SPIFFE_MISMATCH", "E_CA_UNAVAILABLE", "E_CA_ERROR"]).toContain(r.code);
    // … and the CA refuses a request naming another trust domain.
    const direct = await refused(
      server.authority.sign({ csr: (await csr()).csrPem, token: await joinToken("orders", "api"), validator: "join-token", appId: "", namespace: "", trustDomain: "other.test", peer: undefined }),
    );
    expect(direct.code).toBe("E_TRUST_DOMAIN_MISMATCH");
  });

  it("refuses an oversized request", async () => {
    const r = await refused(ask({ csrPem: "A".repeat(64 * 1024), token: "x" }));
    expect(r.code).toBe("E_REQUEST_TOO_LARGE");
    await stillServes();
  });

  it("refuses the insecure validator unless --allow-insecure-dev", async () => {
    const r = await refused(ask({ ...(await csr()), token: "", validator: "INSECURE", namespace: "orders", appId: "api" }));
    expect(r.code).toBe("E_VALIDATOR_DISABLED");
  });

  describe("JWT / JWKS (Kubernetes service-account tokens)", () => {
    const sat = (opts: { key?: SigningKey; audience?: string; expiresIn?: string; namespace?: string; sa?: string } = {}) =>
      new SignJWT({ "kubernetes.io": { namespace: opts.namespace ?? "orders", serviceaccount: { name: opts.sa ?? "api", uid: "u" } } })
        .setProtectedHeader({ alg: "ES256", kid: "k1" })
        .setIssuer("https://kubernetes.default.svc")
        .setAudience(opts.audience ?? "meshward")
        .setSubject(`system:serviceaccount:${opts.namespace ?? "orders"}:${opts.sa ?? "api"}`)
        .setIssuedAt()
        .setExpirationTime(opts.expiresIn ?? "10m")
        .sign(opts.key ?? jwtKey);

    it("maps namespace + service account to the workload ID", async () => {
      const signed = await ask({ ...(await csr()), token: await sat(), validator: "KUBERNETES" });
      expect(inspectCertificate(certificatesFromPem(signed.certChainPem)[0] as Buffer).uris).toEqual([`spiffe://${TD}/ns/orders/api`]);
    });
    it.each([
      ["a wrong audience", { audience: "someone-else" }, "E_TOKEN_AUDIENCE"],
      ["a wrong signature", { key: undefined as unknown as SigningKey, wrongKey: true }, "E_TOKEN_SIGNATURE"],
      ["an expired token", { expiresIn: "-5m" }, "E_TOKEN_EXPIRED"],
    ])("refuses %s", async (_name, opts, code) => {
      const token = await sat({ ...opts, ...("wrongKey" in opts ? { key: otherJwtKey } : {}) });
      expect((await refused(ask({ ...(await csr()), token, validator: "JWKS" }))).code).toBe(code);
      await stillServes();
    });
    it("refuses a token for one app used to ask for another", async () => {
      expect((await refused(ask({ ...(await csr()), token: await sat(), validator: "JWKS", appId: "payments" }))).code).toBe("E_IDENTITY_MISMATCH");
    });
    it("refuses garbage", async () => {
      expect((await refused(ask({ ...(await csr()), token: "not.a.jwt", validator: "JWKS" }))).code).toBe("E_TOKEN_INVALID");
    });
    it("never issues the CA's own serving identity: the CA's service account is no workload", async () => {
      // Workloads (and daprd) know the CA by this ID; whoever held it could pose as the CA to all of them.
      const r = await refused(ask({ ...(await csr()), token: await sat({ namespace: "meshward-system", sa: "meshward-ca" }), validator: "KUBERNETES" }));
      expect(r.code).toBe("E_IDENTITY_RESERVED");
      expect(r.message).toContain(`spiffe://${TD}/ns/meshward-system/meshward-ca`);
      // Another account of the same namespace is an ordinary workload.
      const signed = await ask({ ...(await csr()), token: await sat({ namespace: "meshward-system", sa: "meshward-injector" }), validator: "KUBERNETES" });
      expect(inspectCertificate(certificatesFromPem(signed.certChainPem)[0] as Buffer).uris).toEqual([`spiffe://${TD}/ns/meshward-system/meshward-injector`]);
    });
  });

  it("refuses a join token for the CA's serving identity without spending it", async () => {
    const token = await joinToken("meshward-system", "meshward-ca");
    for (let attempt = 0; attempt < 2; attempt++) {
      expect((await refused(ask({ ...(await csr()), token }))).code).toBe("E_IDENTITY_RESERVED");
    }
    expect((await server.store.listTokens()).find((t) => t.spiffeId === `spiffe://${TD}/ns/meshward-system/meshward-ca`)?.usesLeft).toBe(1);
    await stillServes();
  });

  describe("renewal with the current SVID", () => {
    it("renews the same identity over mTLS, and refuses a revoked certificate", async () => {
      const first = await csr();
      const signed = await ask({ ...first, token: await joinToken("orders", "renewer") });
      const renewConn: CaConnection = { ...connection, clientCertificate: { certChainPem: signed.certChainPem, privateKey: first.keyPair.privateKey } };
      const renewed = await ask({ ...(await csr()), token: "", validator: "SVID" }, renewConn);
      const info = inspectCertificate(certificatesFromPem(renewed.certChainPem)[0] as Buffer);
      expect(info.uris).toEqual([`spiffe://${TD}/ns/orders/renewer`]);
      expect((await server.store.getIssuance(info.serial))?.attestation).toBe("svid");

      const serial = inspectCertificate(certificatesFromPem(signed.certChainPem)[0] as Buffer).serial;
      await server.store.revoke({ serial, revokedAt: new Date(), reason: "keyCompromise" });
      let r = { code: "" };
      for (let i = 0; i < 30 && r.code !== "E_CERT_REVOKED"; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        r = await refused(ask({ ...(await csr()), token: "", validator: "SVID" }, renewConn)).catch(() => ({ code: "signed" }));
      }
      expect(r.code).toBe("E_CERT_REVOKED");
    });

    it("revoking a stolen certificate takes what the thief renewed from it, at once: the store refuses, not only the next CRL", async () => {
      const stolen = await csr();
      const signed = await ask({ ...stolen, token: await joinToken("orders", "stolen") });
      const withStolen: CaConnection = { ...connection, clientCertificate: { certChainPem: signed.certChainPem, privateKey: stolen.keyPair.privateKey } };
      // The thief renews onto a key of its own; the workload renews too (a fork of one certificate).
      const thiefKey = await csr();
      const thief = await ask({ ...thiefKey, token: "", validator: "SVID" }, withStolen);
      const workload = await ask({ ...(await csr()), token: "", validator: "SVID" }, withStolen);
      const serialOf = (chainPem: string) => inspectCertificate(certificatesFromPem(chainPem)[0] as Buffer).serial;
      const withThiefs: CaConnection = { ...connection, clientCertificate: { certChainPem: thief.certChainPem, privateKey: thiefKey.keyPair.privateKey } };
      // Still renewable before the revocation (this is what the revocation has to stop).
      const thiefAgain = await ask({ ...(await csr()), token: "", validator: "SVID" }, withThiefs);

      const revoked = await server.store.revokeLineage({ serial: serialOf(signed.certChainPem), revokedAt: new Date(), reason: "keyCompromise" });
      expect([...revoked].sort()).toEqual([signed, thief, workload, thiefAgain].map((c) => serialOf(c.certChainPem)).sort());
      // No wait for the CRL: the renewal is refused when it is recorded.
      const r = await refused(ask({ ...(await csr()), token: "", validator: "SVID" }, withThiefs));
      expect(r.code).toBe("E_CERT_REVOKED");
      expect(r.message).toContain(serialOf(thief.certChainPem));
      // And the next CRL lists every one of them.
      for (let i = 0; i < 30 && !revoked.every((serial) => server.authority.revokedSerials().has(serial)); i++) await new Promise((resolve) => setTimeout(resolve, 100));
      for (const serial of revoked) expect(server.authority.revokedSerials().has(serial)).toBe(true);
    });

    it("refuses renewal with a certificate from another CA, even for the same SPIFFE ID", async () => {
      const otherDir = join(work, "other-ca");
      await initAnchors({ dir: otherDir, trustDomain: TD, now: new Date() });
      const other = await startCaServer({ dir: otherDir, config: caConfigSchema.parse({ listen: "127.0.0.1:0", allowInsecureDev: true }), logger: silent });
      try {
        const keyPair = generateKeyPair();
        const foreign = await requestCertificate(
          { address: other.address, bundlePem: readFileSync(join(otherDir, "bundle.pem"), "utf8"), trustDomain: TD },
          { csrPem: await createCsr({ keyPair }), token: "", validator: "INSECURE", namespace: "orders", appId: "renewer" },
        );
        const r = await refused(ask({ ...(await csr()), token: "", validator: "SVID" }, { ...connection, clientCertificate: { certChainPem: foreign.certChainPem, privateKey: keyPair.privateKey } }));
        expect(r.code).toBe("E_ATTESTATION_UNTRUSTED");
      } finally {
        await other.close();
      }
    });

    // Issue 14: the CA's TLS layer (OpenSSL) accepts a CA certificate chained to the bundle as a
    // client certificate, so the svid validator must refuse it itself. Made with the openssl CLI
    // and signed by this CA's own issuer key, so only the CA:TRUE / keyCertSign bit is wrong.
    it.each([
      ["CA:TRUE", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature,keyCertSign\n"],
      ["keyCertSign", "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyCertSign\n"],
    ])("refuses renewal with a %s certificate chained to the bundle (a leaf from the same issuer renews)", async (_name, ext) => {
      const dir = mkdtempSync(join(work, "ca-leaf-"));
      const caDir = join(work, "ca");
      const spiffeId = `spiffe://${TD}/ns/orders/renewer`;
      writeFileSync(join(dir, "ext"), `${ext}extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:${spiffeId}\n`);
      const steps = [
        ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=not a leaf", "-keyout", join(dir, "k.pem"), "-out", join(dir, "csr.pem")],
        ["x509", "-req", "-in", join(dir, "csr.pem"), "-CA", join(caDir, "issuer.pem"), "-CAkey", join(caDir, "issuer.key"), "-set_serial", "0x7a11ce", "-days", "1", "-extfile", join(dir, "ext"), "-out", join(dir, "cert.pem")],
      ];
      for (const args of steps) {
        const made = await exec("openssl", args);
        expect(made.code, made.stderr).toBe(0);
      }
      const chain = readFileSync(join(dir, "cert.pem"), "utf8") + readFileSync(join(caDir, "issuer.pem"), "utf8");
      const verified = await exec("openssl", ["verify", "-purpose", "sslclient", "-CAfile", join(caDir, "bundle.pem"), "-untrusted", join(caDir, "issuer.pem"), join(dir, "cert.pem")]);
      expect(verified.stdout + verified.stderr).toContain("OK");
      const privateKey = createPrivateKey(readFileSync(join(dir, "k.pem")));
      const r = await refused(ask({ ...(await csr()), token: "", validator: "SVID" }, { ...connection, clientCertificate: { certChainPem: chain, privateKey } }));
      expect(r.code).toBe("E_ATTESTATION_UNTRUSTED");
      expect(r.message).toMatch(/not a leaf SVID/);
      const first = await csr();
      const leaf = await ask({ ...first, token: await joinToken("orders", "renewer") });
      const renewed = await ask({ ...(await csr()), token: "", validator: "SVID" }, { ...connection, clientCertificate: { certChainPem: leaf.certChainPem, privateKey: first.keyPair.privateKey } });
      expect(inspectCertificate(certificatesFromPem(renewed.certChainPem)[0] as Buffer).uris).toEqual([spiffeId]);
    });

    it("refuses renewal without a client certificate", async () => {
      expect((await refused(ask({ ...(await csr()), token: "", validator: "SVID" }))).code).toBe("E_ATTESTATION_NO_CERT");
    });
  });

  it("counts requests by result and reason in /metrics", async () => {
    const text = await server.registry.metrics();
    expect(text).toMatch(/meshward_ca_sign_requests_total\{result="ok",reason=""\} \d+/);
    expect(text).toMatch(/meshward_ca_sign_requests_total\{result="refused",reason="E_TOKEN_USED"\} [1-9]/);
    expect(text).toMatch(/meshward_cert_expiry_timestamp_seconds\{kind="issuer"\} \d+/);
    // When the CRL it serves was signed, in the whole seconds the CRL carries: workloads export
    // the same figure read from the CRL, and the alert MeshwardRevocationListBehind compares them.
    const served = parseCrl(await fetchFromCa(connection, "/v1/crl"));
    expect(text).toContain(`meshward_crl_this_update_timestamp_seconds{kind="ca"} ${served.thisUpdate.getTime() / 1000}\n`);
    expect(text).not.toMatch(/PRIVATE KEY/);
  });
});

describe("the issuer's validity bounds every signature", () => {
  it("caps the leaf at the issuer's expiry and never signs with an expired issuer", async () => {
    const work = mkdtempSync(join(tmpdir(), "meshward-issuer-"));
    try {
      const t0 = new Date();
      await initAnchors({ dir: join(work, "ca"), trustDomain: TD, now: t0, issuerTtlMs: 2 * 3_600_000 });
      let now = new Date(t0.getTime() + 3_600_000); // one hour of issuer life left
      const config = caConfigSchema.parse({ listen: "127.0.0.1:0", workloadTtl: "24h" });
      const server = await startCaServer({ dir: join(work, "ca"), config, logger: silent, clock: () => now });
      try {
        const sign = async () => {
          const { token } = await issueJoinToken(server.store, { spiffeId: `spiffe://${TD}/ns/a/b`, ttlMs: 60_000, now });
          const keyPair = generateKeyPair();
          return server.authority.sign({ csr: await createCsr({ keyPair }), token, validator: "join-token", appId: "", namespace: "", trustDomain: "", peer: undefined });
        };
        const capped = await sign();
        const issuerNotAfter = t0.getTime() + 2 * 3_600_000;
        expect(Math.abs(capped.notAfter.getTime() - issuerNotAfter)).toBeLessThan(1000);
        now = new Date(issuerNotAfter + 1000);
        expect((await refused(sign())).code).toBe("E_ISSUER_EXPIRED");
        now = new Date(t0.getTime() - 3_600_000);
        expect((await refused(sign())).code).toBe("E_ISSUER_NOT_YET_VALID");
      } finally {
        await server.close();
      }
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
