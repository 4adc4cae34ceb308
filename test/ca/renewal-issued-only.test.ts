import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { requestCertificate, type CaConnection } from "../../src/identity/ca-client.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { certificatesFromPem, toPem } from "../../src/pki/pem.ts";
import { refusal } from "../helpers/refusal.ts";
import { openssl, opensslResult, scratchDir } from "../pki/helpers.ts";

// A CA under an imported organisation root (made here with the openssl CLI): the same root signs
// other teams' CAs, which chain to the CA's trust anchors as well as its own issuer does. Renewal
// with an SVID (validator SVID) must renew only what this CA issued (its issuance log, as SPIRE's
// server checks an agent's SVID serial against its record), and a chain through a sub-CA whose
// nameConstraints confine it to other names is not a valid chain at all.
const TD = "issued-only.test";
const ID = `spiffe://${TD}/ns/orders/payments`;
const silent = pino({ level: "silent" });
const scratch = scratchDir();

const EXTENSIONS = [
  "[req]", "distinguished_name=dn", "[dn]",
  "[root]", "basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign", "subjectKeyIdentifier=hash",
  "[sub]", "basicConstraints=critical,CA:TRUE,pathlen:0", "keyUsage=critical,keyCertSign,cRLSign", "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid",
  "[own]", "basicConstraints=critical,CA:TRUE,pathlen:0", "keyUsage=critical,keyCertSign,cRLSign", "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid",
  `nameConstraints=critical,permitted;URI:${TD}`,
  "[other]", "basicConstraints=critical,CA:TRUE,pathlen:0", "keyUsage=critical,keyCertSign,cRLSign", "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid",
  "nameConstraints=critical,permitted;URI:other.test",
  "[leaf]", "basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", "extendedKeyUsage=serverAuth,clientAuth", `subjectAltName=URI:${ID}`,
  "",
].join("\n");
const ext = scratch.file("ext.cnf", EXTENSIONS);
const p = (name: string) => join(scratch.dir, name);
const key = (name: string) => openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p(`${name}.key`)]);

/** A certificate for `name`'s key signed by `signer` (or self-signed when omitted) with the extension section `section`. */
function certificate(name: string, subject: string, section: string, signer?: string, serial?: string): string {
  key(name);
  if (signer === undefined) {
    openssl(["req", "-x509", "-new", "-key", p(`${name}.key`), "-subj", subject, "-days", "30", "-config", ext, "-extensions", section, "-out", p(`${name}.pem`)]);
  } else {
    openssl(["req", "-new", "-key", p(`${name}.key`), "-subj", subject, "-config", ext, "-out", p(`${name}.csr`)]);
    openssl([
      "x509", "-req", "-in", p(`${name}.csr`), "-CA", p(`${signer}.pem`), "-CAkey", p(`${signer}.key`), "-days", "1", "-extfile", ext, "-extensions", section,
      ...(serial !== undefined ? ["-set_serial", `0x${serial}`] : ["-CAcreateserial"]), "-out", p(`${name}.pem`),
    ]);
  }
  return readFileSync(p(`${name}.pem`), "utf8");
}

async function startCa(dir: string, imported: { rootCertPem: string; issuerCertPem: string; issuerKeyPem: string }) {
  // The organisation root has no name constraints, on purpose: other teams' CAs sit under it.
  await initAnchors({ dir, trustDomain: TD, now: new Date(), imported, trustEveryCaUnderRoot: true } as Parameters<typeof initAnchors>[0]);
  const server = await startCaServer({ dir, config: caConfigSchema.parse({ listen: "127.0.0.1:0", workloadTtl: "1h" }), logger: silent });
  const connection: CaConnection = { address: server.address, bundlePem: readFileSync(join(dir, "bundle.pem"), "utf8"), trustDomain: TD };
  return { server, connection };
}

afterAll(() => scratch.remove());

describe("renewal with an SVID under an imported organisation root renews only certificates this CA issued", () => {
  let server: CaServer;
  let connection: CaConnection;
  const rootPem = certificate("root", "/O=Org/CN=Org root", "root");
  const issuerPem = certificate("issuer", "/O=Org/CN=meshward issuer", "sub", "root");
  const teamPem = certificate("team", "/O=Org/CN=Team CA", "sub", "root");
  const otherPem = certificate("other", "/O=Org/CN=Other team CA (URI other.test only)", "other", "root");

  beforeAll(async () => {
    ({ server, connection } = await startCa(p("ca"), { rootCertPem: rootPem, issuerCertPem: issuerPem, issuerKeyPem: readFileSync(p("issuer.key"), "utf8") }));
  });
  afterAll(async () => {
    await server?.close();
  });

  const token = async () => (await issueJoinToken(server.store, { spiffeId: ID, ttlMs: 3_600_000 })).token;
  const renewWith = async (chainPem: string, keyName: string | ReturnType<typeof generateKeyPair>["privateKey"], extra: { token?: string } = {}) =>
    requestCertificate(
      { ...connection, clientCertificate: { certChainPem: chainPem, privateKey: typeof keyName === "string" ? createPrivateKey(readFileSync(p(`${keyName}.key`))) : keyName } },
      { csrPem: await createCsr({ keyPair: generateKeyPair() }), token: extra.token ?? "", validator: "SVID", namespace: "orders", appId: "payments" },
    );
  const serialOf = (chainPem: string) => new X509Certificate(certificatesFromPem(chainPem)[0]!).serialNumber;

  it("renews a certificate it issued (control)", async () => {
    const keyPair = generateKeyPair();
    const first = await requestCertificate(connection, { csrPem: await createCsr({ keyPair }), token: await token(), validator: "JOIN_TOKEN", namespace: "", appId: "" });
    const renewed = await renewWith(first.certChainPem, keyPair.privateKey);
    expect(new X509Certificate(certificatesFromPem(renewed.certChainPem)[0]!).subjectAltName).toBe(`URI:${ID}`);
    expect((await server.store.getIssuance(serialOf(renewed.certChainPem)))?.attestation).toBe("svid");
  });

  it("refuses a leaf a sibling CA of the same root signed (E_ATTESTATION_NOT_ISSUED), also one reusing a serial it issued; records nothing, spends no token", async () => {
    const keyPair = generateKeyPair();
    const issued = await requestCertificate(connection, { csrPem: await createCsr({ keyPair }), token: await token(), validator: "JOIN_TOKEN", namespace: "", appId: "" });
    const leafPem = certificate("team-leaf", "/O=SPIFFE", "leaf", "team");
    const sameSerialPem = certificate("team-same-serial", "/O=SPIFFE", "leaf", "team", serialOf(issued.certChainPem));
    expect(serialOf(sameSerialPem)).toBe(serialOf(issued.certChainPem));
    // Control: each is a valid certificate chained to the CA's root, for the identity it asks to renew.
    for (const name of ["team-leaf", "team-same-serial"]) {
      expect(opensslResult(["verify", "-CAfile", p("root.pem"), "-untrusted", p("team.pem"), p(`${name}.pem`)]).output).toMatch(/: OK/);
    }
    const spare = await token();
    const before = (await server.store.listIssuances()).length;
    for (const [pem, keyName] of [[leafPem, "team-leaf"], [sameSerialPem, "team-same-serial"]] as const) {
      const r = await refusal(renewWith(pem + teamPem, keyName, { token: spare }), "the CA renewed a certificate it did not issue");
      expect(r.code).toBe("E_ATTESTATION_NOT_ISSUED");
      expect(r.message).toMatch(/not issued by this CA|not the certificate this CA issued under that serial/);
      expect(r.message).not.toMatch(/\n\s+at /);
    }
    expect((await server.store.listIssuances()).length).toBe(before);
    expect((await server.store.listTokens()).find((t) => t.spiffeId === ID && t.usesLeft === 1)).toBeDefined();
    // The spare token still works, and the certificate this CA issued still renews.
    await requestCertificate(connection, { csrPem: await createCsr({ keyPair: generateKeyPair() }), token: spare, validator: "JOIN_TOKEN", namespace: "", appId: "" });
    await renewWith(issued.certChainPem, keyPair.privateKey);
  });

  it("refuses a leaf from a sub-CA name-constrained to other URIs as untrusted, as OpenSSL does (permitted subtree violation)", async () => {
    const leafPem = certificate("other-leaf", "/O=SPIFFE", "leaf", "other");
    expect(opensslResult(["verify", "-CAfile", p("root.pem"), "-untrusted", p("other.pem"), p("other-leaf.pem")]).output).toMatch(/permitted subtree violation/);
    const r = await refusal(renewWith(leafPem + otherPem, "other-leaf"), "the CA renewed a certificate outside its signer's name constraints");
    expect(r.code).toBe("E_ATTESTATION_UNTRUSTED");
    expect(r.message).toMatch(/violates the name constraints of intermediate .*Other team CA.*outside its permitted subtrees \("other\.test"\)/);
  });
});

// The X509-SVID spec (§4.2) lets a signing certificate carry URI name constraints: an organisation
// may confine the meshward issuer to the trust domain. Such an issuer keeps working end to end.
describe("an issuer name-constrained to the trust domain (permitted URI:<td>)", () => {
  let server: CaServer;
  let connection: CaConnection;

  beforeAll(async () => {
    const rootPem = certificate("root2", "/O=Org/CN=Org root 2", "root");
    const issuerPem = certificate("own", "/O=Org/CN=meshward issuer (constrained)", "own", "root2");
    ({ server, connection } = await startCa(p("ca2"), { rootCertPem: rootPem, issuerCertPem: issuerPem, issuerKeyPem: readFileSync(p("own.key"), "utf8") }));
  });
  afterAll(async () => {
    await server?.close();
  });

  it("imports, issues and renews; OpenSSL verifies the leaves", async () => {
    const keyPair = generateKeyPair();
    const { token } = await issueJoinToken(server.store, { spiffeId: ID, ttlMs: 3_600_000 });
    const first = await requestCertificate(connection, { csrPem: await createCsr({ keyPair, dnsNames: [] }), token, validator: "JOIN_TOKEN", namespace: "", appId: "" });
    const renewed = await requestCertificate(
      { ...connection, clientCertificate: { certChainPem: first.certChainPem, privateKey: keyPair.privateKey } },
      { csrPem: await createCsr({ keyPair: generateKeyPair() }), token: "", validator: "SVID", namespace: "", appId: "" },
    );
    const [leaf] = certificatesFromPem(renewed.certChainPem);
    const leafFile = scratch.file("own-leaf.pem", toPem(leaf!, "CERTIFICATE"));
    expect(opensslResult(["verify", "-CAfile", p("root2.pem"), "-untrusted", p("own.pem"), leafFile]).output).toMatch(/: OK/);
  });
});
