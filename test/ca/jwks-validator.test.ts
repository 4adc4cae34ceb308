import { createHmac, createPublicKey, KeyObject, type webcrypto } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair, SignJWT, type JWTPayload } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pino } from "pino";
import { initAnchors } from "../../src/ca/anchors.ts";
import type { Attestor } from "../../src/ca/attest/attestor.ts";
import { startCaServer } from "../../src/ca/server.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair as meshwardKeyPair } from "../../src/pki/keys.ts";
import { jwksAttestor } from "../../src/ca/attest/jwks.ts";
import { caConfigSchema, jwksValidatorSchema } from "../../src/config/ca.ts";
import { isMeshwardError } from "../../src/errors.ts";
import { refusal } from "../helpers/refusal.ts";

// The JWT validator against what an attacker can put in a token (RFC 8725, JWT Best Current
// Practices): the algorithm (§2.1, §3.1: `none`, and HS256 keyed with a public key — §2.1
// "Weak Signatures and Insufficient Signature Validation"), missing or far-off time claims, claims
// that are not SPIFFE path segments, and key ids that would make the CA refetch its JWKS on every
// request. Dapr Sentry's JWKS validator (dapr/dapr pkg/sentry/server/validator/jwks/jwks.go) parses
// with lestrrat-go/jwx, whose validation refuses exp, nbf and iat outside the skew
// (jwx jwt/validate.go: "iat not satisfied" for a token issued in the future).
// Every refusal comes with the token that passes, so each test can fail both ways.

type Key = Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];
const TD = "jwks-validator.test";
const ISSUER = "https://kubernetes.default.svc";
const AUDIENCE = "meshward";

let dir: string;
let ecKey: Key;
let secondEcKey: Key;
let rsaPublicPem: string;
let attestor: Attestor;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshward-jwks-validator-"));
  const ec = await generateKeyPair("ES256");
  const ec2 = await generateKeyPair("ES256");
  const rsa = await generateKeyPair("RS256");
  ecKey = ec.privateKey;
  secondEcKey = ec2.privateKey;
  rsaPublicPem = KeyObject.from(rsa.publicKey as webcrypto.CryptoKey).export({ type: "spki", format: "pem" }) as string;
  const keys = [
    { ...(await exportJWK(ec.publicKey)), kid: "ec-1", alg: "ES256", use: "sig" },
    { ...(await exportJWK(ec2.publicKey)), kid: "ec-2", use: "sig" },
    { ...(await exportJWK(rsa.publicKey)), kid: "rsa-1", alg: "RS256", use: "sig" },
  ];
  writeFileSync(join(dir, "jwks.json"), JSON.stringify({ keys }));
  attestor = jwksAttestor({ ...jwksValidatorSchema.parse({ jwksFile: join(dir, "jwks.json"), issuer: ISSUER, audience: AUDIENCE }), trustDomain: TD });
});

afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

const nowSeconds = () => Math.floor(Date.now() / 1000);

function claims(overrides: Record<string, unknown> = {}, namespace = "orders", serviceAccount = "api"): JWTPayload {
  const now = nowSeconds();
  return {
    iss: ISSUER,
    aud: AUDIENCE,
    sub: `system:serviceaccount:${namespace}:${serviceAccount}`,
    iat: now,
    exp: now + 600,
    "kubernetes.io": { namespace, serviceaccount: { name: serviceAccount, uid: "u" } },
    ...overrides,
  };
}

const sign = (payload: JWTPayload, header: { alg: string; kid?: string } = { alg: "ES256", kid: "ec-1" }, key: Key = ecKey) =>
  new SignJWT(payload).setProtectedHeader(header).sign(key);

const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");

async function attest(token: string, request: { appId?: string; namespace?: string } = {}, on: Attestor = attestor): Promise<string> {
  const identity = await on.attest({ token, requestedAppId: request.appId ?? "", requestedNamespace: request.namespace ?? "", requestedTrustDomain: "", peer: undefined, now: new Date() });
  return identity.spiffeId;
}

const refused = (promise: Promise<unknown>) => refusal(promise, "the token was accepted");

describe("JWT validator: algorithms (RFC 8725 §2.1, §3.1)", () => {
  it("accepts the ES256 token signed by a JWKS key (control)", async () => {
    expect(await attest(await sign(claims()))).toBe(`spiffe://${TD}/ns/orders/api`);
  });

  it("refuses alg none, even naming a JWKS key id", async () => {
    const r = await refused(attest(`${b64({ alg: "none", kid: "ec-1" })}.${b64(claims())}.`));
    expect(r.code).toBe("E_TOKEN_SIGNATURE");
    expect(r.message).toMatch(/algorithm that is not allowed/);
  });

  it("refuses HS256 keyed with the JWKS's RSA public key (algorithm confusion); RS256 with that key id is the only way in", async () => {
    const input = `${b64({ alg: "HS256", kid: "rsa-1" })}.${b64(claims())}`;
    const forged = `${input}.${createHmac("sha256", rsaPublicPem).update(input).digest("base64url")}`;
    expect((await refused(attest(forged))).code).toBe("E_TOKEN_SIGNATURE");
    // The same key id with an ES256 signature from another key does not verify either.
    expect((await refused(attest(await sign(claims(), { alg: "ES256", kid: "rsa-1" }))))).toMatchObject({ code: "E_TOKEN_SIGNATURE" });
  });

  it("refuses a token without kid when several JWKS keys could have signed it, naming why; with its kid it is accepted", async () => {
    const r = await refused(attest(await sign(claims(), { alg: "ES256" }, secondEcKey)));
    expect(r.code).toBe("E_TOKEN_SIGNATURE");
    expect(r.message).toMatch(/kid/);
    expect(await attest(await sign(claims(), { alg: "ES256", kid: "ec-2" }, secondEcKey))).toBe(`spiffe://${TD}/ns/orders/api`);
  });
});

describe("JWT validator: time claims (5 min tolerance by default, as Sentry)", () => {
  // Sentry's JWKS validator: jwt.WithAcceptableSkew(5*time.Minute) (dapr/dapr
  // pkg/sentry/server/validator/jwks/jwks.go). A CA whose clock lags the API server's by a few
  // minutes must still take a token the API server has just projected.
  it("refuses a token without exp; one with exp is accepted", async () => {
    const { exp: _exp, ...withoutExp } = claims();
    const r = await refused(attest(await sign(withoutExp)));
    expect(r.code).toBe("E_TOKEN_CLAIMS");
    expect(r.message).toMatch(/exp/);
  });

  it("refuses nbf 10 minutes ahead; nbf 4 minutes ahead is within the tolerance", async () => {
    expect((await refused(attest(await sign(claims({ nbf: nowSeconds() + 600 }))))).code).toBe("E_TOKEN_NOT_YET_VALID");
    expect(await attest(await sign(claims({ nbf: nowSeconds() + 240 })))).toBe(`spiffe://${TD}/ns/orders/api`);
  });

  it("refuses exp 10 minutes ago; exp 4 minutes ago is within the tolerance", async () => {
    expect((await refused(attest(await sign(claims({ exp: nowSeconds() - 600 }))))).code).toBe("E_TOKEN_EXPIRED");
    expect(await attest(await sign(claims({ exp: nowSeconds() - 240 })))).toBe(`spiffe://${TD}/ns/orders/api`);
  });

  it("refuses a token issued in the future (iat a day ahead), as jwx does for Sentry; iat 4 minutes ahead is within the tolerance", async () => {
    const r = await refused(attest(await sign(claims({ iat: nowSeconds() + 86_400, exp: nowSeconds() + 2 * 86_400 }))));
    expect(r.code).toBe("E_TOKEN_NOT_YET_VALID");
    expect(r.message).toMatch(/issued in the future/);
    expect(await attest(await sign(claims({ iat: nowSeconds() + 240 })))).toBe(`spiffe://${TD}/ns/orders/api`);
  });

  it("takes the tolerance from the config (jwks.clockTolerance): 10m accepts nbf 8 minutes ahead, 30s refuses nbf 2 minutes ahead", async () => {
    const withTolerance = (clockTolerance: string) =>
      jwksAttestor({ ...jwksValidatorSchema.parse({ jwksFile: join(dir, "jwks.json"), issuer: ISSUER, audience: AUDIENCE, clockTolerance }), trustDomain: TD });
    const eightAhead = await sign(claims({ nbf: nowSeconds() + 480, iat: nowSeconds() + 480 }));
    expect(await attest(eightAhead, {}, withTolerance("10m"))).toBe(`spiffe://${TD}/ns/orders/api`);
    expect((await refused(attest(eightAhead, {}, attestor))).code).toBe("E_TOKEN_NOT_YET_VALID");
    const twoAhead = await sign(claims({ nbf: nowSeconds() + 120 }));
    expect((await refused(attest(twoAhead, {}, withTolerance("30s")))).code).toBe("E_TOKEN_NOT_YET_VALID");
    expect(await attest(twoAhead)).toBe(`spiffe://${TD}/ns/orders/api`);
  });

  it("the CA config defaults jwks.clockTolerance to 5 minutes and refuses more than an hour", () => {
    const jwks = { jwksFile: "/k.json", issuer: ISSUER, audience: AUDIENCE };
    expect(caConfigSchema.parse({ jwks }).jwks?.clockTolerance).toBe(300_000);
    expect(caConfigSchema.parse({ jwks: { ...jwks, clockTolerance: "90s" } }).jwks?.clockTolerance).toBe(90_000);
    expect(caConfigSchema.safeParse({ jwks: { ...jwks, clockTolerance: "2h" } }).success).toBe(false);
  });
});

describe("JWT validator: claims become an identity only as valid SPIFFE path segments", () => {
  it.each([
    ["..", "api"],
    ["a/b", "api"],
    ["orders", "api%2Fadmin"],
    ["orders", ""],
    ["Orders\n", "api"],
  ])("refuses namespace %j / service account %j", async (namespace, serviceAccount) => {
    const r = await refused(attest(await sign(claims({}, namespace, serviceAccount))));
    expect(r.code).toBe("E_SPIFFE_ID_INVALID");
  });

  it("refuses a token for namespace orders asking for namespace billing; asking for orders is accepted", async () => {
    const token = await sign(claims());
    expect((await refused(attest(token, { namespace: "billing" }))).code).toBe("E_IDENTITY_MISMATCH");
    expect(await attest(token, { namespace: "orders", appId: "api" })).toBe(`spiffe://${TD}/ns/orders/api`);
  });

  it("refuses a token over 16 KiB before parsing it", async () => {
    const r = await refused(attest(await sign(claims({ padding: "x".repeat(16 * 1024) }))));
    expect(r.code).toBe("E_TOKEN_INVALID");
    expect(r.message).toMatch(/longer than/);
  });
});

describe("jwksUrl must be https", () => {
  it.each(["http://127.0.0.1:8080/jwks.json", "HTTP://issuer.example.org/jwks", "ftp://issuer.example.org/jwks"])("refuses %s: the keys that decide every identity never travel in plaintext", (jwksUrl) => {
    const result = caConfigSchema.safeParse({ jwks: { jwksUrl, issuer: ISSUER, audience: AUDIENCE } });
    expect(result.success).toBe(false);
    expect(JSON.stringify(result.error?.issues)).toContain("must be an https:// URL");
  });
  it("accepts https", () => {
    expect(caConfigSchema.parse({ jwks: { jwksUrl: "https://issuer.example.org/jwks", issuer: ISSUER, audience: AUDIENCE } }).jwks?.jwksUrl).toBe("https://issuer.example.org/jwks");
  });
});

describe("jwksUrl: a token with an unknown kid does not make the CA refetch within the cooldown", () => {
  // dapr/kit jwkscache (used by Sentry's JWKS validator) has a minimum refresh interval for the
  // same reason: otherwise anyone can make the CA hammer the JWKS server with forged key ids.
  let server: Server;
  let fetches = 0;
  let url: string;
  beforeAll(async () => {
    const jwk = { ...(await exportJWK((await generateKeyPair("ES256")).publicKey)), kid: "other" };
    const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(createPublicKey(KeyObject.from(ecKey as webcrypto.CryptoKey)))), kid: "ec-1", alg: "ES256" }, jwk] });
    server = createServer((_req, res) => {
      fetches++;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(jwks);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
  });
  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise<void>((resolve) => server?.close(() => resolve()));
  });

  it("fetches once for 20 tokens with random kids, and still accepts a token with a known kid", async () => {
    // The configuration refuses a plain-HTTP jwksUrl (below); the attestor is given one directly here
    // because an https fetch trusts the system store only (jwks-url.test.ts runs that in a child process).
    const https = jwksValidatorSchema.parse({ jwksUrl: url.replace("http:", "https:"), issuer: ISSUER, audience: AUDIENCE });
    const remote = jwksAttestor({ ...https, jwksUrl: url, trustDomain: TD });
    expect(await attest(await sign(claims()), {}, remote)).toBe(`spiffe://${TD}/ns/orders/api`);
    expect(fetches).toBe(1);
    for (let i = 0; i < 20; i++) {
      const kid = `forged-${Math.random().toString(36).slice(2)}`;
      expect((await refused(attest(await sign(claims(), { alg: "ES256", kid }), {}, remote))).code).toBe("E_TOKEN_SIGNATURE");
    }
    expect(fetches).toBe(1);
    expect(await attest(await sign(claims()), {}, remote)).toBe(`spiffe://${TD}/ns/orders/api`);
    expect(fetches).toBe(1);
  });
});

describe("sentry mapping (sub is the whole SPIFFE ID, as Sentry's JWKS validator reads it)", () => {
  // dapr/dapr pkg/sentry/server/validator/jwks/jwks.go: the expected sub is built from the request's
  // trust domain, namespace and app id. Here sub decides, and the CA signs only its own trust domain.
  it("signs sub in the CA's trust domain and refuses a sub in another one, or one that is not a workload ID", async () => {
    const caDir = join(dir, "sentry-ca");
    await initAnchors({ dir: caDir, trustDomain: TD, now: new Date() });
    const config = caConfigSchema.parse({ listen: "127.0.0.1:0", signingWorkers: 0, jwks: { jwksFile: join(dir, "jwks.json"), mapping: "sentry", audience: AUDIENCE } });
    const server = await startCaServer({ dir: caDir, config, logger: pino({ level: "silent" }) });
    try {
      const ask = async (sub: string) => {
        const token = await sign(claims({ sub }));
        try {
          const signed = await server.authority.sign({ csr: await createCsr({ keyPair: meshwardKeyPair() }), token, validator: "jwks", appId: "", namespace: "", trustDomain: "", peer: undefined });
          return signed.spiffeId;
        } catch (error) {
          if (isMeshwardError(error)) return error.code;
          throw error;
        }
      };
      expect(await ask(`spiffe://${TD}/ns/orders/api`)).toBe(`spiffe://${TD}/ns/orders/api`);
      expect(await ask("spiffe://other.test/ns/orders/api")).toBe("E_TRUST_DOMAIN_MISMATCH");
      expect(await ask(`spiffe://${TD}/admin`)).toBe("E_TOKEN_CLAIMS");
      expect(await ask(`spiffe://${TD}/ns/orders/../admin`)).toBe("E_TOKEN_CLAIMS");
    } finally {
      await server.close();
    }
  });
});

describe("Dapr's KUBERNETES validator is served from the jwks block only when its keys are a cluster's", () => {
  // A claim or sentry mapping trusts another identity provider. If KUBERNETES were served with its
  // keys too, a user of that provider who can pick their own subject and audience (a username, a
  // CI job's requested audience) would mint spiffe://…/ns/<ns>/<sa> with
  // sub system:serviceaccount:<ns>:<sa> and aud dapr.io/sentry. The kubernetes mapping (control)
  // does serve it: those keys sign service-account tokens.
  async function askKubernetes(jwks: Record<string, unknown>): Promise<string> {
    const caDir = mkdtempSync(join(dir, "kubernetes-alias-"));
    await initAnchors({ dir: caDir, trustDomain: TD, now: new Date() });
    const config = caConfigSchema.parse({ listen: "127.0.0.1:0", signingWorkers: 0, jwks: { jwksFile: join(dir, "jwks.json"), issuer: ISSUER, ...jwks } });
    const server = await startCaServer({ dir: caDir, config, logger: pino({ level: "silent" }) });
    try {
      const token = await sign(claims({ aud: "dapr.io/sentry", sub: "system:serviceaccount:prod:payments" }, "prod", "payments"));
      const signed = await server.authority.sign({ csr: await createCsr({ keyPair: meshwardKeyPair() }), token, validator: "kubernetes", appId: "payments", namespace: "prod", trustDomain: "", peer: undefined });
      return signed.spiffeId;
    } catch (error) {
      if (isMeshwardError(error)) return error.code;
      throw error;
    } finally {
      await server.close();
    }
  }

  it("refuses KUBERNETES with a claim mapping's keys", async () => {
    expect(await askKubernetes({ audience: AUDIENCE, mapping: { namespaceClaim: "ns", appIdClaim: "app" } })).toBe("E_VALIDATOR_DISABLED");
  });
  it("refuses KUBERNETES with a sentry mapping's keys", async () => {
    expect(await askKubernetes({ mapping: "sentry" })).toBe("E_VALIDATOR_DISABLED");
  });
  it("serves KUBERNETES with the kubernetes mapping (control)", async () => {
    expect(await askKubernetes({ mapping: "kubernetes" })).toBe(`spiffe://${TD}/ns/prod/payments`);
  });
});
