import { X509Certificate } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { fromCertificate } from "../../src/ca/attest/peer.ts";
import { svidAttestor } from "../../src/ca/attest/svid.ts";
import { generateKeyPair, issueLeafCertificate, toPem } from "../../src/pki/index.ts";
import { HOUR, makeCa, type TestCa } from "../pki/helpers.ts";
import { refusal } from "../helpers/refusal.ts";

// Renewal with the current SVID (validator "svid"), as SPIRE's agent renews with its own SVID
// (spiffe/spire pkg/server/api/svid/v1 and pkg/server/ca): what a workload presenting a
// certificate can and cannot get. The end-to-end cases (over mTLS, revoked, another CA, CA:TRUE)
// are in authority.test.ts; these drive time and trust directly, with no server, so that the
// refusals that need a clock (expired, not yet valid, a root retired by rotation) are exact.
// go-spiffe v2 x509svid.Verify refuses the same: a chain that does not reach a current bundle
// root, a leaf outside its validity, a leaf that is a CA.
const TD = "renewal.test";
let ca: TestCa;
let rotatedCa: TestCa;
let otherDomain: TestCa;

beforeAll(async () => {
  ca = await makeCa(TD);
  rotatedCa = await makeCa(TD);
  otherDomain = await makeCa("other.test");
});

/** The issuance log the attestor reads (the CA's store in production): what leaf() issues is recorded. */
const log = new Map<string, { serial: string; spiffeId: string; certificatePem: string }>();

function unlogged(spiffeId: string, signer: TestCa = ca, window: { notBefore: Date; notAfter: Date } = { notBefore: new Date(Date.now() - HOUR), notAfter: new Date(Date.now() + HOUR) }, serial?: Buffer) {
  const issued = issueLeafCertificate({ spiffeId, publicKey: generateKeyPair().publicKey, signer: signer.issuer, ...window, ...(serial !== undefined ? { serial } : {}) });
  return fromCertificate(new X509Certificate(issued.der));
}

function leaf(spiffeId: string, signer: TestCa = ca, window?: { notBefore: Date; notAfter: Date }) {
  const peer = unlogged(spiffeId, signer, window);
  log.set(peer.serial, { serial: peer.serial, spiffeId, certificatePem: toPem(peer.certificate.raw, "CERTIFICATE") });
  return peer;
}

function renew(peer: ReturnType<typeof leaf>, request: { appId?: string; namespace?: string; trustDomain?: string; now?: Date; trust?: TestCa[] } = {}) {
  const trust = request.trust ?? [ca];
  const attestor = svidAttestor({
    trust: () => ({ roots: trust.map((t) => t.root.certificate), intermediates: trust.map((t) => t.issuer.certificate), revoked: new Set() }),
    issued: async (serial) => log.get(serial),
  });
  return attestor.attest({
    token: "",
    requestedAppId: request.appId ?? "",
    requestedNamespace: request.namespace ?? "",
    requestedTrustDomain: request.trustDomain ?? "",
    peer,
    now: request.now ?? new Date(),
  });
}

const refused = (promise: Promise<unknown>) => refusal(promise, "the renewal was accepted");

describe("renewal with the current SVID: exactly the presented identity, only while it is valid and trusted", () => {
  const id = `spiffe://${TD}/ns/orders/api`;

  it("renews the presented identity, also when the request names it (control)", async () => {
    expect(await renew(leaf(id))).toMatchObject({ spiffeId: id, method: "svid" });
    expect(await renew(leaf(id), { appId: "api", namespace: "orders", trustDomain: TD })).toMatchObject({ spiffeId: id });
  });

  it.each([
    ["another app id", { appId: "payments" }, "E_IDENTITY_MISMATCH"],
    ["another namespace", { namespace: "billing" }, "E_IDENTITY_MISMATCH"],
    ["another trust domain", { trustDomain: "other.test" }, "E_TRUST_DOMAIN_MISMATCH"],
  ])("refuses a request for %s than the presented SVID", async (_name, request, code) => {
    expect((await refused(renew(leaf(id), request))).code).toBe(code);
  });

  it("refuses an expired SVID (E_CERT_EXPIRED), and the same SVID a second before it expires renews", async () => {
    const peer = leaf(id);
    expect((await refused(renew(peer, { now: new Date(peer.notAfter.getTime() + 1000) }))).code).toBe("E_CERT_EXPIRED");
    expect(await renew(peer, { now: new Date(peer.notAfter.getTime() - 1000) })).toMatchObject({ spiffeId: id });
  });

  it("refuses an SVID that is not valid yet", async () => {
    const future = leaf(id, ca, { notBefore: new Date(Date.now() + HOUR), notAfter: new Date(Date.now() + 2 * HOUR) });
    const r = await refused(renew(future));
    expect(r.code).toBe("E_ATTESTATION_UNTRUSTED");
    expect(r.message).toMatch(/not valid before/);
  });

  it("renews an SVID of the old root while both roots are trusted, and refuses it once the old root is retired", async () => {
    const old = leaf(id, ca);
    expect(await renew(old, { trust: [rotatedCa, ca] })).toMatchObject({ spiffeId: id });
    const r = await refused(renew(old, { trust: [rotatedCa] }));
    expect(r.code).toBe("E_ATTESTATION_UNTRUSTED");
    expect(await renew(leaf(id, rotatedCa), { trust: [rotatedCa] })).toMatchObject({ spiffeId: id });
  });

  // A connection's TLS verification is as old as the connection: a peer that connected while the
  // old root was trusted (say, one whose key leaked, so its "SVID" is forged) and keeps its
  // HTTP/2 connection busy must not renew once that root is retired. NODE-TLS-FACTS: open
  // connections are never re-verified after setSecureContext.
  it("does not take a TLS verification from before a root was retired for a verification now", async () => {
    const verifiedAtConnect = { ...leaf(id, ca), chainVerifiedByTls: true, presentedIntermediates: [ca.issuer.certificate] };
    expect(await renew(verifiedAtConnect, { trust: [rotatedCa, ca] })).toMatchObject({ spiffeId: id });
    expect((await refused(renew(verifiedAtConnect, { trust: [rotatedCa] }))).code).toBe("E_ATTESTATION_UNTRUSTED");
    const current = { ...leaf(id, rotatedCa), chainVerifiedByTls: true, presentedIntermediates: [rotatedCa.issuer.certificate] };
    expect(await renew(current, { trust: [rotatedCa] })).toMatchObject({ spiffeId: id });
  });

  it("refuses an SVID of another trust domain's CA, for its own identity or for ours", async () => {
    for (const foreign of ["spiffe://other.test/ns/orders/api", id]) {
      expect((await refused(renew(leaf(foreign, otherDomain)))).code).toBe("E_ATTESTATION_UNTRUSTED");
    }
  });

  // SPIRE's server renews an agent only with the SVID whose serial it recorded for that agent. A
  // chain to the roots is not enough: under an organisation's root, other CAs sign leaves too.
  it("refuses an SVID that chains to the roots but is not in the issuance log (E_ATTESTATION_NOT_ISSUED); the same once logged renews", async () => {
    const peer = unlogged(id);
    const r = await refused(renew(peer));
    expect(r.code).toBe("E_ATTESTATION_NOT_ISSUED");
    expect(r.message).toContain(`serial ${peer.serial}, ${id}) was not issued by this CA`);
    log.set(peer.serial, { serial: peer.serial, spiffeId: id, certificatePem: toPem(peer.certificate.raw, "CERTIFICATE") });
    expect(await renew(peer)).toMatchObject({ spiffeId: id });
  });

  it("refuses an SVID whose serial the log holds for another SPIFFE ID, or for another certificate (a serial is public)", async () => {
    const logged = leaf(`spiffe://${TD}/ns/orders/payments`);
    // Another signer that chains to the roots reuses the logged serial: for another identity, and for the same one.
    for (const spiffeId of [id, `spiffe://${TD}/ns/orders/payments`]) {
      const reused = unlogged(spiffeId, ca, undefined, Buffer.from(logged.serial, "hex"));
      expect(reused.serial).toBe(logged.serial);
      const r = await refused(renew(reused));
      expect(r.code, spiffeId).toBe("E_ATTESTATION_NOT_ISSUED");
      expect(r.message).toMatch(/is not the certificate this CA issued under that serial/);
    }
    expect(await renew(logged)).toMatchObject({ spiffeId: `spiffe://${TD}/ns/orders/payments` });
  });

  it("refuses an SVID that is not a workload ID (spiffe://<td>/ns/<ns>/<app>), though it chains to the CA", async () => {
    const r = await refused(renew(leaf(`spiffe://${TD}/admin`)));
    expect(r.code).toBe("E_SPIFFE_ID_NOT_WORKLOAD");
  });
});
