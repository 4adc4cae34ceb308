import { describe, expect, it } from "vitest";
import { crlSignatureChecks, parseVerifiedCrl, REMEMBERED_CRL_CHECKS } from "../../src/ca/crl-publisher.ts";
import { createCrl } from "../../src/pki/crl.ts";
import { createTestPki } from "../helpers/test-pki.ts";

/**
 * The leader checks the published CRL set against its issuers and roots at every refresh (1 s):
 * the same bytes against the same certificate are verified once, and anything else (other
 * bytes, another certificate) is verified as if nothing had been remembered.
 */
describe("parseVerifiedCrl: a CRL's signature check, remembered for the same bytes and certificate", () => {
  it("verifies equal bytes once, and still refuses tampered bytes and another signer", async () => {
    const pki = await createTestPki({ trustDomain: "crl-memo.test" });
    const other = await createTestPki({ trustDomain: "crl-memo-other.test" });
    const now = new Date();
    const der = await createCrl({ signer: pki.issuer, entries: [{ serial: "0A01", revokedAt: now, reason: "keyCompromise" }], thisUpdate: now, nextUpdate: new Date(now.getTime() + 3_600_000), crlNumber: 7n });

    const checks = crlSignatureChecks();
    expect([...parseVerifiedCrl(der, pki.issuer.certificate).revokedSerials]).toEqual(["0A01"]);
    // Fresh reads of the same bytes (the store returns a new Buffer each time): parsed, not verified again.
    for (let n = 0; n < 5; n++) expect(parseVerifiedCrl(Buffer.from(der), pki.issuer.certificate).crlNumber).toBe(7n);
    expect(crlSignatureChecks() - checks).toBe(1);

    // One byte of the signature changed: verified, and refused, each time.
    const tampered = Buffer.from(der);
    tampered[tampered.length - 1] = tampered[tampered.length - 1]! ^ 0x01;
    expect(() => parseVerifiedCrl(tampered, pki.issuer.certificate)).toThrow(expect.objectContaining({ code: "E_CRL_SIGNATURE" }));
    expect(() => parseVerifiedCrl(Buffer.from(tampered), pki.issuer.certificate)).toThrow(expect.objectContaining({ code: "E_CRL_SIGNATURE" }));
    // The accepted bytes stay accepted; the same bytes against another CA's issuer are refused.
    expect(parseVerifiedCrl(der, pki.issuer.certificate).crlNumber).toBe(7n);
    expect(() => parseVerifiedCrl(der, other.issuer.certificate)).toThrow(expect.objectContaining({ code: "E_CRL_SIGNATURE" }));
    expect(crlSignatureChecks() - checks).toBe(3);

    // Bounded: once REMEMBERED_CRL_CHECKS other checks were made, the first is made again.
    for (let n = 0; n < REMEMBERED_CRL_CHECKS; n++) {
      const each = await createCrl({ signer: other.issuer, entries: [], thisUpdate: now, nextUpdate: new Date(now.getTime() + 3_600_000), crlNumber: BigInt(100 + n) });
      parseVerifiedCrl(each, other.issuer.certificate);
    }
    const before = crlSignatureChecks();
    expect(parseVerifiedCrl(der, pki.issuer.certificate).crlNumber).toBe(7n);
    expect(crlSignatureChecks() - before).toBe(1);
  });
});
