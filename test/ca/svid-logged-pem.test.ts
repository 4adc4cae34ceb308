import { describe, expect, it } from "vitest";
import { loggedIs } from "../../src/ca/attest/svid.ts";
import { createRootCertificate } from "../../src/pki/certificate.ts";
import { generateKeyPair } from "../../src/pki/index.ts";
import { toPem } from "../../src/pki/pem.ts";

// Renewal compares the presented certificate with the one the issuance log holds under its
// serial (renewal-issued-only.test.ts covers the refusals end to end). The log's PEM is compared
// as text with the presented certificate encoded the same way first; a log written by something
// else (other line length, CRLF, a trailing chain) must still be decoded and compared by bytes.
describe("loggedIs: the logged PEM holds exactly the presented certificate", () => {
  const make = async () => {
    const now = Date.now();
    return (await createRootCertificate({ trustDomain: "logged.test", keyPair: generateKeyPair(), notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000) })).der;
  };

  it("accepts the CA's own encoding and any other encoding of the same bytes", async () => {
    const der = await make();
    expect(loggedIs(toPem(der, "CERTIFICATE"), der)).toBe(true);
    const base64 = der.toString("base64");
    const wrapped76 = `-----BEGIN CERTIFICATE-----\r\n${base64.replace(/(.{76})/g, "$1\r\n")}\r\n-----END CERTIFICATE-----\r\n`;
    expect(wrapped76).not.toBe(toPem(der, "CERTIFICATE"));
    expect(loggedIs(wrapped76, der)).toBe(true);
  });

  it("refuses another certificate, a truncated one and a log entry that is not PEM", async () => {
    const [a, b] = [await make(), await make()];
    expect(loggedIs(toPem(a, "CERTIFICATE"), b)).toBe(false);
    expect(loggedIs(toPem(a, "CERTIFICATE"), a.subarray(0, a.length - 1))).toBe(false);
    expect(loggedIs("not a certificate", a)).toBe(false);
    expect(loggedIs(`-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n`, a)).toBe(false);
  });
});
