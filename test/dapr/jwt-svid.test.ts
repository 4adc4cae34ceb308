import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { get } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rotateIssuer } from "../../src/ca/rotation.ts";
import { requestCertificate } from "../../src/identity/ca-client.ts";
import { createJwtSvidValidator } from "../../src/index.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { buildGoCheck, daprCsr, daprdToken, signCertificate } from "./daprd-client.ts";

// JWT-SVIDs as daprd asks for them: SignCertificateRequest.jwt_audiences (field 7), read back from
// SignCertificateResponse.jwt (field 4) and per_audience_jwts (field 5) as dapr/dapr
// pkg/security/sentry.go does; checked with jose against the JWKS the CA publishes, and with
// meshward's SDK helper. The CA is a real `meshward ca serve` process.
const SENTRY_ID = "spiffe://public/ns/dapr-system/dapr-sentry";

function httpsGet(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, { ca, checkServerIdentity: () => undefined }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    }).on("error", reject);
  });
}

describe.each(["ES256", "EdDSA"] as const)("JWT-SVIDs signed %s", (algorithm) => {
  let work: string;
  let caDir: string;
  let goCheck: string;
  let ca: (LongRunning & { match: RegExpMatchArray }) | undefined;
  let address: string;
  let anchors: string;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-jwt-e2e-"));
    caDir = join(work, "ca");
    goCheck = await buildGoCheck();
    expect((await runCli(["ca", "init", "--trust-domain", "public", "--dir", caDir, "--key-type", algorithm === "EdDSA" ? "ed25519" : "ec-p256"])).code).toBe(0);
    anchors = readFileSync(join(caDir, "bundle.pem"), "utf8");
    writeFileSync(join(work, "ca.yaml"), `jwtSvid:\n  algorithm: ${algorithm}\n  ttl: 30m\n`);
    ca = await startCli(
      ["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--config", join(work, "ca.yaml"), "--serving-spiffe-id", SENTRY_ID, "--default-validator", "insecure", "--allow-insecure-dev"],
      /listening on (\S+) as (\S+)/,
    );
    address = ca.match[1] as string;
  }, 240_000);

  afterAll(async () => {
    await ca?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const ask = async (jwtAudiences: string[]) => {
    const { csrPem } = await daprCsr(goCheck, "ed25519");
    return signCertificate({ address, trustAnchorsPem: anchors, sentryId: SENTRY_ID, appId: "orders", namespace: "default", csrPem, jwtAudiences, ...daprdToken({}) });
  };
  const publishedKeys = async () => {
    const jwks = await httpsGet(`https://${address}/.well-known/jwks.json`, anchors);
    expect(jwks.status).toBe(200);
    return JSON.parse(jwks.body) as JSONWebKeySet;
  };

  it("returns a JWT-SVID with the requested audiences that jose verifies against the CA's published JWKS", async () => {
    const identity = await ask(["sts.amazonaws.com", "api://AzureADTokenExchange"]);
    expect(identity.jwt).toBeDefined();
    expect(Object.keys(identity.perAudienceJwts).sort()).toEqual(["api://AzureADTokenExchange", "sts.amazonaws.com"]);
    const discovery = JSON.parse((await httpsGet(`https://${address}/.well-known/openid-configuration`, anchors)).body);
    const port = address.split(":").pop();
    expect(discovery).toMatchObject({ issuer: `https://localhost:${port}`, jwks_uri: `https://localhost:${port}/.well-known/jwks.json`, id_token_signing_alg_values_supported: [algorithm] });
    const keys = createLocalJWKSet(await publishedKeys());
    const { payload, protectedHeader } = await jwtVerify(identity.jwt!, keys, { audience: "sts.amazonaws.com", issuer: discovery.issuer, algorithms: [algorithm] });
    expect(protectedHeader.alg).toBe(algorithm);
    // sub is the X509-SVID's SPIFFE ID; aud carries the trust domain (dapr/kit parses it with that audience).
    expect(payload.sub).toBe(identity.spiffeId);
    expect(payload.aud).toEqual(["public", "sts.amazonaws.com", "api://AzureADTokenExchange"]);
    expect((payload.exp as number) * 1000).toBeLessThanOrEqual(identity.validUntil.getTime());
    const single = await jwtVerify(identity.perAudienceJwts["sts.amazonaws.com"]!, keys, { audience: "sts.amazonaws.com" });
    expect(single.payload.aud).toEqual(["sts.amazonaws.com"]);
    await expect(jwtVerify(identity.perAudienceJwts["sts.amazonaws.com"]!, keys, { audience: "api://AzureADTokenExchange" })).rejects.toThrow();
  }, 60_000);

  it("the SDK helper validates them, and refuses another audience, a tampered token and another CA's token", async () => {
    const identity = await ask(["vault"]);
    const validator = createJwtSvidValidator({ ca: { address, bundlePem: anchors, trustDomain: "public", caSpiffeId: SENTRY_ID } });
    const ok = await validator.validate(identity.perAudienceJwts.vault!, "vault");
    expect(ok.spiffeId).toBe("spiffe://public/ns/default/orders");
    await expect(validator.validate(identity.perAudienceJwts.vault!, "s3")).rejects.toMatchObject({ code: "E_TOKEN_AUDIENCE" });
    const [h, p, s] = identity.perAudienceJwts.vault!.split(".");
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...decodeJwt(identity.perAudienceJwts.vault!), sub: "spiffe://public/ns/default/payments" })).toString("base64url")}.${s}`;
    expect(p).not.toBe(forged.split(".")[1]);
    await expect(validator.validate(forged, "vault")).rejects.toMatchObject({ code: "E_TOKEN_SIGNATURE" });
    // A meshward client that is not told the CA's serving ID refuses to fetch the keys from it.
    const wrongId = createJwtSvidValidator({ ca: { address, bundlePem: anchors, trustDomain: "public" } });
    await expect(wrongId.validate(identity.perAudienceJwts.vault!, "vault")).rejects.toMatchObject({ code: "E_SPIFFE_MISMATCH" });
  }, 60_000);

  // Sentry with JWTs enabled returns `jwt` on every SignCertificate, asked for or not, with aud =
  // [trust domain, ...jwt_audiences] (dapr/dapr pkg/sentry/server/server.go@8728f60 signCertificate:
  // `if s.jwtEnabled { audiences := append([]string{res.TrustDomain.String()}, req.GetJwtAudiences()...) …}`),
  // so a daprd without --sentry-request-jwt-audiences (the default) still has a JWT-SVID.
  it("asks for no audience (daprd's default), still gets a JWT-SVID for the trust domain, and no per-audience ones", async () => {
    const identity = await ask([]);
    expect(identity.jwt).toBeDefined();
    expect(identity.perAudienceJwts).toEqual({});
    const { payload } = await jwtVerify(identity.jwt!, createLocalJWKSet(await publishedKeys()), { audience: "public", algorithms: [algorithm] });
    expect(payload.aud).toEqual(["public"]);
    expect(payload.sub).toBe(identity.spiffeId);
    expect((payload.exp as number) * 1000).toBeLessThanOrEqual(identity.validUntil.getTime());
  }, 60_000);

  it("meshward's own clients (JOIN_TOKEN, SVID validators, which daprd never sends) get a JWT-SVID only when they list audiences", async () => {
    // Signing one for every renewal would cost the CA a signature nobody reads.
    const ask = async (jwtAudiences: string[]) => {
      const created = await runCli(["token", "create", "--dir", caDir, "--namespace", "default", "--app-id", "orders"]);
      expect(created.code, created.stderr).toBe(0);
      const token = created.stdout.trim().split("\n").pop() as string;
      const connection = { address, bundlePem: anchors, trustDomain: "public", caSpiffeId: SENTRY_ID };
      return requestCertificate(connection, { csrPem: await createCsr({ keyPair: generateKeyPair() }), token, validator: "JOIN_TOKEN", namespace: "default", appId: "orders", jwtAudiences });
    };
    const plain = await ask([]);
    expect(plain.certChainPem).toContain("BEGIN CERTIFICATE");
    expect(plain.jwtSvid).toBeUndefined();
    const withJwt = await ask(["vault"]);
    const { payload } = await jwtVerify(withJwt.jwtSvid!, createLocalJWKSet(await publishedKeys()), { audience: "vault", algorithms: [algorithm] });
    expect(payload.aud).toEqual(["public", "vault"]);
    expect(Object.keys(withJwt.perAudienceJwtSvids ?? {})).toEqual(["vault"]);
  }, 60_000);

  it("rotates the key with the issuer and keeps the old one published: old tokens still validate; --now withdraws the retired issuer's key and the kept one", async () => {
    const before = await ask(["vault"]);
    const oldKid = decodeProtectedHeader(before.jwt!).kid;
    // An ordinary rotation (the automatic one: the previous issuer is kept). The CLI rotates on demand only with --now.
    await rotateIssuer({ dir: caDir, now: new Date(), keepPrevious: true });
    // The running CA adopts the new issuer within its anchor poll (1 s); wait for the JWKS to show it.
    let keys: JSONWebKeySet = { keys: [] };
    for (let i = 0; i < 100 && keys.keys.length < 2; i++) {
      keys = await publishedKeys();
      if (keys.keys.length < 2) await new Promise((r) => setTimeout(r, 100));
    }
    expect(keys.keys.map((k) => k.kid)).toContain(oldKid);
    expect(keys.keys).toHaveLength(2);
    const after = await ask(["vault"]);
    const newKid = decodeProtectedHeader(after.jwt!).kid;
    expect(newKid).not.toBe(oldKid);
    expect(keys.keys[0]!.kid).toBe(newKid);
    const validator = createJwtSvidValidator({ ca: { address, bundlePem: anchors, trustDomain: "public", caSpiffeId: SENTRY_ID } });
    expect((await validator.validate(before.perAudienceJwts.vault!, "vault")).spiffeId).toBe("spiffe://public/ns/default/orders");
    expect((await validator.validate(after.perAudienceJwts.vault!, "vault")).spiffeId).toBe("spiffe://public/ns/default/orders");
    expect(JSON.parse(readFileSync(join(caDir, "jwt-keys.json"), "utf8")).retired.map((k: { jwk: { kid: string } }) => k.jwk.kid)).toEqual([oldKid]);

    // rotate-issuer --now (a leaked key): the key derived from the issuer it retires is withdrawn at
    // once (its holder derives it too), and so is the key kept from the ordinary rotation: --now drops
    // that issuer's key (issuer.prev.*) too and retires it with the other (review rotation task 3).
    const rotated = await runCli(["ca", "rotate-issuer", "--dir", caDir, "--now"]);
    expect(rotated.code, rotated.stderr).toBe(0);
    const withdrawn = () => !keys.keys.some((k) => k.kid === newKid || k.kid === oldKid);
    for (let i = 0; i < 100 && !withdrawn(); i++) {
      keys = await publishedKeys();
      if (!withdrawn()) await new Promise((r) => setTimeout(r, 100));
    }
    const latest = decodeProtectedHeader((await ask(["vault"])).jwt!).kid;
    expect(keys.keys.map((k) => k.kid)).toEqual([latest]);
    expect(readFileSync(join(caDir, "jwt-keys.json"), "utf8")).not.toContain(newKid);
    expect(readFileSync(join(caDir, "jwt-keys.json"), "utf8")).not.toContain(oldKid);
    const fresh = createJwtSvidValidator({ ca: { address, bundlePem: anchors, trustDomain: "public", caSpiffeId: SENTRY_ID } });
    await expect(fresh.validate(after.perAudienceJwts.vault!, "vault")).rejects.toMatchObject({ code: "E_TOKEN_SIGNATURE" });
    await expect(fresh.validate(before.perAudienceJwts.vault!, "vault")).rejects.toMatchObject({ code: "E_TOKEN_SIGNATURE" });
  }, 60_000);
});
