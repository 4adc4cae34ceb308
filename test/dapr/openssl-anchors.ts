/**
 * Trust anchors shaped like Dapr Sentry's `dapr-trust-bundle` Secret (ca.crt, issuer.crt,
 * issuer.key), made with the real openssl CLI, independent of meshward's pki code. Sentry
 * >= 1.18 generates Ed25519 ones (dapr/dapr pkg/sentry/server/ca, per issue 16); the other
 * algorithms let tests show what meshward refuses.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export type AnchorKey = "ed25519" | "ed448" | "p256";

export interface DaprAnchors {
  readonly dir: string;
  readonly rootCert: string;
  readonly issuerCert: string;
  readonly issuerKey: string;
}

function genkey(kind: AnchorKey, out: string): void {
  const args = kind === "p256" ? ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"] : ["genpkey", "-algorithm", kind === "ed25519" ? "ED25519" : "ED448"];
  execFileSync("openssl", [...args, "-out", out]);
}

export function makeDaprAnchors(dir: string, options: { key: AnchorKey; issuerKeyUsage?: string; days?: number }): DaprAnchors {
  mkdirSync(dir, { recursive: true });
  const p = (name: string) => join(dir, name);
  genkey(options.key, p("ca.key"));
  genkey(options.key, p("issuer.key"));
  writeFileSync(
    p("ext.cnf"),
    [
      "[req]",
      "distinguished_name=dn",
      "[dn]",
      "[root]",
      "basicConstraints=critical,CA:TRUE",
      "keyUsage=critical,keyCertSign,cRLSign",
      "subjectKeyIdentifier=hash",
      "[issuer]",
      "basicConstraints=critical,CA:TRUE,pathlen:0",
      `keyUsage=critical,${options.issuerKeyUsage ?? "keyCertSign,cRLSign"}`,
      "subjectKeyIdentifier=hash",
      "authorityKeyIdentifier=keyid",
      "",
    ].join("\n"),
  );
  const days = String(options.days ?? 365);
  execFileSync("openssl", ["req", "-x509", "-new", "-key", p("ca.key"), "-subj", "/O=cluster.local/CN=cluster.local", "-days", days, "-config", p("ext.cnf"), "-extensions", "root", "-out", p("ca.crt")]);
  execFileSync("openssl", ["req", "-new", "-key", p("issuer.key"), "-subj", "/O=cluster.local/CN=cluster.local", "-config", p("ext.cnf"), "-out", p("issuer.csr")]);
  execFileSync("openssl", ["x509", "-req", "-in", p("issuer.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"), "-CAcreateserial", "-days", days, "-extfile", p("ext.cnf"), "-extensions", "issuer", "-out", p("issuer.crt")]);
  return { dir, rootCert: p("ca.crt"), issuerCert: p("issuer.crt"), issuerKey: p("issuer.key") };
}
