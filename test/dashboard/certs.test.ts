import { execFileSync } from "node:child_process";
import { afterAll, describe, expect, it } from "vitest";
import { identityFromPem, trustRootsFromPem } from "../../src/dashboard/certs.ts";
import { isMeshwardError } from "../../src/errors.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";

// Certificates made by the real openssl CLI, read back by the status page helpers.
const pki = createTestPki({ trustDomain: "example.org" });
afterAll(() => pki.cleanup());

describe("status page certificate helpers", () => {
  it("identityFromPem reads the leaf of a chain: SPIFFE ID, serial, validity", () => {
    const notAfter = new Date(Math.floor(Date.now() / 1000) * 1000 + 6 * 3_600_000);
    const leaf = pki.issueLeaf({ spiffeId: "spiffe://example.org/ns/shop/orders", dnsNames: ["orders.local"], notAfter });
    const identity = identityFromPem(leaf.chainPem);
    expect(identity).toEqual({ spiffeId: "spiffe://example.org/ns/shop/orders", serial: leaf.serial, notBefore: leaf.notBefore, notAfter: leaf.notAfter, kind: "workload" });
    expect(identity.notAfter.toISOString()).toBe(notAfter.toISOString());
  });

  it("a certificate without a SPIFFE ID is shown by subject, not mistaken for one", () => {
    const leaf = pki.issueLeaf({ dnsNames: ["spiffe.example"] });
    expect(identityFromPem(leaf.certPem, "issuer").spiffeId).toMatch(/^\(no SPIFFE ID\) /);
  });

  it("trustRootsFromPem lists every certificate of a bundle with the fingerprint openssl computes", () => {
    const roots = trustRootsFromPem(pki.root.certPem + pki.issuer.certPem);
    expect(roots).toHaveLength(2);
    const fingerprint = execFileSync("openssl", ["x509", "-noout", "-fingerprint", "-sha256", "-in", pki.root.certPath], { encoding: "utf8" }).trim().split("=")[1];
    expect(roots[0]?.fingerprint).toBe(fingerprint);
    expect(roots[0]?.subject).toContain("root");
    expect(roots[1]?.subject).toContain("issuer");
  });

  it("refuses text without a certificate", () => {
    let error: unknown;
    try {
      trustRootsFromPem("not a bundle");
    } catch (e) {
      error = e;
    }
    expect(isMeshwardError(error, "E_PEM_INVALID")).toBe(true);
  });
});
