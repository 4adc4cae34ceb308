import { generateKeyPairSync } from "node:crypto";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { exportJWK, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createJwtSvidValidator } from "../../src/index.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";

// The JWKS comes from an HTTPS server presenting the CA's SPIFFE ID, as jwt-svid-keys.test.ts does
// (test/dapr/jwt-svid.test.ts covers the real CA's JWKS).
const CA_ID = "spiffe://example.org/ns/meshward-system/meshward-ca";

describe("the JWT-SVID validator's audience", () => {
  let pki: TestPki;
  let server: Server;
  let ca: { address: string; bundlePem: string; trustDomain: string; caSpiffeId: string };
  const key = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const token = (audience: string | string[]) =>
    new SignJWT({}).setProtectedHeader({ alg: "ES256", kid: "k1", typ: "JWT" }).setSubject("spiffe://example.org/ns/prod/admin").setAudience(audience).setExpirationTime("5m").sign(key.privateKey);

  beforeAll(async () => {
    pki = createTestPki({ trustDomain: "example.org" });
    const leaf = pki.issueLeaf({ spiffeId: CA_ID });
    const published = JSON.stringify({ keys: [{ ...(await exportJWK(key.publicKey)), kid: "k1", alg: "ES256", use: "sig" }] });
    server = createServer({ cert: leaf.chainPem, key: leaf.keyPem }, (_req, res) => res.setHeader("content-type", "application/json").end(published));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    ca = { address: `127.0.0.1:${(server.address() as AddressInfo).port}`, bundlePem: pki.root.certPem, trustDomain: "example.org", caSpiffeId: CA_ID };
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    pki?.cleanup();
  });

  it("passes a token for the audience, refuses one for another", async () => {
    const validator = createJwtSvidValidator({ ca });
    expect(await validator.validate(await token("payments"), "payments")).toMatchObject({ spiffeId: "spiffe://example.org/ns/prod/admin", audiences: ["payments"] });
    expect(await validator.validate(await token(["payments", "vault"]), "payments")).toMatchObject({ audiences: ["payments", "vault"] });
    await expect(validator.validate(await token("some-other-service"), "payments")).rejects.toMatchObject({ code: "E_TOKEN_AUDIENCE" });
  });

  it("refuses an audience that is not a non-empty string (from JavaScript, an unset option, an array) instead of skipping the check (found by review)", async () => {
    const validator = createJwtSvidValidator({ ca });
    const jwt = await token("some-other-service");
    const config: { audience?: string } = {}; // an optional setting left out
    for (const audience of [config.audience, ["payments", "some-other-service"], "", null, 7]) {
      await expect(validator.validate(jwt, audience as string), JSON.stringify(audience) ?? "undefined").rejects.toMatchObject({ code: "E_USAGE", message: expect.stringMatching(/audience must be a non-empty string/) });
    }
  });
});
