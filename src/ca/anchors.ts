import { X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { MeshwardError } from "../errors.ts";
import { createIssuerCertificate, createRootCertificate, type Signer } from "../pki/certificate.ts";
import { decodePrivateKey, encodePrivateKey, generateKeyPair, keysMatch, type KeyAlgorithm } from "../pki/keys.ts";
import { certificatesFromPem, toPem } from "../pki/pem.ts";
import { parseTrustDomain } from "../spiffe/id.ts";
import { assertIssuerUsable } from "./issuer-check.ts";
import { checkCaDir } from "../util/dir-safety.ts";
import { writeFileAtomic, writeSecretFileAtomic } from "../util/files.ts";
import { directoryFiles, type AnchorFiles } from "./anchor-files.ts";

export const DEFAULT_ROOT_TTL_MS = 10 * 365 * 86_400_000;
export const DEFAULT_ISSUER_TTL_MS = 365 * 86_400_000;
/** Anchors are backdated like leaves, so a new CA is trusted at once by hosts whose clocks run a little behind. */
export const ANCHOR_BACKDATE_MS = 15 * 60_000;

/**
 * Subject CN of a generated root: `meshward root <trust domain> G<n>`, n counting the root
 * generations of this CA (1 at `ca init`, +1 at each `rotate-root prepare`), so that the old and
 * the new root of a rotation never carry the same subject (operators, openssl and the status
 * page tell them apart by name, not only by fingerprint). A root without the suffix (made by an
 * older meshward) counts as generation 1; imported roots keep their own subject.
 */
export function rootCommonName(trustDomain: string, existingRoots: readonly X509Certificate[] = []): string {
  let newest = 0;
  for (const root of existingRoots) {
    const cn = /(?:^|\n)CN=(.*)/.exec(root.subject)?.[1] ?? "";
    if (!cn.startsWith(`meshward root ${trustDomain}`)) continue;
    const generation = /\sG(\d{1,6})$/.exec(cn);
    newest = Math.max(newest, generation ? Number(generation[1]) : 1);
  }
  return `meshward root ${trustDomain} G${newest + 1}`;
}

/** Where a CA directory keeps its trust anchors and state. */
export interface CaLayout {
  readonly dir: string;
  readonly state: string;
  readonly rootCert: string;
  readonly rootKey: string;
  readonly issuerCert: string;
  readonly issuerKey: string;
  readonly bundle: string;
  readonly database: string;
  readonly nextRootCert: string;
  readonly nextRootKey: string;
  readonly previousRootCert: string;
  readonly previousRootKey: string;
  /** An issuer prepared ahead of its activation (self-managed issuer rotation). */
  readonly nextIssuerCert: string;
  readonly nextIssuerKey: string;
}

export function caLayout(dir: string): CaLayout {
  return {
    dir,
    state: join(dir, "ca.json"),
    rootCert: join(dir, "root.pem"),
    rootKey: join(dir, "root.key"),
    issuerCert: join(dir, "issuer.pem"),
    issuerKey: join(dir, "issuer.key"),
    bundle: join(dir, "bundle.pem"),
    database: join(dir, "ca.db"),
    nextRootCert: join(dir, "root.next.pem"),
    nextRootKey: join(dir, "root.next.key"),
    previousRootCert: join(dir, "root.prev.pem"),
    previousRootKey: join(dir, "root.prev.key"),
    nextIssuerCert: join(dir, "issuer.next.pem"),
    nextIssuerKey: join(dir, "issuer.next.key"),
  };
}

/** self-managed: the CA holds the root key. external-root: an organisation's root signed our issuer. */
export type AnchorMode = "self-managed" | "external-root";

export interface CaState {
  readonly version: 1;
  readonly trustDomain: string;
  readonly mode: AnchorMode;
  readonly createdAt: string;
  /** A root rotation in progress (prepare → activate → retire); absent when none is. */
  readonly rootRotation?: RootRotationState;
  /** Workloads whose certificate was issued before this instant renew at once (`rotate-root activate --reissue`). */
  readonly reissueBefore?: string;
}

export interface RootRotationState {
  readonly phase: "prepared" | "activated";
  readonly preparedAt: string;
  readonly activatedAt?: string;
  /** SHA-256 fingerprint of the root being replaced (it stays in the bundle until retire). */
  readonly previousRootFingerprint: string;
  readonly nextRootFingerprint: string;
}

export interface ImportedAnchors {
  readonly rootCertPem: string;
  /** The issuer certificate, optionally followed by intermediates up to the root. */
  readonly issuerCertPem: string;
  readonly issuerKeyPem: string;
}

export interface InitOptions {
  readonly dir: string;
  readonly trustDomain: string;
  /** Encrypts the key files at rest (PKCS#8) when given. */
  readonly passphrase?: string;
  readonly now: Date;
  readonly rootTtlMs?: number;
  readonly issuerTtlMs?: number;
  readonly imported?: ImportedAnchors;
  /** Key algorithm of a generated root and issuer (ECDSA P-256 when omitted). */
  readonly keyAlgorithm?: KeyAlgorithm;
}

export interface LoadedAnchors {
  readonly layout: CaLayout;
  readonly trustDomain: string;
  readonly mode: AnchorMode;
  readonly state: CaState;
  readonly roots: readonly X509Certificate[];
  readonly rootsPem: string;
  readonly issuer: Signer;
  /** The issuer followed by any intermediates below the root: what leaves are served with. */
  readonly issuerChainPem: string;
  /** The root that the issuer chains to. */
  readonly issuerRoot: X509Certificate;
  /** Version of the CA state in the store these were loaded from (several replicas); absent for a directory. */
  readonly stateVersion?: number;
}

export async function initAnchors(options: InitOptions): Promise<CaState> {
  const trustDomain = parseTrustDomain(options.trustDomain);
  // An existing directory others can write is refused before anything is written into it (the
  // CLI's --dir hook does the same for `ca init`; this is for SDK callers).
  checkCaDir(options.dir, "initAnchors dir");
  const layout = caLayout(options.dir);
  if (existsSync(layout.state) || existsSync(layout.issuerKey)) {
    throw new MeshwardError(
      "E_CA_EXISTS",
      `${options.dir} already holds a meshward CA; refusing to overwrite it. Use another --dir, or rotate with 'meshward ca rotate-*'.`,
    );
  }
  mkdirSync(options.dir, { recursive: true, mode: 0o700 });
  const mode: AnchorMode = options.imported ? "external-root" : "self-managed";

  if (options.imported) {
    const { root, issuerChain, issuerKey } = validateImport(options.imported, options.now, trustDomain);
    writeFileAtomic(layout.rootCert, toPem(root.raw, "CERTIFICATE"));
    writeFileAtomic(layout.bundle, toPem(root.raw, "CERTIFICATE"));
    writeFileAtomic(layout.issuerCert, issuerChain.map((c) => toPem(c.raw, "CERTIFICATE")).join(""));
    writeSecretFileAtomic(layout.issuerKey, encodePrivateKey(issuerKey, options.passphrase));
  } else {
    const notBefore = new Date(options.now.getTime() - ANCHOR_BACKDATE_MS);
    const rootKeys = generateKeyPair(options.keyAlgorithm);
    const root = await createRootCertificate({
      trustDomain,
      commonName: rootCommonName(trustDomain),
      keyPair: rootKeys,
      notBefore,
      notAfter: new Date(options.now.getTime() + (options.rootTtlMs ?? DEFAULT_ROOT_TTL_MS)),
    });
    const rootSigner: Signer = { certificate: new X509Certificate(root.der), der: root.der, privateKey: rootKeys.privateKey };
    const issuerKeys = generateKeyPair(options.keyAlgorithm);
    const issuer = await createIssuerCertificate({
      trustDomain,
      publicKey: issuerKeys.publicKey,
      signer: rootSigner,
      notBefore,
      notAfter: new Date(options.now.getTime() + Math.min(options.issuerTtlMs ?? DEFAULT_ISSUER_TTL_MS, options.rootTtlMs ?? DEFAULT_ROOT_TTL_MS)),
    });
    writeSecretFileAtomic(layout.rootKey, encodePrivateKey(rootKeys.privateKey, options.passphrase));
    writeSecretFileAtomic(layout.issuerKey, encodePrivateKey(issuerKeys.privateKey, options.passphrase));
    writeFileAtomic(layout.rootCert, toPem(root.der, "CERTIFICATE"));
    writeFileAtomic(layout.bundle, toPem(root.der, "CERTIFICATE"));
    writeFileAtomic(layout.issuerCert, toPem(issuer.der, "CERTIFICATE"));
  }
  const state: CaState = { version: 1, trustDomain, mode, createdAt: options.now.toISOString() };
  // Written last: a directory with ca.json is a complete CA.
  writeFileAtomic(layout.state, `${JSON.stringify(state, null, 2)}\n`);
  return state;
}

function validateImport(imported: ImportedAnchors, now: Date, trustDomain: string) {
  const [rootDer, ...extraRoots] = certificatesFromPem(imported.rootCertPem);
  if (rootDer === undefined || extraRoots.length > 0) {
    throw new MeshwardError("E_IMPORT_INVALID", "--root-cert must hold exactly one certificate (the root)");
  }
  const root = new X509Certificate(rootDer);
  if (!root.ca) throw new MeshwardError("E_IMPORT_INVALID", "--root-cert is not a CA certificate (basicConstraints CA:TRUE is missing)");
  const issuerChain = certificatesFromPem(imported.issuerCertPem).map((der) => new X509Certificate(der));
  const issuer = issuerChain[0];
  if (issuer === undefined) throw new MeshwardError("E_IMPORT_INVALID", "--issuer-cert holds no certificate");
  if (!issuer.ca) throw new MeshwardError("E_IMPORT_INVALID", "--issuer-cert is not a CA certificate (basicConstraints CA:TRUE is missing)");
  const issuerKey = decodePrivateKey(imported.issuerKeyPem);
  if (!keysMatch(issuerKey, issuer.publicKey)) {
    throw new MeshwardError("E_IMPORT_INVALID", "--issuer-key does not belong to --issuer-cert");
  }
  // Each certificate must be signed by the next, ending at the root, and valid now.
  const path = [...issuerChain, root];
  for (const [index, cert] of path.entries()) {
    const parent = path[index + 1];
    if (parent !== undefined && !(cert.checkIssued(parent) && cert.verify(parent.publicKey))) {
      throw new MeshwardError("E_IMPORT_INVALID", `--issuer-cert does not chain to --root-cert: ${cert.subject.replace(/\n/g, ", ")} is not signed by ${parent.subject.replace(/\n/g, ", ")}`);
    }
    if (now < new Date(cert.validFrom) || now >= new Date(cert.validTo)) {
      throw new MeshwardError("E_IMPORT_INVALID", `${cert.subject.replace(/\n/g, ", ")} is not valid now (${cert.validFrom} – ${cert.validTo})`);
    }
  }
  assertIssuerUsable({ issuerChain, issuerKey, roots: [root], now, what: "--issuer-cert/--issuer-key", trustDomain });
  return { root, issuerChain, issuerKey };
}

export function writeCaState(dir: string, state: CaState, files: AnchorFiles = directoryFiles): void {
  files.write(caLayout(dir).state, `${JSON.stringify(state, null, 2)}\n`, { secret: false });
}

export function readCaState(dir: string, files: AnchorFiles = directoryFiles): CaState {
  const layout = caLayout(dir);
  let text: string;
  try {
    text = files.read(layout.state);
  } catch {
    throw new MeshwardError("E_CA_NOT_FOUND", `${dir} is not a meshward CA directory (no ca.json); create one with 'meshward ca init --trust-domain TD --dir ${dir}'`);
  }
  const state = JSON.parse(text) as CaState;
  if (state.version !== 1) throw new MeshwardError("E_CA_STATE_NEWER", `${layout.state} was written by a newer meshward (version ${state.version})`);
  return state;
}

export function loadAnchors(options: { dir: string; passphrase?: string; files?: AnchorFiles }): LoadedAnchors {
  const layout = caLayout(options.dir);
  const files = options.files ?? directoryFiles;
  const state = readCaState(options.dir, files);
  files.assertPrivate(layout.issuerKey, "issuer key file");
  if (files.exists(layout.rootKey)) files.assertPrivate(layout.rootKey, "root key file");
  const roots = certificatesFromPem(files.read(layout.bundle)).map((der) => new X509Certificate(der));
  const issuerChain = certificatesFromPem(files.read(layout.issuerCert)).map((der) => new X509Certificate(der));
  const issuerCert = issuerChain[0];
  if (issuerCert === undefined) throw new MeshwardError("E_CA_CORRUPT", `${layout.issuerCert} holds no certificate`);
  const privateKey = decodePrivateKey(files.read(layout.issuerKey), options.passphrase);
  if (!keysMatch(privateKey, issuerCert.publicKey)) {
    throw new MeshwardError("E_CA_CORRUPT", `${layout.issuerKey} does not belong to ${layout.issuerCert}`);
  }
  const issuerRoot = roots.find((root) => issuerChain[issuerChain.length - 1]!.checkIssued(root) && issuerChain[issuerChain.length - 1]!.verify(root.publicKey));
  if (issuerRoot === undefined) {
    throw new MeshwardError("E_CA_CORRUPT", `the issuer in ${layout.issuerCert} does not chain to any root in ${layout.bundle}`);
  }
  return {
    layout,
    trustDomain: state.trustDomain,
    mode: state.mode,
    state,
    roots,
    rootsPem: roots.map((r) => toPem(r.raw, "CERTIFICATE")).join(""),
    issuer: { certificate: issuerCert, der: issuerCert.raw, privateKey },
    issuerChainPem: issuerChain.map((c) => toPem(c.raw, "CERTIFICATE")).join(""),
    issuerRoot,
    ...(files.version !== undefined ? { stateVersion: files.version } : {}),
  };
}
