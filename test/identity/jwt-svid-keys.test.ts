import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { exportJWK, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createJwtSvidValidator } from "../../src/index.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";

// The SDK's JWT-SVID validator fetched the CA's JWKS once and again only for an unknown kid, so a
// key the CA had withdrawn (its issuer rotated after a leak: the JWT key is derived from it) kept
// validating tokens anyone holding it could still mint, until the process restarted. The key set
// is now replaced once keysMaxAgeMs old. The JWKS comes from an HTTPS server presenting the CA's
// SPIFFE ID whose published set the test changes: a real meshward CA keeps a retired key
// published until every token it signed has expired, and a token minted afterwards with the old
// key needs that key, which is what this server's set stands in for (test/dapr/jwt-svid.test.ts
// covers the real CA's JWKS and rotation).
const CA_ID = "spiffe://example.org/ns/meshward-system/meshward-ca";

describe("the JWT-SVID validator's key set", () => {
  let pki: TestPki;
  let server: Server;
  let published: object;
  let fetches = 0;
  let down = false;
  let ca: { address: string; bundlePem: string; trustDomain: string; caSpiffeId: string };
  const k1 = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const k2 = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const jwk = async (key: KeyObject, kid: string) => ({ ...(await exportJWK(key)), kid, alg: "ES256", use: "sig" });
  const token = (key: KeyObject, kid: string) =>
    new SignJWT({}).setProtectedHeader({ alg: "ES256", kid, typ: "JWT" }).setSubject("spiffe://example.org/ns/prod/admin").setAudience("payments").setIssuedAt().setExpirationTime("5m").sign(key);
  const outcome = (validator: ReturnType<typeof createJwtSvidValidator>, jwt: string) =>
    validator.validate(jwt, "payments").then(
      (v) => `accepted ${v.spiffeId}`,
      (error: { code?: string }) => `refused ${error.code}`,
    );
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  beforeAll(async () => {
    pki = createTestPki({ trustDomain: "example.org" });
    const leaf = pki.issueLeaf({ spiffeId: CA_ID });
    server = createServer({ cert: leaf.chainPem, key: leaf.keyPem }, (req, res) => {
      // Key fetches only: the validator also asks for the CA's CRL set after each (its root CRLs).
      if (req.url === "/.well-known/jwks.json") fetches++;
      if (down) return void res.writeHead(503).end();
      res.setHeader("content-type", "application/json").end(JSON.stringify(published));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    ca = { address: `127.0.0.1:${(server.address() as AddressInfo).port}`, bundlePem: pki.root.certPem, trustDomain: "example.org", caSpiffeId: CA_ID };
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    pki?.cleanup();
  });

  it("drops a key the CA no longer publishes once the set is keysMaxAgeMs old", async () => {
    published = { keys: [await jwk(k1.publicKey, "k1")] };
    down = false;
    const validator = createJwtSvidValidator({ ca, keysMaxAgeMs: 300 });
    expect(await outcome(validator, await token(k1.privateKey, "k1"))).toBe("accepted spiffe://example.org/ns/prod/admin");
    // The CA rotated its issuer: only k2 is published. A token minted now with k1 must not pass.
    published = { keys: [await jwk(k2.publicKey, "k2")] };
    const forged = await token(k1.privateKey, "k1");
    await sleep(400);
    expect(await outcome(validator, forged)).toBe("refused E_TOKEN_SIGNATURE");
    expect(await outcome(validator, await token(k2.privateKey, "k2"))).toBe("accepted spiffe://example.org/ns/prod/admin");
  });

  it("keeps validating with the last keys while the CA is down, for keysMaxStaleMs, then refuses every token", async () => {
    published = { keys: [await jwk(k1.publicKey, "k1")] };
    down = false;
    const validator = createJwtSvidValidator({ ca, keysMaxAgeMs: 200, keysMaxStaleMs: 1500, refreshCooldownMs: 300 });
    const jwt = await token(k1.privateKey, "k1");
    expect(await outcome(validator, jwt)).toBe("accepted spiffe://example.org/ns/prod/admin");
    down = true;
    await sleep(300);
    const before = fetches;
    // Stale but within keysMaxStaleMs: the failed refetch is tried, the old keys serve.
    expect(await outcome(validator, jwt)).toBe("accepted spiffe://example.org/ns/prod/admin");
    expect(fetches).toBe(before + 1);
    // Within the cooldown no second fetch is tried: the CA is not asked on every validation.
    expect(await outcome(validator, jwt)).toBe("accepted spiffe://example.org/ns/prod/admin");
    expect(fetches).toBe(before + 1);
    await sleep(1400);
    expect(await outcome(validator, jwt)).toMatch(/^refused E_/);
    // Once the CA answers again, tokens pass again.
    down = false;
    await sleep(300);
    expect(await outcome(validator, jwt)).toBe("accepted spiffe://example.org/ns/prod/admin");
  });
});
