import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { isMeshwardError } from "../../src/errors.ts";
import { exec } from "../helpers/exec.ts";

// The CSR contributes its public key only (SPIRE builds the X509-SVID template from the
// registration entry and takes only the CSR's key: spiffe/spire pkg/server/ca/ca.go, and
// pkg/server/api/svid/v1/service.go checks the CSR's URI against the entry). Whatever else a
// workload asks for in its request (CA:TRUE, keyCertSign, nameConstraints, other EKUs, IP and email
// SANs, a subject naming someone else, a long validity) must not appear in its certificate.
// The leaf is read by openssl, not by meshward's own parser.
const TD = "csr-extras.test";
const silent = pino({ level: "silent" });

describe("a CSR's extras never reach the leaf", () => {
  let work: string;
  let server: CaServer;
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-csr-extras-"));
    await initAnchors({ dir: join(work, "ca"), trustDomain: TD, now: new Date() });
    server = await startCaServer({ dir: join(work, "ca"), config: caConfigSchema.parse({ listen: "127.0.0.1:0", workloadTtl: "1h", signingWorkers: 0 }), logger: silent });
  });
  afterAll(async () => {
    await server?.close();
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  const opensslCsr = async (name: string, subject: string, extensions: string) => {
    const dir = mkdtempSync(join(work, `${name}-`));
    writeFileSync(join(dir, "req.cnf"), `[req]\ndistinguished_name=dn\nreq_extensions=ext\nprompt=no\n[dn]\n${subject}\n[ext]\n${extensions}\n`);
    const made = await exec("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-config", join(dir, "req.cnf"), "-keyout", join(dir, "k.pem"), "-out", join(dir, "csr.pem")]);
    expect(made.code, made.stderr).toBe(0);
    return readFileSync(join(dir, "csr.pem"), "utf8");
  };
  const sign = async (csr: string, spiffeId: string, dnsNames: string[] = []) => {
    const { token } = await issueJoinToken(server.store, { spiffeId, ttlMs: 60_000, dnsNames });
    return server.authority.sign({ csr, token, validator: "join-token", appId: "", namespace: "", trustDomain: "", peer: undefined });
  };
  const text = async (chainPem: string) => {
    const shown = await exec("openssl", ["x509", "-noout", "-text", "-nameopt", "RFC2253"], { input: chainPem });
    expect(shown.code, shown.stderr).toBe(0);
    return shown.stdout;
  };

  it("signs a CSR full of extras with none of them: O=SPIFFE, one URI SAN, CA:FALSE, digitalSignature, serverAuth + clientAuth, the CA's lifetime", async () => {
    const spiffeId = `spiffe://${TD}/ns/orders/api`;
    const csr = await opensslCsr(
      "extras",
      "O=system:masters\nCN=admin\nOU=root",
      [
        "keyUsage=critical,digitalSignature,keyCertSign,cRLSign",
        "extendedKeyUsage=codeSigning,OCSPSigning,serverAuth",
        `subjectAltName=URI:${spiffeId},IP:10.0.0.1,email:admin@example.org,otherName:1.3.6.1.4.1.311.20.2.3;UTF8:admin@corp`,
        "nameConstraints=critical,permitted;DNS:example.org",
        "certificatePolicies=2.5.29.32.0",
        "1.3.6.1.4.1.11129.2.4.2=ASN1:NULL",
      ].join("\n"),
    );
    const signed = await sign(csr, spiffeId);
    const leaf = await text(signed.certificateChainPem);
    expect(leaf).toMatch(/Subject: O=SPIFFE\n/);
    expect(leaf).toMatch(/X509v3 Subject Alternative Name: \n\s+URI:spiffe:\/\/csr-extras\.test\/ns\/orders\/api\n/);
    expect(leaf).toMatch(/X509v3 Basic Constraints: critical\n\s+CA:FALSE/);
    expect(leaf).toMatch(/X509v3 Key Usage: critical\n\s+Digital Signature\n/);
    expect(leaf).toMatch(/X509v3 Extended Key Usage: \n\s+TLS Web Server Authentication, TLS Web Client Authentication\n/);
    for (const absent of ["IP Address", "email:", "othername", "Name Constraints", "Certificate Policies", "1.3.6.1.4.1.11129", "admin", "system:masters", "Certificate Sign", "Code Signing"]) {
      expect(leaf).not.toContain(absent);
    }
    expect(signed.notAfter.getTime() - signed.notBefore.getTime()).toBeLessThanOrEqual(3_600_000 + 15 * 60_000);
  });

  it("refuses the same CSR once it also names a DNS name the token does not grant, and CA:TRUE outright", async () => {
    const spiffeId = `spiffe://${TD}/ns/orders/api`;
    const refusal = async (csr: string) => {
      try {
        await sign(csr, spiffeId);
      } catch (error) {
        if (isMeshwardError(error)) return error.code;
        throw error;
      }
      return "signed";
    };
    expect(await refusal(await opensslCsr("dns", "CN=x", `subjectAltName=URI:${spiffeId},DNS:admin.internal,IP:10.0.0.1`))).toBe("E_CSR_DNS_NOT_ALLOWED");
    expect(await refusal(await opensslCsr("ca", "CN=x", "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign"))).toBe("E_CSR_REQUESTS_CA");
    expect(await refusal(await opensslCsr("uri", "CN=x", `subjectAltName=URI:${spiffeId},URI:spiffe://${TD}/ns/orders/payments`))).toBe("E_CSR_IDENTITY_MISMATCH");
    expect(await refusal(await opensslCsr("other-td", "CN=x", "subjectAltName=URI:spiffe://other.test/ns/orders/api"))).toBe("E_CSR_IDENTITY_MISMATCH");
  });
});
