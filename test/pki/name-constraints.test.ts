import { afterAll, describe, expect, it } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import { verifyChain } from "../../src/pki/index.ts";
import { openssl, opensslResult, scratchDir } from "./helpers.ts";

// verifyChain and RFC 5280 name constraints (§4.2.1.10, §6.1.3 b/c), with OpenSSL's own path
// validation (`openssl verify`) as the reference: every chain here is made with the openssl CLI
// and meshward must reach the same verdict. Without this, a sub-CA that an organisation root
// confined to other names could sign an SVID for any SPIFFE ID of our trust domain and
// verifyChain (the CA's renewal check, a workload's check of its own SVID) would pass it.
const scratch = scratchDir();
afterAll(() => scratch.remove());

let counter = 0;
const CA = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n";
const LEAF = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n";

/** A certificate made by openssl: self-signed when `signer` is omitted. Returns its PEM path. */
function make(extensions: string, subject: string, signer?: string): string {
  const n = ++counter;
  const key = scratch.file(`k${n}.pem`, openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]));
  const ext = scratch.file(`e${n}.cnf`, `[req]\ndistinguished_name=dn\n[dn]\n[x]\n${extensions}`);
  const out = `${scratch.dir}/c${n}.pem`;
  if (signer === undefined) {
    openssl(["req", "-x509", "-new", "-key", key, "-subj", subject, "-days", "2", "-config", ext, "-extensions", "x", "-out", out]);
  } else {
    const csr = `${scratch.dir}/r${n}.csr`;
    openssl(["req", "-new", "-key", key, "-subj", subject, "-config", ext, "-out", csr]);
    openssl(["x509", "-req", "-in", csr, "-CA", signer, "-CAkey", signer.replace(/c(\d+)\.pem$/, "k$1.pem"), "-set_serial", String(1000 + n), "-days", "1", "-extfile", ext, "-extensions", "x", "-out", out]);
  }
  return out;
}

const root = make(CA, "/O=Org/CN=Org root");
const pemOf = (path: string) => openssl(["x509", "-in", path]);

/** openssl's verdict and meshward's on leaf ← sub ← root. */
function verdicts(leaf: string, sub: string, trusted = root): { openssl: string; meshward: string } {
  const result = opensslResult(["verify", "-CAfile", trusted, "-untrusted", sub, leaf]);
  let meshward = "OK";
  try {
    verifyChain({ leaf: pemOf(leaf), intermediates: [pemOf(sub)], roots: [pemOf(trusted)] });
  } catch (error) {
    meshward = isMeshwardError(error) ? `${error.code}: ${error.message}` : String(error);
  }
  return { openssl: result.status === 0 ? "OK" : result.output, meshward };
}

const SVID = "URI:spiffe://nc.test/ns/orders/api";

describe("verifyChain enforces the name constraints of the CAs in the path, as OpenSSL does", () => {
  it.each([
    ["permitted URI other.test, SPIFFE ID in nc.test", "permitted;URI:other.test", SVID, false],
    ["permitted URI nc.test, SPIFFE ID in nc.test", "permitted;URI:nc.test", SVID, true],
    ["permitted URI .nc.test (subdomains only), SPIFFE ID in nc.test", "permitted;URI:.nc.test", SVID, false],
    ["permitted URI .nc.test, SPIFFE ID in eu.nc.test", "permitted;URI:.nc.test", "URI:spiffe://eu.nc.test/ns/orders/api", true],
    ["excluded URI nc.test, SPIFFE ID in nc.test", "excluded;URI:nc.test", SVID, false],
    ["excluded URI other.test, SPIFFE ID in nc.test", "excluded;URI:other.test", SVID, true],
    ["permitted URI nc.test, URI without a host", "permitted;URI:nc.test", "URI:urn:nc.test:orders", false],
    ["permitted DNS example.org, DNS api.example.org", "permitted;DNS:example.org", `${SVID},DNS:api.example.org`, true],
    ["permitted DNS example.org, DNS api.example.net", "permitted;DNS:example.org", `${SVID},DNS:api.example.net`, false],
    ["permitted DNS example.org, no DNS name at all", "permitted;DNS:example.org", SVID, true],
    ["excluded IP 10.0.0.0/8, IP 10.1.2.3", "excluded;IP:10.0.0.0/255.0.0.0", `${SVID},IP:10.1.2.3`, false],
    ["excluded IP 10.0.0.0/8, IP 192.168.1.1", "excluded;IP:10.0.0.0/255.0.0.0", `${SVID},IP:192.168.1.1`, true],
    ["permitted URI nc.test and excluded URI nc.test", "permitted;URI:nc.test,excluded;URI:nc.test", SVID, false],
  ])("%s", (_name, constraints, sans, accepted) => {
    const signedSub = make(`${CA}nameConstraints=critical,${constraints}\n`, "/O=Org/CN=Team CA", root);
    const leaf = make(`${LEAF}subjectAltName=${sans}\n`, "/O=SPIFFE", signedSub);
    const { openssl: reference, meshward } = verdicts(leaf, signedSub);
    expect(reference === "OK", `openssl: ${reference}`).toBe(accepted);
    if (accepted) {
      expect(meshward).toBe("OK");
    } else {
      expect(meshward).toMatch(/^E_CHAIN_INVALID: leaf "O=SPIFFE" \(serial [0-9A-F]+\) violates the name constraints of intermediate "O=Org, CN=Team CA"/);
    }
  });

  it("applies a root's name constraints too (OpenSSL and Go do)", () => {
    const constrainedRoot = make(`${CA}nameConstraints=critical,permitted;URI:other.test\n`, "/O=Org/CN=Constrained root");
    const sub = make(CA, "/O=Org/CN=Team CA", constrainedRoot);
    const leaf = make(`${LEAF}subjectAltName=${SVID}\n`, "/O=SPIFFE", sub);
    const { openssl: reference, meshward } = verdicts(leaf, sub, constrainedRoot);
    expect(reference).toMatch(/permitted subtree violation/);
    expect(meshward).toMatch(/^E_CHAIN_INVALID: leaf .* violates the name constraints of root "O=Org, CN=Constrained root".*outside its permitted subtrees \("other\.test"\)/);
  });

  // Go's crypto/x509 (Dapr, SPIRE) does not handle directoryName constraints and refuses a
  // critical nameConstraints extension holding them; meshward refuses them rather than ignore them.
  it("refuses a CA with name forms it does not check (directoryName), even where OpenSSL would accept", () => {
    const sub = make(`${CA}nameConstraints=critical,permitted;dirName:dir_sect\n[dir_sect]\nO=SPIFFE\n`, "/O=Org/CN=Team CA", root);
    const leaf = make(`${LEAF}subjectAltName=${SVID}\n`, "/O=SPIFFE", sub);
    const { openssl: reference, meshward } = verdicts(leaf, sub);
    expect(reference).toBe("OK");
    expect(meshward).toMatch(/^E_CHAIN_INVALID: intermediate "O=Org, CN=Team CA" .* has a nameConstraints extension meshward does not accept: it constrains directoryName names/);
  });
});
