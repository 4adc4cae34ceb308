import { execFileSync, spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as der from "../../src/pki/der.ts";
import { createIssuerCertificate, createRootCertificate, generateKeyPair, toPem } from "../../src/pki/index.ts";
import type { KeyAlgorithm, KeyPair, Signer, Validity } from "../../src/pki/index.ts";
import { OID } from "../../src/pki/oids.ts";
import { signingAlgorithmFor } from "../../src/pki/signature.ts";
import { spkiOf } from "../../src/pki/spki.ts";

export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;

export function validity(from = Date.now() - HOUR, lengthMs = 30 * DAY): Validity {
  return { notBefore: new Date(from), notAfter: new Date(from + lengthMs) };
}

/** A scratch directory for files handed to openssl; remove() deletes it. */
export function scratchDir(): { dir: string; file(name: string, content: string | Uint8Array): string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), "meshward-pki-"));
  return {
    dir,
    file(name, content) {
      const path = join(dir, name);
      writeFileSync(path, content, { mode: 0o600 });
      return path;
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function openssl(args: readonly string[], input?: string | Uint8Array): string {
  return execFileSync("openssl", args, { encoding: "utf8", input, stdio: ["pipe", "pipe", "pipe"] });
}

/** Runs openssl and returns status and output instead of throwing. */
export function opensslResult(args: readonly string[]): { status: number | null; output: string } {
  const result = spawnSync("openssl", args, { encoding: "utf8" });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

export interface TestCa {
  readonly trustDomain: string;
  readonly root: Signer;
  readonly issuer: Signer;
}

export async function makeCa(trustDomain = "example.org", algorithm: KeyAlgorithm = "ec-p256", window: Validity = validity(Date.now() - DAY, 365 * DAY)): Promise<TestCa> {
  const rootKeys = generateKeyPair(algorithm);
  const root = await createRootCertificate({ ...window, trustDomain, keyPair: rootKeys });
  const rootSigner: Signer = { certificate: new X509Certificate(root.der), der: root.der, privateKey: rootKeys.privateKey };
  const issuerKeys = generateKeyPair(algorithm);
  const issuer = await createIssuerCertificate({ ...window, trustDomain, publicKey: issuerKeys.publicKey, signer: rootSigner });
  return {
    trustDomain,
    root: rootSigner,
    issuer: { certificate: new X509Certificate(issuer.der), der: issuer.der, privateKey: issuerKeys.privateKey },
  };
}

/**
 * A CSR, properly signed with keyPair, whose subjectAltName holds these dNSName values byte for
 * byte (a string as Latin-1, a Buffer as is): names createCsr refuses to write, as a hostile or
 * broken client could send them.
 */
export function csrWithRawDnsNames(keyPair: KeyPair, names: readonly (string | Buffer)[]): string {
  const san = der.sequence(...names.map((name) => der.implicit(2, typeof name === "string" ? Buffer.from(name, "latin1") : name)));
  const extensionRequest = der.sequence(der.oid(OID.extensionRequest), der.set(der.sequence(der.sequence(der.oid(OID.subjectAltName), der.octetString(san)))));
  const info = der.sequence(der.integer(0), der.sequence(), spkiOf(keyPair.publicKey), der.explicit(0, extensionRequest));
  const algorithm = signingAlgorithmFor(keyPair.privateKey);
  return toPem(der.sequence(info, algorithm.algorithmIdentifier, der.bitString(algorithm.sign(info))), "CERTIFICATE REQUEST");
}
