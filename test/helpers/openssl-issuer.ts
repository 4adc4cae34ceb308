import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * An issuer (intermediate) signed with openssl by `root` and a fixed serial, as many recipes make
 * one (`openssl x509 -req … -set_serial N`): P-256, CA:true pathlen:0, 30 days. Its files are
 * written in `work` as NAME.key/.csr/.pem.
 */
export function opensslIssuer(work: string, trustDomain: string, name: string, serial: string, root: { cert: string; key: string }): { cert: string; key: string; fingerprint: string } {
  const extensions = join(work, "issuer-ext.cnf");
  if (!existsSync(extensions)) writeFileSync(extensions, "[v3]\nbasicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n");
  const key = join(work, `${name}.key`);
  const csr = join(work, `${name}.csr`);
  const cert = join(work, `${name}.pem`);
  execFileSync("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key]);
  execFileSync("openssl", ["req", "-new", "-key", key, "-subj", `/O=${trustDomain}/CN=issuer ${name}`, "-out", csr]);
  execFileSync("openssl", ["x509", "-req", "-in", csr, "-CA", root.cert, "-CAkey", root.key, "-set_serial", serial, "-days", "30", "-extfile", extensions, "-extensions", "v3", "-out", cert], { stdio: "ignore" });
  return { cert, key, fingerprint: new X509Certificate(readFileSync(cert)).fingerprint256 };
}

/** Every file under `root` with its mode and content: what a refusal must leave as it was. */
export function treeSnapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile()) out[path] = `${statSync(path).mode.toString(8)} ${readFileSync(path, "base64")}`;
    }
  };
  walk(root);
  return out;
}
