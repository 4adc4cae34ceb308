/**
 * Test PKI made with the real `openssl` CLI (independent of src/pki): a root, an issuer,
 * SPIFFE leaf certificates with chosen validity, revocation and CRLs. Every instance lives
 * in its own mkdtemp directory; call `cleanup()` in afterAll.
 */
import { execFileSync } from "node:child_process";
import { createPrivateKey, randomBytes, X509Certificate } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKeyPair } from "../../src/pki/keys.ts";

export interface TestCa {
  readonly certPem: string;
  readonly keyPem: string;
  readonly certPath: string;
  readonly keyPath: string;
}

export interface TestLeaf {
  readonly spiffeId: string | undefined;
  readonly certPem: string;
  /** Leaf then issuer. */
  readonly chainPem: string;
  readonly keyPem: string;
  readonly key: KeyObject;
  readonly certPath: string;
  readonly chainPath: string;
  readonly keyPath: string;
  /** Uppercase hex as node prints it. */
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface LeafRequest {
  /** One URI SAN (omit for a certificate without SPIFFE ID). */
  readonly spiffeId?: string;
  /** Extra URI SANs (to build invalid SVIDs with several). */
  readonly extraUris?: readonly string[];
  readonly dnsNames?: readonly string[];
  /** Validity window; default: now-15m .. now+1d. */
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** Makes a certificate that must not be used as a leaf: "ca" = CA:TRUE + keyCertSign, "cert-sign" = CA:FALSE with keyCertSign. */
  readonly notLeaf?: "ca" | "cert-sign";
}

export interface TestPki {
  readonly dir: string;
  readonly trustDomain: string;
  readonly root: TestCa;
  readonly issuer: TestCa;
  readonly rootPath: string;
  issueLeaf(request: LeafRequest): TestLeaf;
  /** Revokes the leaf in the CA database and returns a fresh CRL and its serials. */
  revoke(leaf: TestLeaf): { readonly crlPem: string; readonly revokedSerials: Set<string> };
  cleanup(): void;
}

function openssl(args: readonly string[], cwd?: string): string {
  return execFileSync("openssl", args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

function newKeyPem(): string {
  const { privateKey } = generateKeyPair();
  return privateKey.export({ format: "pem", type: "pkcs8" }) as string;
}

/** openssl ca -startdate/-enddate format (GeneralizedTime, Z). */
function asn1Time(date: Date): string {
  return date.toISOString().replace(/[-:T]/g, "").replace(/\.\d{3}/, "");
}

function writeSecret(path: string, pem: string): void {
  writeFileSync(path, pem, { mode: 0o600 });
}

export function createTestPki(options: { trustDomain?: string; name?: string } = {}): TestPki {
  const trustDomain = options.trustDomain ?? "example.org";
  const name = options.name ?? "meshward test";
  const dir = mkdtempSync(join(tmpdir(), "meshward-pki-"));
  const caExt = join(dir, "ca.ext");
  writeFileSync(
    caExt,
    "[req]\ndistinguished_name=dn\n[dn]\n[root]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n" +
      "[issuer]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
  );
  const rootKeyPath = join(dir, "root.key");
  writeSecret(rootKeyPath, newKeyPem());
  const rootPath = join(dir, "root.pem");
  openssl(["req", "-x509", "-new", "-key", rootKeyPath, "-subj", `/O=${name}/CN=${name} root`, "-days", "3650", "-sha256", "-config", caExt, "-extensions", "root", "-out", rootPath]);
  const issuerKeyPath = join(dir, "issuer.key");
  writeSecret(issuerKeyPath, newKeyPem());
  const issuerCsr = join(dir, "issuer.csr");
  openssl(["req", "-new", "-key", issuerKeyPath, "-subj", `/O=${name}/CN=${name} issuer`, "-config", caExt, "-out", issuerCsr]);
  const issuerPath = join(dir, "issuer.pem");
  openssl(["x509", "-req", "-in", issuerCsr, "-CA", rootPath, "-CAkey", rootKeyPath, "-set_serial", `0x${randomBytes(8).toString("hex").replace(/^./, "1")}`, "-days", "3650", "-sha256", "-extfile", caExt, "-extensions", "issuer", "-out", issuerPath]);

  const caDir = join(dir, "ca");
  mkdirSync(join(caDir, "newcerts"), { recursive: true });
  writeFileSync(join(caDir, "index.txt"), "");
  writeFileSync(join(caDir, "serial"), `${randomBytes(16).toString("hex").replace(/^./, "4")}\n`);
  writeFileSync(join(caDir, "crlnumber"), "01\n");
  const caConfig = join(caDir, "ca.cnf");
  writeFileSync(
    caConfig,
    `[ca]\ndefault_ca=CA_default\n[CA_default]\ndir=${caDir}\ndatabase=$dir/index.txt\nnew_certs_dir=$dir/newcerts\nserial=$dir/serial\ncrlnumber=$dir/crlnumber\n` +
      `certificate=${issuerPath}\nprivate_key=${issuerKeyPath}\ndefault_md=sha256\ndefault_days=1\ndefault_crl_days=1\npolicy=policy_any\nunique_subject=no\ncopy_extensions=none\nemail_in_dn=no\n` +
      `[policy_any]\ncommonName=optional\norganizationName=optional\n`,
  );
  const root: TestCa = { certPem: readFileSync(rootPath, "utf8"), keyPem: readFileSync(rootKeyPath, "utf8"), certPath: rootPath, keyPath: rootKeyPath };
  const issuer: TestCa = { certPem: readFileSync(issuerPath, "utf8"), keyPem: readFileSync(issuerKeyPath, "utf8"), certPath: issuerPath, keyPath: issuerKeyPath };
  let counter = 0;

  return {
    dir,
    trustDomain,
    root,
    issuer,
    rootPath,
    issueLeaf(request) {
      const n = ++counter;
      const base = join(dir, `leaf${n}`);
      const keyPem = newKeyPem();
      writeSecret(`${base}.key`, keyPem);
      openssl(["req", "-new", "-key", `${base}.key`, "-subj", `/O=${name}/CN=leaf ${n}`, "-config", caExt, "-out", `${base}.csr`]);
      const sans = [
        ...(request.spiffeId ? [`URI:${request.spiffeId}`] : []),
        ...(request.extraUris ?? []).map((u) => `URI:${u}`),
        ...(request.dnsNames ?? []).map((d) => `DNS:${d}`),
      ];
      writeFileSync(
        `${base}.ext`,
        (request.notLeaf === "ca"
          ? "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature,keyCertSign\n"
          : request.notLeaf === "cert-sign"
            ? "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyCertSign\n"
            : "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n") +
          "extendedKeyUsage=serverAuth,clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" +
          (sans.length > 0 ? `subjectAltName=${sans.join(",")}\n` : ""),
      );
      const notBefore = request.notBefore ?? new Date(Date.now() - 15 * 60_000);
      const notAfter = request.notAfter ?? new Date(Date.now() + 24 * 3600_000);
      openssl(["ca", "-batch", "-config", caConfig, "-notext", "-in", `${base}.csr`, "-out", `${base}.pem`, "-extfile", `${base}.ext`, "-startdate", asn1Time(notBefore), "-enddate", asn1Time(notAfter)]);
      const certPem = readFileSync(`${base}.pem`, "utf8");
      const chainPem = certPem + issuer.certPem;
      writeFileSync(`${base}.chain.pem`, chainPem);
      const x509 = new X509Certificate(certPem);
      return {
        spiffeId: request.spiffeId,
        certPem,
        chainPem,
        keyPem,
        key: createPrivateKey(keyPem),
        certPath: `${base}.pem`,
        chainPath: `${base}.chain.pem`,
        keyPath: `${base}.key`,
        serial: x509.serialNumber.toUpperCase(),
        notBefore: new Date(x509.validFrom),
        notAfter: new Date(x509.validTo),
      };
    },
    revoke(leaf) {
      openssl(["ca", "-config", caConfig, "-revoke", leaf.certPath]);
      const crlPath = join(dir, `crl${++counter}.pem`);
      openssl(["ca", "-config", caConfig, "-gencrl", "-out", crlPath]);
      const text = openssl(["crl", "-in", crlPath, "-noout", "-text"]);
      const revokedSerials = new Set([...text.matchAll(/Serial Number: ([0-9A-Fa-f]+)/g)].map((m) => m[1]!.toUpperCase()));
      return { crlPem: readFileSync(crlPath, "utf8"), revokedSerials };
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
