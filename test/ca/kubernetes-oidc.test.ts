import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from "jose";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { jwksAttestor } from "../../src/ca/attest/jwks.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { opensslServerRenegotiating } from "../helpers/openssl-renegotiate.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";

// The CA finds the cluster's service-account signing keys through the API server's OIDC
// discovery (KEP-1393; kubernetes/pkg/serviceaccount/openidmetadata.go serves these two
// documents). No cluster runs here, so a local HTTPS server with a certificate from a test CA
// (standing in for the cluster CA) serves recorded discovery documents and checks the CA's
// bearer token, as the API server's authorizer does (system:service-account-issuer-discovery).
const FIXTURES = join(new URL(".", import.meta.url).pathname, "fixtures", "kubernetes-oidc");
const DISCOVERY = readFileSync(join(FIXTURES, "openid-configuration.json"), "utf8");
const ISSUER = (JSON.parse(DISCOVERY) as { issuer: string }).issuer;
const CA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.the-ca-own-token.sig";

interface SigningKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly jwk: Record<string, unknown>;
}

async function signingKey(kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair("RS256");
  const template = (JSON.parse(readFileSync(join(FIXTURES, "jwks.template.json"), "utf8")) as { keys: Record<string, unknown>[] }).keys[0]!;
  return { kid, privateKey, jwk: { ...template, kid, n: (await exportJWK(publicKey)).n } };
}

describe("JWT validator with Kubernetes OIDC discovery", () => {
  let pki: TestPki;
  let server: Server;
  let apiServer: string;
  let served: SigningKey[] = [];
  let jwksFetches = 0;
  let discoveryFetches = 0;
  /** Answer discovery / the JWKS with HTTP 500, as an API server that is starting or overloaded. */
  let discoveryFails = false;
  let jwksFails = false;
  let k1: SigningKey;
  let k2: SigningKey;
  let tokenFile: string;

  beforeAll(async () => {
    pki = createTestPki({ name: "kubernetes cluster ca" });
    const leaf = pki.issueLeaf({ dnsNames: ["localhost"] });
    tokenFile = join(pki.dir, "ca-token");
    writeFileSync(tokenFile, `${CA_TOKEN}\n`);
    [k1, k2] = await Promise.all([signingKey("k1"), signingKey("k2")]);
    served = [k1];
    server = createServer({ cert: leaf.chainPem, key: leaf.keyPem }, (req, res) => {
      if (req.headers.authorization !== `Bearer ${CA_TOKEN}`) {
        res.writeHead(401, { "content-type": "application/json" }).end('{"kind":"Status","code":401}');
        return;
      }
      if (req.url === "/.well-known/openid-configuration") {
        discoveryFetches += 1;
        if (discoveryFails) {
          res.writeHead(500, { "content-type": "application/json" }).end('{"kind":"Status","code":500}');
          return;
        }
        res.writeHead(200, { "content-type": "application/json" }).end(DISCOVERY);
        return;
      }
      if (req.url === "/openid/v1/jwks") {
        jwksFetches += 1;
        if (jwksFails) {
          res.writeHead(500, { "content-type": "application/json" }).end('{"kind":"Status","code":500}');
          return;
        }
        res.writeHead(200, { "content-type": "application/jwk-set+json" }).end(JSON.stringify({ keys: served.map((k) => k.jwk) }));
        return;
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    apiServer = `https://localhost:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    pki?.cleanup();
  });

  const projected = (key: SigningKey, claims: { iss?: string; sa?: string } = {}) =>
    new SignJWT({ "kubernetes.io": { namespace: "shop", serviceaccount: { name: claims.sa ?? "orders", uid: "u1" }, pod: { name: "orders-1", uid: "u2" } } })
      .setProtectedHeader({ alg: "RS256", kid: key.kid })
      .setIssuer(claims.iss ?? ISSUER)
      .setAudience(["meshward"])
      .setSubject(`system:serviceaccount:shop:${claims.sa ?? "orders"}`)
      .setIssuedAt()
      .setExpirationTime("1h")
      .sign(key.privateKey);

  const attestor = (overrides: { cooldown?: number; caFile?: string; tokenFile?: string; issuer?: string } = {}) =>
    jwksAttestor({
      kubernetes: { apiServer, tokenFile: overrides.tokenFile ?? tokenFile, caFile: overrides.caFile ?? pki.rootPath, cacheMaxAge: 600_000, cooldown: overrides.cooldown ?? 0 },
      audience: ["meshward"],
      mapping: "kubernetes",
      trustDomain: "cluster.test",
      ...(overrides.issuer !== undefined ? { issuer: overrides.issuer } : {}),
    });
  const ask = (token: string) => ({ token, requestedAppId: "", requestedNamespace: "", requestedTrustDomain: "", peer: undefined, now: new Date() });
  const refusal = async (promise: Promise<unknown>) => {
    try {
      await promise;
    } catch (error) {
      return error as { code: string };
    }
    throw new Error("expected a refusal");
  };

  it("a config with kubernetes discovery needs no JWKS file and no issuer; without any source it is refused", () => {
    const parsed = caConfigSchema.parse({ jwks: { kubernetes: {}, audience: "meshward" } });
    expect(parsed.jwks?.kubernetes).toEqual({
      apiServer: "https://kubernetes.default.svc",
      tokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token",
      caFile: "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
      cacheMaxAge: 600_000,
      cooldown: 30_000,
    });
    expect(caConfigSchema.safeParse({ jwks: { audience: "meshward", issuer: "x" } }).success).toBe(false);
    expect(caConfigSchema.safeParse({ jwks: { audience: "meshward", jwksFile: "/x" } }).success).toBe(false);
  });

  it("verifies a projected token with the keys and issuer it discovered, sending its own token", async () => {
    served = [k1];
    const before = jwksFetches;
    const identity = await attestor().attest(ask(await projected(k1)));
    expect(identity.spiffeId).toBe("spiffe://cluster.test/ns/shop/orders");
    expect(identity.allowedDnsNames).toEqual(["orders.shop.svc", "orders.shop.svc.cluster.local"]);
    expect(jwksFetches).toBe(before + 1);
    // A token from another issuer is refused with the discovered issuer.
    expect((await refusal(attestor().attest(ask(await projected(k1, { iss: "https://evil.example" }))))).code).toBe("E_TOKEN_ISSUER");
  });

  it("follows a key rotation: a token signed by the new key makes it refetch, and the retired key stops verifying", async () => {
    served = [k1];
    const validator = attestor({ cooldown: 0 });
    await validator.attest(ask(await projected(k1)));
    served = [k1, k2]; // the cluster adds its new key ...
    expect((await validator.attest(ask(await projected(k2)))).spiffeId).toMatch(/orders$/);
    served = [k2]; // ... and later drops the old one; the cache learns it at its next fetch
    // (after cacheMaxAge, or, as here, when a token names a key id it does not know).
    const unknown = await signingKey("k3");
    const before = jwksFetches;
    expect((await refusal(validator.attest(ask(await projected(unknown))))).code).toBe("E_TOKEN_SIGNATURE");
    expect(jwksFetches).toBe(before + 1); // it looked again before refusing
    expect((await refusal(validator.attest(ask(await projected(k1))))).code).toBe("E_TOKEN_SIGNATURE");
    expect((await validator.attest(ask(await projected(k2, { sa: "payments" })))).spiffeId).toMatch(/payments$/);
  });

  it("within the cooldown an unknown key id causes no fetch (a flood of forged kids cannot hammer the API server)", async () => {
    served = [k1];
    const validator = attestor({ cooldown: 3_600_000 });
    await validator.attest(ask(await projected(k1)));
    served = [k2];
    const before = jwksFetches;
    for (let i = 0; i < 5; i++) expect((await refusal(validator.attest(ask(await projected(k2))))).code).toBe("E_TOKEN_SIGNATURE");
    expect(jwksFetches).toBe(before);
    // the cached key still works
    served = [k1];
    expect((await validator.attest(ask(await projected(k1)))).spiffeId).toMatch(/orders$/);
  });

  it("fails closed when the API server refuses the CA's token or its certificate does not chain to the cluster CA", async () => {
    const wrongToken = join(pki.dir, "wrong-token");
    writeFileSync(wrongToken, "not-the-token");
    expect((await refusal(attestor({ tokenFile: wrongToken, issuer: ISSUER }).attest(ask(await projected(k1))))).code).toBe("E_JWKS_UNAVAILABLE");
    expect((await refusal(attestor({ tokenFile: wrongToken }).attest(ask(await projected(k1))))).code).toBe("E_JWKS_UNAVAILABLE");
    const other = createTestPki({ name: "another ca" });
    try {
      expect((await refusal(attestor({ caFile: other.rootPath }).attest(ask(await projected(k1))))).code).toBe("E_JWKS_UNAVAILABLE");
    } finally {
      other.cleanup();
    }
  });

  // An API server that renegotiates (openssl s_server, TLS 1.2, HelloRequest with a client-certificate
  // request once the discovery GET has arrived) is refused, as Envoy refuses server-initiated
  // renegotiation upstream by default (envoyproxy/envoy
  // api/envoy/extensions/transport_sockets/tls/v3/tls.proto, UpstreamTlsContext.allow_renegotiation).
  // The control (a client without the option accepting the same flow) is in test/ca/kube-api.test.ts.
  it("refuses an API server that renegotiates mid-request: E_JWKS_UNAVAILABLE, the discovery document is never read", async () => {
    const leaf = pki.issueLeaf({ dnsNames: ["localhost"] });
    const server = await opensslServerRenegotiating(leaf.certPath, leaf.keyPath, ["-cert_chain", leaf.chainPath]);
    try {
      const validator = jwksAttestor({
        kubernetes: { apiServer: `https://localhost:${server.port}`, tokenFile, caFile: pki.rootPath, cacheMaxAge: 600_000, cooldown: 0 },
        audience: ["meshward"],
        mapping: "kubernetes",
        trustDomain: "cluster.test",
      });
      const outcome = validator.attest(ask(await projected(k1))).then(
        () => new Error("expected a refusal"),
        (error: unknown) => error,
      );
      const reply = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${DISCOVERY.length}\r\nConnection: close\r\n\r\n${DISCOVERY}`;
      const { refusedByClient } = await server.renegotiateThenReply("GET /.well-known/openid-configuration", reply);
      expect(refusedByClient).toBe(true);
      const error = (await outcome) as { code: string; message: string };
      expect(error.code).toBe("E_JWKS_UNAVAILABLE");
      expect(error.message).toContain("/.well-known/openid-configuration");
      expect(error.message).toMatch(/the server's TLS connection failed after the handshake \(.*alert handshake failure.*\); meshward refuses TLS renegotiation, which the server may have asked for/);
    } finally {
      await server.stop();
    }
  });

  // Discovery and the JWKS are requests to the API server: a caller without a credential must not
  // be able to make the CA send them at will. A token that could never pass is refused before any
  // fetch, with the code jose would give it; after a failed fetch none is sent for the cooldown.
  const shaped = (claims: { aud?: string[]; exp?: number | "none" }) => {
    const jwt = new SignJWT({ "kubernetes.io": { namespace: "shop", serviceaccount: { name: "orders", uid: "u1" } } })
      .setProtectedHeader({ alg: "RS256", kid: k1.kid })
      .setIssuer(ISSUER)
      .setAudience(claims.aud ?? ["meshward"])
      .setSubject("system:serviceaccount:shop:orders")
      .setIssuedAt();
    if (claims.exp !== "none") jwt.setExpirationTime(claims.exp ?? "1h");
    return jwt.sign(k1.privateKey);
  };

  it("a token that could never pass causes no discovery or JWKS fetch, even while discovery fails", async () => {
    discoveryFails = true;
    try {
      const validator = attestor({ cooldown: 0 });
      const before = { discovery: discoveryFetches, jwks: jwksFetches };
      const now = Math.floor(Date.now() / 1000);
      for (let i = 0; i < 10; i++) {
        expect((await refusal(validator.attest(ask("x")))).code).toBe("E_TOKEN_INVALID");
        expect((await refusal(validator.attest(ask("a.b.c")))).code).toBe("E_TOKEN_INVALID");
        expect((await refusal(validator.attest(ask(await shaped({ exp: now - 3600 }))))).code).toBe("E_TOKEN_EXPIRED");
        expect((await refusal(validator.attest(ask(await shaped({ exp: "none" }))))).code).toBe("E_TOKEN_CLAIMS");
        expect((await refusal(validator.attest(ask(await shaped({ aud: ["https://kubernetes.default.svc"] }))))).code).toBe("E_TOKEN_AUDIENCE");
      }
      expect({ discovery: discoveryFetches, jwks: jwksFetches }).toEqual(before);
      // control: a token of the right shape does reach discovery
      expect((await refusal(validator.attest(ask(await projected(k1))))).code).toBe("E_JWKS_UNAVAILABLE");
      expect(discoveryFetches).toBe(before.discovery + 1);
    } finally {
      discoveryFails = false;
    }
  });

  it("while discovery fails, 60 requests fetch it once per cooldown; after the cooldown it is fetched again and tokens verify", async () => {
    served = [k1];
    discoveryFails = true;
    vi.useFakeTimers({ toFake: ["Date"] });
    try {
      const validator = attestor({ cooldown: 3_600_000 });
      const before = discoveryFetches;
      const token = await projected(k1);
      for (let i = 0; i < 30; i++) expect((await refusal(validator.attest(ask(token)))).code).toBe("E_JWKS_UNAVAILABLE");
      const concurrent = await Promise.all(Array.from({ length: 30 }, () => refusal(validator.attest(ask(token)))));
      expect(new Set(concurrent.map((error) => error.code))).toEqual(new Set(["E_JWKS_UNAVAILABLE"]));
      expect(discoveryFetches).toBe(before + 1);
      // The API server recovers; within the cooldown the CA does not know yet.
      discoveryFails = false;
      const error = (await refusal(validator.attest(ask(token)))) as { code: string; message: string };
      expect(error.code).toBe("E_JWKS_UNAVAILABLE");
      expect(error.message).toMatch(/HTTP 500 .*the CA tries again in \d+s/);
      expect(discoveryFetches).toBe(before + 1);
      vi.setSystemTime(Date.now() + 3_600_001);
      expect((await validator.attest(ask(await projected(k1)))).spiffeId).toBe("spiffe://cluster.test/ns/shop/orders");
      expect(discoveryFetches).toBe(before + 2);
    } finally {
      discoveryFails = false;
      vi.useRealTimers();
    }
  });

  it("while the JWKS fails, 60 requests fetch it once per cooldown; after the cooldown it is fetched again and tokens verify", async () => {
    served = [k1];
    jwksFails = true;
    vi.useFakeTimers({ toFake: ["Date"] });
    try {
      const validator = attestor({ cooldown: 3_600_000 });
      const before = jwksFetches;
      const token = await projected(k1);
      for (let i = 0; i < 30; i++) expect((await refusal(validator.attest(ask(token)))).code).toBe("E_JWKS_UNAVAILABLE");
      const concurrent = await Promise.all(Array.from({ length: 30 }, () => refusal(validator.attest(ask(token)))));
      expect(new Set(concurrent.map((error) => error.code))).toEqual(new Set(["E_JWKS_UNAVAILABLE"]));
      expect(jwksFetches).toBe(before + 1);
      jwksFails = false;
      expect((await refusal(validator.attest(ask(token)))).code).toBe("E_JWKS_UNAVAILABLE");
      expect(jwksFetches).toBe(before + 1);
      vi.setSystemTime(Date.now() + 3_600_001);
      expect((await validator.attest(ask(await projected(k1)))).spiffeId).toBe("spiffe://cluster.test/ns/shop/orders");
      expect(jwksFetches).toBe(before + 2);
    } finally {
      jwksFails = false;
      vi.useRealTimers();
    }
  });

  // Service-account names are DNS-1123 subdomains and may hold dots; a Service name is a DNS-1035
  // label. <pod>.<headless-service> as an account would otherwise get a StatefulSet pod's DNS name.
  it("grants <sa>.<ns>.svc names only to a service account whose name could be a Service's; a dotted one keeps its SPIFFE ID without DNS names", async () => {
    served = [k1];
    const validator = attestor();
    const dotted = await validator.attest(ask(await projected(k1, { sa: "dapr-scheduler-server-0.dapr-scheduler-server" })));
    expect(dotted.spiffeId).toBe("spiffe://cluster.test/ns/shop/dapr-scheduler-server-0.dapr-scheduler-server");
    expect(dotted.allowedDnsNames).toEqual([]);
    const plain = await validator.attest(ask(await projected(k1, { sa: "dapr-scheduler-server" })));
    expect(plain.allowedDnsNames).toEqual(["dapr-scheduler-server.shop.svc", "dapr-scheduler-server.shop.svc.cluster.local"]);
    // a name starting with a digit is a DNS-1123 label but not a Service name
    expect((await validator.attest(ask(await projected(k1, { sa: "0orders" })))).allowedDnsNames).toEqual([]);
  });
});
