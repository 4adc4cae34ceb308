import { X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeProtectedHeader } from "jose";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { caLayout, initAnchors } from "../../src/ca/anchors.ts";
import { JwtSvidIssuer } from "../../src/ca/jwt-svid.ts";
import { rotateIssuer } from "../../src/ca/rotation.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { fetchFromCa, fetchFromCaWithChain, requestCertificate } from "../../src/identity/ca-client.ts";
import { rootCrlRevocations } from "../../src/identity/ca-source.ts";
import { createJwtSvidValidator } from "../../src/index.ts";
import { normalizeSerial } from "../../src/pki/certificate.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { decodePrivateKey, generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem } from "../../src/pki/pem.ts";

// The JWT-SVID key is derived from the X.509 issuer key (public derivation): whoever holds an issuer
// key signs JWT-SVIDs for any SPIFFE ID with the key derived from it. An ordinary rotation keeps the
// previous key published for the JWT-SVID TTL (its tokens keep validating); `rotate-issuer --now`
// (the answer to a leaked issuer key) must withdraw the retired issuer's key at once, also from
// jwt-keys.json and after a restart, and the SDK validator must refuse a key whose issuer the root
// CRLs it holds list. A real CA on loopback, real rotations.
const TD = "jwt-retired-issuer.test";

describe("JWT-SVID keys of retired issuers", () => {
  let work: string;
  let dir: string;
  let bundlePem: string;
  let ca: CaServer | undefined;
  const config = caConfigSchema.parse({ listen: "127.0.0.1:0", workloadTtl: "1h", crlRefresh: "100ms", anchorPoll: "100ms", signingWorkers: 0, signRateLimit: false });
  const start = () => startCaServer({ dir, config, logger: pino({ level: "silent" }) });
  const direct = () => ({ address: ca!.address, bundlePem, trustDomain: TD });
  const kids = async () => (JSON.parse((await fetchFromCa(direct(), "/.well-known/jwks.json")).toString("utf8")) as { keys: { kid: string; meshward_issuer_serial?: string }[] }).keys;
  const currentIssuer = () => {
    const layout = caLayout(dir);
    const der = certificatesFromPem(readFileSync(layout.issuerCert, "utf8"))[0]!;
    return { privateKey: decodePrivateKey(readFileSync(layout.issuerKey, "utf8")), serial: normalizeSerial(new X509Certificate(der).serialNumber) };
  };
  /** The kid of the JWT key derived from an issuer key (what its holder can sign with). */
  const derivedKid = async (issuer: { privateKey: ReturnType<typeof currentIssuer>["privateKey"]; serial: string }) =>
    (await new JwtSvidIssuer({ algorithm: "ES256", ttlMs: 3_600_000, issuer: () => "https://anything", clock: () => new Date() }).jwks(issuer)).keys[0]!;
  /** A JWT-SVID for any ID signed with the key derived from `issuerKey` (the holder of a leaked issuer key). */
  const forge = async (issuerKey: ReturnType<typeof currentIssuer>["privateKey"]) => {
    const attacker = new JwtSvidIssuer({ algorithm: "ES256", ttlMs: 3_600_000, issuer: () => "https://anything", clock: () => new Date() });
    return (await attacker.issue(issuerKey, `spiffe://${TD}/ns/prod/admin`, ["payments"], new Date(Date.now() + 3_600_000))).perAudience.payments!;
  };
  const issueGenuine = async (appId: string) => {
    const token = (await issueJoinToken(ca!.store, { spiffeId: `spiffe://${TD}/ns/shop/${appId}`, ttlMs: 600_000 })).token;
    const signed = await requestCertificate(direct(), { csrPem: await createCsr({ keyPair: generateKeyPair() }), token, validator: "JOIN_TOKEN", namespace: "shop", appId, jwtAudiences: ["payments"] });
    return signed.jwtSvid!;
  };
  const outcome = (validator: ReturnType<typeof createJwtSvidValidator>, jwt: string) =>
    validator.validate(jwt, "payments").then(
      (v) => `accepted ${v.spiffeId}`,
      (error: { code?: string }) => `refused ${error.code}`,
    );
  const until = async (what: string, done: () => Promise<boolean>) => {
    for (const deadline = Date.now() + 15_000; !(await done()); ) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };

  let first: ReturnType<typeof currentIssuer>;
  let firstToken: string;
  let leaked: ReturnType<typeof currentIssuer>;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-jwt-retired-issuer-"));
    dir = join(work, "ca");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    bundlePem = readFileSync(caLayout(dir).bundle, "utf8");
    ca = await start();
  });
  afterAll(async () => {
    await ca?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it("an ordinary rotation keeps the previous key published (named with its issuer): tokens it signed keep validating", async () => {
    first = currentIssuer();
    firstToken = await issueGenuine("web");
    const firstKid = (await derivedKid(first)).kid;
    expect(decodeProtectedHeader(firstToken).kid).toBe(firstKid);

    await rotateIssuer({ dir, now: new Date(), keepPrevious: true });
    await until("the CA to publish the new key beside the previous one", async () => (await kids()).length === 2);
    const published = await kids();
    expect(published.map((k) => k.kid)).toContain(firstKid);
    expect(published.find((k) => k.kid === firstKid)?.meshward_issuer_serial).toBe(first.serial);
    expect(published[0]!.meshward_issuer_serial).toBe(currentIssuer().serial);
    const state = JSON.parse(readFileSync(join(dir, "jwt-keys.json"), "utf8")) as { retired: { jwk: { kid: string }; issuer?: string }[] };
    expect(state.retired.map((k) => [k.jwk.kid, k.issuer])).toEqual([[firstKid, first.serial]]);

    // A validator fetching the keys after the rotation still accepts the token signed before it.
    const validator = createJwtSvidValidator({ ca: direct() });
    expect(await outcome(validator, firstToken)).toBe(`accepted spiffe://${TD}/ns/shop/web`);
  });

  it("rotate-issuer --now withdraws the retired issuer's key at once, and the key of the issuer an ordinary rotation kept (its key dropped too); the validator refuses them, also from keys it cached before", async () => {
    leaked = currentIssuer();
    const leakedKid = (await derivedKid(leaked)).kid;
    // Fetched before the rotation (the leaked issuer's key is the current one then), cached for an hour.
    let heldRevocations = new Set<string>();
    const cached = createJwtSvidValidator({ ca: { ...direct(), revokedSerials: () => heldRevocations }, keysMaxAgeMs: 3_600_000 });
    await cached.refresh();
    expect(await outcome(cached, await forge(leaked.privateKey))).toBe(`accepted spiffe://${TD}/ns/prod/admin`);

    const installed = await rotateIssuer({ dir, now: new Date(), keepPrevious: false });
    await until("the root CRL listing the leaked issuer, and the CA serving under the new one", async () => {
      const listed = rootCrlRevocations(await fetchFromCa(direct(), "/v1/crl?format=set"), bundlePem).has(leaked.serial);
      const serving = (await fetchFromCaWithChain(direct(), "/readyz")).servingChain[1];
      return listed && serving !== undefined && new X509Certificate(serving).fingerprint256 === installed.fingerprint256;
    });
    // adopt() retires the previous key asynchronously (a key derivation): wait for the JWKS to settle.
    await until("the CA to drop the leaked issuer's key", async () => !(await kids()).some((k) => k.kid === leakedKid));

    // The first issuer (kept in issuer.prev.* by the ordinary rotation) is dropped by --now too: its
    // key sat beside the leaked one, so it is retired with it (the root CRL lists it) and its JWT key
    // is withdrawn, not left published up to the TTL (review rotation task 3).
    const firstKid = (await derivedKid(first)).kid;
    expect(rootCrlRevocations(await fetchFromCa(direct(), "/v1/crl?format=set"), bundlePem).has(first.serial)).toBe(true);
    await until("the CA to drop the first issuer's key", async () => !(await kids()).some((k) => k.kid === firstKid));
    const published = await kids();
    expect(published.map((k) => k.kid)).not.toContain(leakedKid);
    expect(published.map((k) => k.kid)).toEqual([published[0]!.kid]);
    expect(readFileSync(join(dir, "jwt-keys.json"), "utf8")).not.toContain(leakedKid);
    expect(readFileSync(join(dir, "jwt-keys.json"), "utf8")).not.toContain(firstKid);
    expect(await outcome(cached, await forge(first.privateKey))).toBe(`accepted spiffe://${TD}/ns/prod/admin`); // cached, before the CRLs below

    // A validator fetching the keys now refuses the forgery and the first issuer's tokens alike.
    const fresh = createJwtSvidValidator({ ca: direct() });
    expect(await outcome(fresh, await forge(leaked.privateKey))).toBe("refused E_TOKEN_SIGNATURE");
    expect(await outcome(fresh, firstToken)).toBe("refused E_TOKEN_SIGNATURE");
    // The validator that cached the leaked key: once the revocations it is judged with list the
    // issuer (here the root CRLs, as an identity source's bundle holds them), the key verifies nothing.
    heldRevocations = rootCrlRevocations(await fetchFromCa(direct(), "/v1/crl?format=set"), bundlePem);
    expect(await outcome(cached, await forge(leaked.privateKey))).toBe("refused E_TOKEN_ISSUER_RETIRED");
    expect(await outcome(cached, await forge(first.privateKey))).toBe("refused E_TOKEN_ISSUER_RETIRED");
    // The new issuer's tokens pass.
    expect(await outcome(fresh, await issueGenuine("api"))).toBe(`accepted spiffe://${TD}/ns/shop/api`);
  });

  it("a restarted CA does not publish a retired issuer's key that jwt-keys.json still holds (as left by an earlier version), and removes it", async () => {
    const leakedJwk = await derivedKid(leaked);
    const firstJwk = await derivedKid(first);
    await ca!.close();
    ca = undefined;
    // What a CA before this fix left: the leaked issuer's key kept for an hour, without its issuer (version 1).
    const strip = (jwk: Record<string, unknown>) => Object.fromEntries(Object.entries(jwk).filter(([name]) => name !== "meshward_issuer_serial"));
    const until1h = Math.ceil(Date.now() / 1000) + 3600;
    writeFileSync(join(dir, "jwt-keys.json"), `${JSON.stringify({ version: 1, retired: [{ jwk: strip(leakedJwk as never), until: until1h }] })}\n`);
    ca = await start();
    expect((await kids()).map((k) => k.kid)).not.toContain(leakedJwk.kid);
    expect(existsSync(join(dir, "jwt-keys.json")) ? readFileSync(join(dir, "jwt-keys.json"), "utf8") : "").not.toContain(leakedJwk.kid);
    expect(await outcome(createJwtSvidValidator({ ca: direct() }), await forge(leaked.privateKey))).toBe("refused E_TOKEN_SIGNATURE");

    // Recorded with its issuer (this version): a key whose issuer is retired is dropped (the leaked
    // one, and the first one, dropped by the same --now), another kept.
    await ca.close();
    ca = undefined;
    const other = { privateKey: generateKeyPair().privateKey, serial: "0A1B2C3D4E5F" };
    const otherJwk = await derivedKid(other);
    writeFileSync(join(dir, "jwt-keys.json"), `${JSON.stringify({ version: 2, retired: [{ jwk: leakedJwk, until: until1h, issuer: leaked.serial }, { jwk: firstJwk, until: until1h, issuer: first.serial }, { jwk: otherJwk, until: until1h, issuer: other.serial }] })}\n`);
    ca = await start();
    const published = (await kids()).map((k) => k.kid);
    expect(published).not.toContain(leakedJwk.kid);
    expect(published).not.toContain(firstJwk.kid);
    expect(published).toContain(otherJwk.kid);
    expect(readFileSync(join(dir, "jwt-keys.json"), "utf8")).not.toContain(leakedJwk.kid);
  });
});
