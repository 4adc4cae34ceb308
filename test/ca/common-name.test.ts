import { X509Certificate } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { fromCertificate } from "../../src/ca/attest/peer.ts";
import { svidAttestor } from "../../src/ca/attest/svid.ts";
import { isMeshwardError } from "../../src/errors.ts";
import { generateKeyPair, issueLeafCertificate } from "../../src/pki/index.ts";
import { makeCa, validity, type TestCa } from "../pki/helpers.ts";

// The CN a certificate may carry (PostgreSQL's cert auth maps it to a role) is granted by
// attestation only. The join-token path is tested end to end with a real PostgreSQL in
// test/backends/postgres-cn.test.ts; here: the leaf template's checks and the renewal rule.
let ca: TestCa;
beforeAll(async () => {
  ca = await makeCa("cn.test");
});

function leaf(spiffeId: string, commonName?: string): X509Certificate {
  const issued = issueLeafCertificate({ ...validity(), spiffeId, publicKey: generateKeyPair().publicKey, signer: ca.issuer, ...(commonName !== undefined ? { commonName } : {}) });
  return new X509Certificate(issued.der);
}

async function renew(peer: X509Certificate) {
  // Each leaf here stands for one this CA issued: the issuance log holds it.
  const record = { serial: peer.serialNumber, spiffeId: peer.subjectAltName?.replace(/^URI:/, "") ?? "", certificatePem: peer.toString() };
  const attestor = svidAttestor({
    trust: () => ({ roots: [ca.root.certificate], intermediates: [ca.issuer.certificate], revoked: new Set() }),
    issued: async (serial) => (serial === record.serial ? record : undefined),
  });
  return attestor.attest({ token: "", requestedAppId: "", requestedNamespace: "", requestedTrustDomain: "", peer: fromCertificate(peer), now: new Date() });
}

describe("certificates with CN = app id", () => {
  it("a leaf carries O=SPIFFE, CN=<name> when asked, O=SPIFFE alone otherwise; a CN that is not an app id is refused", () => {
    expect(leaf("spiffe://cn.test/ns/shop/orders", "orders").subject).toBe("O=SPIFFE\nCN=orders");
    expect(leaf("spiffe://cn.test/ns/shop/orders").subject).toBe("O=SPIFFE");
    for (const bad of ["", "a".repeat(65), "orders,O=admin", "ord ers", "or/ders", "ördérs"]) {
      try {
        leaf("spiffe://cn.test/ns/shop/orders", bad);
        throw new Error(`accepted ${JSON.stringify(bad)}`);
      } catch (error) {
        expect(isMeshwardError(error) && error.code, bad).toBe("E_CN_INVALID");
      }
    }
  });

  it("a renewal keeps a CN equal to the certificate's own app id, and drops any other CN or none", async () => {
    expect(await renew(leaf("spiffe://cn.test/ns/shop/orders", "orders"))).toMatchObject({ spiffeId: "spiffe://cn.test/ns/shop/orders", commonName: "orders" });
    // a CN naming another workload (e.g. from an imported CA's leaf) is never copied into the renewal
    expect(await renew(leaf("spiffe://cn.test/ns/shop/orders", "inventory"))).not.toHaveProperty("commonName");
    expect(await renew(leaf("spiffe://cn.test/ns/shop/orders"))).not.toHaveProperty("commonName");
  });
});
