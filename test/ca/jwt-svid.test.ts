import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { afterAll, describe, expect, it } from "vitest";
import { JwtSvidIssuer, type RevokedIssuer } from "../../src/ca/jwt-svid.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";

// JWT-SVIDs per the SPIFFE JWT-SVID spec (spiffe/spiffe standards/JWT-SVID.md): sub = SPIFFE ID,
// aud and exp required, kid in the header, ES256 or EdDSA; the key rotates with the X.509 issuer
// and the old one stays published until its tokens expire. Time is driven by an injected clock.
describe("JwtSvidIssuer", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-jwtsvid-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  let serials = 0;
  /** An issuer as the CA holds it: its private key and its certificate's serial. */
  const issuerKey = () => ({ privateKey: generateKeyPair().privateKey, serial: (++serials).toString(16).toUpperCase().padStart(32, "A") });
  const start = new Date("2026-12-03T10:00:00Z");

  const make = (algorithm: "ES256" | "EdDSA", clock: { now: Date }, stateFile?: string, revokedIssuers?: () => RevokedIssuer[]) =>
    new JwtSvidIssuer({ algorithm, ttlMs: 3_600_000, issuer: () => "https://ca.example:8443", clock: () => clock.now, ...(stateFile ? { stateFile } : {}), ...(revokedIssuers ? { revokedIssuers } : {}) });

  it.each(["ES256", "EdDSA"] as const)("%s: tokens verify against the published JWKS with the spec's claims", async (algorithm) => {
    const clock = { now: start };
    const jwts = make(algorithm, clock);
    const key = issuerKey();
    const notAfter = new Date(start.getTime() + 24 * 3_600_000);
    const issued = await jwts.issue(key.privateKey, "spiffe://public/ns/default/orders", ["sts.example.com", "vault", "vault"], notAfter);
    const keys = createLocalJWKSet((await jwts.jwks(key)) as never);
    const header = decodeProtectedHeader(issued.jwt);
    expect(header).toMatchObject({ alg: algorithm, typ: "JWT" });
    expect(typeof header.kid).toBe("string");
    const { payload } = await jwtVerify(issued.jwt, keys, { audience: "public", currentDate: start, algorithms: [algorithm] });
    expect(payload).toMatchObject({ sub: "spiffe://public/ns/default/orders", aud: ["public", "sts.example.com", "vault"], iss: "https://ca.example:8443", exp: Math.floor(start.getTime() / 1000) + 3600 });
    expect(Object.keys(issued.perAudience)).toEqual(["sts.example.com", "vault"]);
    for (const [audience, token] of Object.entries(issued.perAudience)) {
      const verified = await jwtVerify(token, keys, { audience, currentDate: start });
      expect(verified.payload.aud).toEqual([audience]);
    }
    // Another audience, a later time, another key set: refused.
    await expect(jwtVerify(issued.jwt, keys, { audience: "other", currentDate: start })).rejects.toThrow();
    await expect(jwtVerify(issued.jwt, keys, { audience: "public", currentDate: new Date(start.getTime() + 3_601_000) })).rejects.toThrow(/exp/);
    await expect(jwtVerify(issued.jwt, createLocalJWKSet((await make(algorithm, clock).jwks(issuerKey())) as never), { currentDate: start })).rejects.toThrow();
    // The JWKS holds public keys only.
    expect(JSON.stringify(await jwts.jwks(key))).not.toMatch(/"d"/);
  });

  it("caps exp at the X509-SVID's NotAfter; refuses bad audiences", async () => {
    const clock = { now: start };
    const jwts = make("ES256", clock);
    const notAfter = new Date(start.getTime() + 600_000);
    const issued = await jwts.issue(issuerKey().privateKey, "spiffe://public/ns/default/orders", ["a"], notAfter);
    expect(issued.expiresAt).toEqual(notAfter);
    for (const bad of [[""], ["has space"], Array.from({ length: 11 }, (_, i) => `a${i}`), ["x".repeat(257)]]) {
      await expect(jwts.issue(issuerKey().privateKey, "spiffe://public/ns/default/orders", bad, notAfter)).rejects.toMatchObject({ code: "E_REQUEST_INVALID" });
    }
  });

  it("derives the same key from the same issuer (replicas, restarts) and another one from another issuer", async () => {
    const clock = { now: start };
    const key = issuerKey();
    const a = (await make("ES256", clock).jwks(key)).keys[0]!;
    const b = (await make("ES256", clock).jwks(key)).keys[0]!;
    const c = (await make("ES256", clock).jwks(issuerKey())).keys[0]!;
    const d = (await make("EdDSA", clock).jwks(key)).keys[0]!;
    expect(a.kid).toBe(b.kid);
    expect(a.x).toBe(b.x);
    expect(c.kid).not.toBe(a.kid);
    expect(d.kty).toBe("OKP");
  });

  it("keeps the previous key published until its tokens expire, across a restart, then drops it", async () => {
    const clock = { now: start };
    const stateFile = join(work, "jwt-keys.json");
    const jwts = make("ES256", clock, stateFile);
    const oldKey = issuerKey();
    const newKey = issuerKey();
    const old = await jwts.issue(oldKey.privateKey, "spiffe://public/ns/default/orders", ["vault"], new Date(start.getTime() + 86_400_000));
    clock.now = new Date(start.getTime() + 60_000);
    await jwts.retire(oldKey);
    expect(readFileSync(stateFile, "utf8")).not.toMatch(/"d"/);
    const restarted = make("ES256", clock, stateFile);
    const published = await restarted.jwks(newKey);
    expect(published.keys).toHaveLength(2);
    // The old token still verifies against what is published after the rotation.
    await expect(jwtVerify(old.perAudience.vault!, createLocalJWKSet(published as never), { audience: "vault", currentDate: clock.now })).resolves.toBeTruthy();
    const fresh = await restarted.issue(newKey.privateKey, "spiffe://public/ns/default/orders", ["vault"], new Date(start.getTime() + 86_400_000));
    expect(decodeProtectedHeader(fresh.jwt).kid).toBe(published.keys[0]!.kid);
    // Every token of the old key has expired (retired at +1 min, TTL 1 h): it is gone, also from the file.
    clock.now = new Date(start.getTime() + 60_000 + 3_600_000 + 1000);
    expect((await restarted.jwks(newKey)).keys).toHaveLength(1);
    expect(JSON.parse(readFileSync(stateFile, "utf8")).retired).toEqual([]);
  });

  it("never publishes the key of an issuer retired with --now: withdrawn at retire(), later, and from the state file", async () => {
    const clock = { now: start };
    const stateFile = join(work, "jwt-keys-revoked.json");
    const revoked: RevokedIssuer[] = [];
    const jwts = make("ES256", clock, stateFile, () => revoked);
    const [a, b, c, d] = [issuerKey(), issuerKey(), issuerKey(), issuerKey()];
    const kidOf = async (key: ReturnType<typeof issuerKey>) => (await make("ES256", clock).jwks(key)).keys[0]!.kid;
    // Every published key names its issuer's serial.
    expect((await jwts.jwks(a)).keys[0]).toMatchObject({ kid: await kidOf(a), meshward_issuer_serial: a.serial });
    // An ordinary rotation a -> b: a stays published, named with its issuer.
    expect(await jwts.retire(a)).toBe("kept");
    expect((await jwts.jwks(b)).keys.map((k) => [k.kid, (k as Record<string, unknown>).meshward_issuer_serial])).toEqual([[await kidOf(b), b.serial], [await kidOf(a), a.serial]]);
    // b -> c with --now: b is recorded as retired before the CA sees the change; its key is never published.
    clock.now = new Date(start.getTime() + 60_000);
    revoked.push({ serial: b.serial, revokedAt: clock.now });
    expect(await jwts.retire(b)).toBe("withdrawn");
    expect((await jwts.jwks(c)).keys.map((k) => k.kid)).toEqual([await kidOf(c), await kidOf(a)]);
    expect(readFileSync(stateFile, "utf8")).not.toContain(await kidOf(b));
    // a kept key whose issuer is retired later (a state file shared, a record restored): dropped at the next use.
    revoked.push({ serial: a.serial, revokedAt: clock.now });
    expect((await jwts.jwks(c)).keys.map((k) => k.kid)).toEqual([await kidOf(c)]);
    expect(JSON.parse(readFileSync(stateFile, "utf8")).retired).toEqual([]);

    // A state file written before version 2 (no issuer recorded) with c's key and d's key
    // (retired more than a TTL after the last --now): c's goes at start, d's stays.
    const legacyFile = join(work, "jwt-keys-legacy.json");
    const publicOf = async (key: ReturnType<typeof issuerKey>) => {
      const { meshward_issuer_serial: _serial, ...jwk } = (await make("ES256", clock).jwks(key)).keys[0]! as Record<string, unknown>;
      return jwk;
    };
    const cRetiredAt = clock.now.getTime() / 1000;
    const dRetiredAt = cRetiredAt + 2 * 3600 + 60;
    writeFileSync(legacyFile, JSON.stringify({ version: 1, retired: [{ jwk: await publicOf(c), until: cRetiredAt + 3600 }, { jwk: await publicOf(d), until: dRetiredAt + 3600 }] }));
    revoked.splice(0, revoked.length, { serial: c.serial, revokedAt: clock.now });
    const restarted = make("ES256", clock, legacyFile, () => revoked);
    expect((JSON.parse(readFileSync(legacyFile, "utf8")) as { retired: { jwk: { kid: string } }[] }).retired.map((k) => k.jwk.kid)).toEqual([await kidOf(d)]);
    expect((await restarted.jwks(issuerKey())).keys.map((k) => k.kid)).toContain(await kidOf(d));
  });
});
