import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Certificates for real TLS handshakes, made with the `openssl` CLI in a temporary directory
 * (keys never leave it; `cleanup()` removes it). `openssl ca` is used for leaves so that we
 * can set validity dates in the past (OpenSSL 3.0's `x509` has no -not_after) and revoke.
 */
export interface Pem {
  readonly cert: string;
  readonly key: string;
}

export interface TlsFixtures {
  readonly ca: string;
  readonly otherCa: string;
  readonly server: Pem;
  readonly client: Pem;
  readonly wrongCaClient: Pem;
  readonly expiredClient: Pem;
  readonly expiredServer: Pem;
  readonly revokedClient: Pem;
  /** CRL of `ca` listing `revokedClient`. */
  readonly crl: string;
  cleanup(): void;
}

const CA_CONFIG = (dir: string) => `
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = ${dir}
database = ${dir}/index.txt
new_certs_dir = ${dir}/newcerts
serial = ${dir}/serial
crlnumber = ${dir}/crlnumber
default_md = sha256
policy = policy_any
copy_extensions = none
unique_subject = no
default_crl_days = 7
[ policy_any ]
commonName = supplied
[ leaf ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = \${ENV::SAN}
`;

function openssl(args: string[], env: Record<string, string> = {}): void {
  execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...env } });
}

export function makeTlsFixtures(): TlsFixtures {
  const root = mkdtempSync(join(tmpdir(), "meshward-tls-"));
  const makeCa = (name: string) => {
    const dir = join(root, name);
    mkdirSync(join(dir, "newcerts"), { recursive: true });
    writeFileSync(join(dir, "index.txt"), "");
    writeFileSync(join(dir, "serial"), "1000\n");
    writeFileSync(join(dir, "crlnumber"), "1000\n");
    writeFileSync(join(dir, "ca.cnf"), CA_CONFIG(dir));
    openssl([
      "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
      "-keyout", join(dir, "ca.key"), "-out", join(dir, "ca.pem"), "-subj", `/CN=${name}`, "-days", "2",
    ]);
    return dir;
  };
  const ca1 = makeCa("ca1");
  const ca2 = makeCa("ca2");

  const leaf = (caDir: string, name: string, san: string, dates: { start?: string; end?: string } = {}): Pem => {
    const key = join(root, `${name}.key`);
    const csr = join(root, `${name}.csr`);
    const cert = join(root, `${name}.pem`);
    openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr, "-subj", `/CN=${name}`]);
    const validity = dates.end ? ["-startdate", dates.start ?? "20200101000000Z", "-enddate", dates.end] : ["-days", "1"];
    openssl(
      ["ca", "-batch", "-notext", "-config", join(caDir, "ca.cnf"), "-cert", join(caDir, "ca.pem"), "-keyfile", join(caDir, "ca.key"),
        "-extensions", "leaf", "-in", csr, "-out", cert, ...validity],
      { SAN: san },
    );
    return { cert: readFileSync(cert, "utf8"), key: readFileSync(key, "utf8") };
  };

  const past = { start: "20200101000000Z", end: "20200102000000Z" };
  const server = leaf(ca1, "server", "DNS:localhost,URI:spiffe://example.org/ns/default/server");
  const client = leaf(ca1, "client", "URI:spiffe://example.org/ns/default/client");
  const wrongCaClient = leaf(ca2, "wrong-ca-client", "URI:spiffe://example.org/ns/default/client");
  const expiredClient = leaf(ca1, "expired-client", "URI:spiffe://example.org/ns/default/client", past);
  const expiredServer = leaf(ca1, "expired-server", "DNS:localhost,URI:spiffe://example.org/ns/default/server", past);
  const revokedClient = leaf(ca1, "revoked-client", "URI:spiffe://example.org/ns/default/client");

  const caArgs = ["-config", join(ca1, "ca.cnf"), "-cert", join(ca1, "ca.pem"), "-keyfile", join(ca1, "ca.key")];
  openssl(["ca", ...caArgs, "-revoke", join(root, "revoked-client.pem")], { SAN: "" });
  openssl(["ca", ...caArgs, "-gencrl", "-out", join(root, "crl.pem")], { SAN: "" });

  return {
    ca: readFileSync(join(ca1, "ca.pem"), "utf8"),
    otherCa: readFileSync(join(ca2, "ca.pem"), "utf8"),
    server,
    client,
    wrongCaClient,
    expiredClient,
    expiredServer,
    revokedClient,
    crl: readFileSync(join(root, "crl.pem"), "utf8"),
    cleanup: () => rmSync(root, { recursive: true, force: true }),
  };
}
