import { createHash, createPublicKey, X509Certificate, type KeyObject } from "node:crypto";
import { existsSync, mkdirSync, rmSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { isMeshwardError, MeshwardError } from "../errors.ts";
import { createIssuerCertificate, createRootCertificate, type Signer } from "../pki/certificate.ts";
import { decodePrivateKey, encodePrivateKey, generateKeyPair, isEncryptedPrivateKeyPem, keysMatch, type KeyAlgorithm } from "../pki/keys.ts";
import { certificatesFromPem, toPem } from "../pki/pem.ts";
import { parseTrustDomain } from "../spiffe/id.ts";
import { assertIssuerUsable } from "./issuer-check.ts";
import { checkRootScope, type RootTrustChoice } from "./root-scope.ts";
import { checkCaDir } from "../util/dir-safety.ts";
import { writeFileAtomic, writeSecretFileAtomic } from "../util/files.ts";
import { directoryFiles, type AnchorFiles } from "./anchor-files.ts";
import { tryLockFile } from "../store/file-lock.ts";
import { pendingPath } from "./pair-switch.ts";
import { readRetiredIssuers, rootKeys, type RetiredIssuer, type RootKey } from "./root-crl.ts";

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
  /**
   * The issuer replaced by the last issuer rotation (not `--now`), kept only to sign its own CRL
   * while certificates it signed may still be valid (crl-publisher.ts); key stored like issuer.key.
   */
  readonly previousIssuerCert: string;
  readonly previousIssuerKey: string;
  /** Issuers retired with `--now`, listed as revoked in their root's CRL (root-crl.ts). */
  readonly retiredIssuers: string;
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
    previousIssuerCert: join(dir, "issuer.prev.pem"),
    previousIssuerKey: join(dir, "issuer.prev.key"),
    retiredIssuers: join(dir, "issuers-retired.json"),
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
  /**
   * The CA keeps its key files encrypted (PKCS#8 with the CA passphrase): `ca init` with a
   * passphrase, or a later step that wrote a key with one. Every step that writes a key then needs
   * the passphrase. Absent in directories made before it was recorded: the key files tell (`caKeysEncrypted`).
   */
  readonly keysEncrypted?: boolean;
  /**
   * Imported roots whose nameConstraints do not confine URI names to the trust domain, accepted
   * with --trust-every-ca-under-root: every CA under them can mint identities the mesh accepts.
   * `ca status` shows them and `ca serve` warns at every start; a root leaves the list when it
   * leaves the bundle (`rotate-root retire`).
   */
  readonly trustEveryCaUnderRoot?: readonly RootTrustChoice[];
  /**
   * A generated root's prepare under way (`rotate-root prepare`, rotation.ts prepareRoot): recorded
   * before root.next.key is written, and dropped when the prepare records `rootRotation`. A
   * root.next.* found later is taken up only when its key is this one. Absent in directories of a
   * meshward that did not record it (see prepareRoot for what a root.next.* left without it means).
   */
  readonly preparingRoot?: PreparingRoot;
}

/** The key a generated root's prepare writes to root.next.key, recorded in ca.json before it is written. */
export interface PreparingRoot {
  /** SHA-256 of the key's SubjectPublicKeyInfo (DER), upper-case hex pairs joined by ":" (as certificate fingerprints are shown). */
  readonly keyFingerprint: string;
  readonly startedAt: string;
}

/** SHA-256 of a key's SubjectPublicKeyInfo, as PreparingRoot.keyFingerprint records it. */
export function keyFingerprint(key: KeyObject): string {
  const spki = (key.type === "private" ? createPublicKey(key) : key).export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("hex").toUpperCase().match(/../g)!.join(":");
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
  /** Decrypts an encrypted `issuerKeyPem` (its own passphrase, not the one the CA encrypts its keys with). */
  readonly issuerKeyPassphrase?: string;
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
  /**
   * Import a root whose nameConstraints do not confine URI names to the trust domain, accepting that
   * every CA under it can mint identities the mesh accepts (recorded in ca.json). Without it such a
   * root is refused with E_ROOT_UNCONSTRAINED.
   */
  readonly trustEveryCaUnderRoot?: boolean;
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
  /** The issuer the last rotation replaced, still signing its own CRL (see loadPreviousIssuer). */
  readonly previousIssuer?: PreviousIssuer;
  /** Why issuer.prev.* is present but not used. */
  readonly previousIssuerProblem?: string;
  /** Version of the CA state in the store these were loaded from (several replicas); absent for a directory. */
  readonly stateVersion?: number;
  /** Roots of the bundle whose key the CA holds: each signs a root CRL (root-crl.ts). Empty with an external root. */
  readonly rootKeys: readonly RootKey[];
  /** Issuers retired with `--now`, listed in the CRL of the root that signed them. */
  readonly retiredIssuers: readonly RetiredIssuer[];
  /** Why the retired issuers could not be read (the root CRLs are then not signed). */
  readonly retiredIssuersProblem?: string;
}

export async function initAnchors(options: InitOptions): Promise<CaState> {
  const trustDomain = parseTrustDomain(options.trustDomain);
  // An existing directory others can write is refused before anything is written into it (the
  // CLI's --dir hook does the same for `ca init`; this is for SDK callers).
  checkCaDir(options.dir, "initAnchors dir");
  const layout = caLayout(options.dir);
  // Only a finished CA is refused before the claim: partial files may be another init's, half-way
  // through (it writes ca.json last), which the claim below tells apart from an interrupted one.
  if (existsSync(layout.state)) refuseExistingCa(options.dir, layout);
  const mode: AnchorMode = options.imported ? "external-root" : "self-managed";
  // Validated before the directory is made: a refused import leaves nothing behind.
  const imported = options.imported ? validateImport(options.imported, options.now, trustDomain, options.trustEveryCaUnderRoot === true) : undefined;
  makeCaDir(options.dir);
  // Two inits on one directory (a retried Job, two admins) must not both write it: the first to
  // lock the claim file owns the directory until ca.json is written, and the other is refused.
  // The operating system drops the lock when its holder dies, so a killed init blocks nothing.
  const claim = join(options.dir, INIT_CLAIM);
  const lock = tryLockFile(claim);
  if (lock === "held") {
    // The other init may be half-way through its files: only a finished CA (ca.json) is named as
    // one, never its partial files as an interrupted init.
    if (existsSync(layout.state)) refuseExistingCa(options.dir, layout);
    throw new MeshwardError(
      "E_CA_EXISTS",
      `another 'meshward ca init' is creating a CA in ${options.dir} (it holds the lock on ${claim}); refusing to write there. Wait for it to finish, or stop it`,
      { details: { dir: options.dir } },
    );
  }
  if (lock === "not-a-lock") {
    throw new MeshwardError(
      "E_CA_EXISTS",
      `${claim} is the claim of a 'meshward ca init' of an older meshward release, which may still be creating a CA in ${options.dir}; refusing to write there. If none runs (one was killed before it wrote anything), remove ${claim} and run 'meshward ca init' again`,
      { details: { dir: options.dir } },
    );
  }
  try {
    // Checked again now that the directory is ours: another init may have finished in between, or
    // an interrupted one left its partial files (E_CA_INCOMPLETE: nothing is overwritten).
    refuseExistingCa(options.dir, layout);
    return await writeNewCa(options, layout, trustDomain, mode, imported);
  } finally {
    // Removed before the lock is let go: an init waiting on this file then finds it unlinked.
    rmSync(claim, { force: true });
    lock.release();
  }
}

/** The file an init holds locked (tryLockFile) in the CA directory while it writes it. */
export const INIT_CLAIM = ".meshward-init.lock";

/** E_CA_EXISTS for a complete CA; E_CA_INCOMPLETE for key or certificate files without ca.json. */
function refuseExistingCa(dir: string, layout: CaLayout): void {
  if (existsSync(layout.state)) {
    throw new MeshwardError(
      "E_CA_EXISTS",
      `${dir} already holds a meshward CA; refusing to overwrite it. Use another --dir, or rotate with 'meshward ca rotate-*'.`,
    );
  }
  // Key or certificate files without ca.json: an interrupted init (or a lost ca.json). The same
  // error as every other command gives there; nothing in it is overwritten or removed.
  const partial = partialCaFiles(layout, directoryFiles);
  if (partial.length > 0) throw incompleteCa(dir, partial);
}

async function writeNewCa(options: InitOptions, layout: CaLayout, trustDomain: string, mode: AnchorMode, imported: ReturnType<typeof validateImport> | undefined): Promise<CaState> {

  if (imported) {
    const { root, issuerChain, issuerKey } = imported;
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
  const state: CaState = {
    version: 1,
    trustDomain,
    mode,
    createdAt: options.now.toISOString(),
    keysEncrypted: options.passphrase !== undefined,
    ...(imported?.trustChoice !== undefined ? { trustEveryCaUnderRoot: [imported.trustChoice] } : {}),
  };
  // Written last: a directory with ca.json is a complete CA.
  writeFileAtomic(layout.state, `${JSON.stringify(state, null, 2)}\n`);
  return state;
}

function validateImport(imported: ImportedAnchors, now: Date, trustDomain: string, trustEveryCa: boolean) {
  const [rootDer, ...extraRoots] = certificatesFromPem(imported.rootCertPem);
  if (rootDer === undefined || extraRoots.length > 0) {
    throw new MeshwardError("E_IMPORT_INVALID", "--root-cert must hold exactly one certificate (the root)");
  }
  const root = new X509Certificate(rootDer);
  if (!root.ca) throw new MeshwardError("E_IMPORT_INVALID", "--root-cert is not a CA certificate (basicConstraints CA:TRUE is missing)");
  // A trust anchor of every workload: node:tls builds no partial chain, so an intermediate given
  // here would leave a CA whose certificates no workload can verify (E_CA_UNTRUSTED at first use).
  if (!(root.checkIssued(root) && root.verify(root.publicKey))) {
    throw new MeshwardError("E_IMPORT_INVALID", `--root-cert must be a self-signed root; ${root.subject.replace(/\n/g, ", ")} is issued by ${root.issuer.replace(/\n/g, ", ")} (give that root, and this certificate after the issuer in --issuer-cert)`);
  }
  const issuerChain = certificatesFromPem(imported.issuerCertPem).map((der) => new X509Certificate(der));
  const issuer = issuerChain[0];
  if (issuer === undefined) throw new MeshwardError("E_IMPORT_INVALID", "--issuer-cert holds no certificate");
  if (!issuer.ca) throw new MeshwardError("E_IMPORT_INVALID", "--issuer-cert is not a CA certificate (basicConstraints CA:TRUE is missing)");
  const issuerKey = decodePrivateKey(imported.issuerKeyPem, imported.issuerKeyPassphrase);
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
  const trustChoice = checkRootScope({ root, trustDomain, what: "--root-cert", trustEveryCa, now, issuerChain });
  return { root, issuerChain, issuerKey, trustChoice };
}

export function writeCaState(dir: string, state: CaState, files: AnchorFiles = directoryFiles): void {
  files.write(caLayout(dir).state, `${JSON.stringify(state, null, 2)}\n`, { secret: false });
}

/** `ca init` creates the directory 0700; a path that cannot be one is E_CA_DIR with what to do. */
function makeCaDir(dir: string): void {
  if (existsSync(dir) && !statSync(dir).isDirectory()) {
    throw new MeshwardError("E_CA_DIR", `${dir} exists and is not a directory; give --dir a new or empty directory`, { details: { path: dir } });
  }
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === "ENOTDIR" || code === "EEXIST"
        ? "a part of that path is a file, not a directory"
        : code === "EACCES" || code === "EPERM"
          ? "permission denied"
          : code === "EROFS"
            ? "the file system is read-only"
            : (code ?? (error as Error).message);
    throw new MeshwardError("E_CA_DIR", `cannot create the CA directory ${dir} (${why}); give --dir a path where this user can create a directory`, {
      details: { path: dir, ...(code !== undefined ? { cause: code } : {}) },
    });
  }
}

/** Files `ca init` writes before ca.json, which it writes last. */
function partialCaFiles(layout: CaLayout, files: AnchorFiles): string[] {
  return [layout.rootKey, layout.issuerKey, layout.rootCert, layout.bundle, layout.issuerCert].filter((file) => files.exists(file)).map((file) => basename(file));
}

function incompleteCa(dir: string, present: readonly string[]): MeshwardError {
  return new MeshwardError(
    "E_CA_INCOMPLETE",
    `${dir} holds part of a meshward CA (${present.join(", ")}) but no ca.json, which 'meshward ca init' writes last: an init was interrupted, or ca.json was lost. ` +
      `If this CA was never used, move the directory aside (mv ${dir} ${dir}.partial) and run 'meshward ca init' again; if it is in use, restore ca.json from your backup of the CA directory. Nothing was changed`,
    { details: { dir, present } },
  );
}

function corruptState(path: string, why: string): MeshwardError {
  return new MeshwardError("E_CA_CORRUPT", `${path} ${why}: restore it from your backup of the CA directory`, { details: { path } });
}

export function readCaState(dir: string, files: AnchorFiles = directoryFiles): CaState {
  const layout = caLayout(dir);
  if (!files.exists(layout.state)) {
    const partial = partialCaFiles(layout, files);
    if (partial.length > 0) throw incompleteCa(dir, partial);
    throw new MeshwardError("E_CA_NOT_FOUND", `${dir} is not a meshward CA directory (no ca.json); create one with 'meshward ca init --trust-domain TD --dir ${dir}'`);
  }
  const text = files.read(layout.state);
  let state: unknown;
  try {
    state = JSON.parse(text);
  } catch (error) {
    throw corruptState(layout.state, `is not valid JSON (${(error as Error).message})`);
  }
  if (state === null || typeof state !== "object" || Array.isArray(state)) throw corruptState(layout.state, "does not hold a JSON object");
  const { version, trustDomain, mode, keysEncrypted } = state as Record<string, unknown>;
  if (typeof version === "number" && version > 1) throw new MeshwardError("E_CA_STATE_NEWER", `${layout.state} was written by a newer meshward (version ${version})`);
  if (version !== 1) throw corruptState(layout.state, `has no valid "version" (found ${JSON.stringify(version) ?? "none"})`);
  if (typeof trustDomain !== "string" || trustDomain === "") throw corruptState(layout.state, 'has no "trustDomain"');
  if (mode !== "self-managed" && mode !== "external-root") throw corruptState(layout.state, `has no valid "mode" (found ${JSON.stringify(mode) ?? "none"})`);
  if (keysEncrypted !== undefined && typeof keysEncrypted !== "boolean") throw corruptState(layout.state, '"keysEncrypted" is not true or false');
  const { trustEveryCaUnderRoot } = state as Record<string, unknown>;
  if (trustEveryCaUnderRoot !== undefined && !(Array.isArray(trustEveryCaUnderRoot) && trustEveryCaUnderRoot.every(isRootTrustChoice))) {
    throw corruptState(layout.state, '"trustEveryCaUnderRoot" is not a list of { rootFingerprint, subject, acceptedAt }');
  }
  const { preparingRoot } = state as Record<string, unknown>;
  if (preparingRoot !== undefined) {
    const { keyFingerprint: recorded, startedAt } = (preparingRoot ?? {}) as Record<string, unknown>;
    if (typeof recorded !== "string" || !/^[0-9A-F]{2}(?::[0-9A-F]{2}){31}$/.test(recorded) || typeof startedAt !== "string") {
      throw corruptState(layout.state, '"preparingRoot" is not { keyFingerprint (SHA-256, hex pairs), startedAt }');
    }
  }
  return state as CaState;
}

function isRootTrustChoice(value: unknown): value is RootTrustChoice {
  if (value === null || typeof value !== "object") return false;
  const { rootFingerprint, subject, acceptedAt } = value as Record<string, unknown>;
  return typeof rootFingerprint === "string" && typeof subject === "string" && typeof acceptedAt === "string";
}

/** Key files a CA directory may hold. */
function keyFiles(layout: CaLayout): string[] {
  return [layout.rootKey, layout.issuerKey, layout.nextRootKey, layout.nextIssuerKey, layout.previousRootKey, layout.previousIssuerKey];
}

/**
 * Whether the CA keeps its keys encrypted: ca.json says so, or (directories made before it
 * recorded it, or whose keys were encrypted later) one of its key files is encrypted.
 */
export function caKeysEncrypted(dir: string, state: CaState, files: AnchorFiles = directoryFiles): boolean {
  return encryptedBecause(dir, state, files) !== undefined;
}

function encryptedBecause(dir: string, state: CaState, files: AnchorFiles): string | undefined {
  const layout = caLayout(dir);
  if (state.keysEncrypted === true) return `${basename(layout.state)} records keysEncrypted`;
  const file = keyFiles(layout).find((f) => files.exists(f) && isEncryptedPrivateKeyPem(files.read(f)));
  return file === undefined ? undefined : `${basename(file)} is encrypted`;
}

/**
 * Called by every step that writes a key file, before it writes anything: a CA that keeps its
 * keys encrypted never gets one in the clear (E_KEY_PASSPHRASE_REQUIRED without a passphrase).
 * With a passphrase, new keys are written encrypted, also into a CA whose keys were not (the
 * store of several replicas holds keys only encrypted); `keysEncryptedState` records it.
 */
export function assertKeyWritable(dir: string, state: CaState, passphrase: string | undefined, files: AnchorFiles = directoryFiles): void {
  if (passphrase !== undefined) return;
  const because = encryptedBecause(dir, state, files);
  if (because === undefined) return;
  throw new MeshwardError(
    "E_KEY_PASSPHRASE_REQUIRED",
    `${dir} keeps its keys encrypted (${because}), and this step writes a new key, which without the CA passphrase would be stored unencrypted. ` +
      "Give the passphrase with --passphrase-file FILE (or MESHWARD_CA_PASSPHRASE); nothing was written",
    { details: { dir } },
  );
}

/** The state to record after a step wrote keys with `passphrase` (undefined when nothing changes). */
export function keysEncryptedState(state: CaState, passphrase: string | undefined): CaState | undefined {
  if (passphrase === undefined || state.keysEncrypted === true) return undefined;
  return { ...state, keysEncrypted: true };
}

/** Certificates of a CA file; a damaged one is E_CA_CORRUPT naming it. */
export function readCaCertificates(files: AnchorFiles, path: string): X509Certificate[] {
  const text = files.read(path);
  try {
    const certificates = certificatesFromPem(text).map((der) => new X509Certificate(der));
    if (certificates.length === 0) throw new MeshwardError("E_PEM_INVALID", "no CERTIFICATE block found");
    return certificates;
  } catch (error) {
    const why = isMeshwardError(error) ? error.message : "a certificate in it cannot be parsed";
    throw new MeshwardError("E_CA_CORRUPT", `${path} is damaged (${why}): restore it from your backup of the CA directory`, { details: { path } });
  }
}

/** A key file of the CA, decrypted; errors name the file and, for the passphrase, the flags. */
export function readCaKey(files: AnchorFiles, path: string, passphrase: string | undefined): KeyObject {
  const pem = files.read(path);
  try {
    return decodePrivateKey(pem, passphrase);
  } catch (error) {
    if (isMeshwardError(error, "E_KEY_PASSPHRASE_REQUIRED")) {
      throw new MeshwardError("E_KEY_PASSPHRASE_REQUIRED", `${path} is encrypted: give the CA passphrase with --passphrase-file FILE (or MESHWARD_CA_PASSPHRASE)`, { details: { path } });
    }
    if (isMeshwardError(error, "E_KEY_PASSPHRASE_WRONG")) {
      throw new MeshwardError("E_KEY_PASSPHRASE_WRONG", `the passphrase does not decrypt ${path} (wrong passphrase, or a damaged file): give the CA's passphrase, or restore the file from your backup`, {
        details: { path, ...(error.details ?? {}) },
      });
    }
    if (isMeshwardError(error)) {
      throw new MeshwardError("E_CA_CORRUPT", `${path} is damaged (${error.message}): restore it from your backup of the CA directory`, { details: { path } });
    }
    throw error;
  }
}

export function loadAnchors(options: { dir: string; passphrase?: string; files?: AnchorFiles }): LoadedAnchors {
  const layout = caLayout(options.dir);
  const files = options.files ?? directoryFiles;
  const state = readCaState(options.dir, files);
  // A missing issuer key is E_CA_CORRUPT naming it (read), before its mode is checked.
  if (!files.exists(layout.issuerKey)) files.read(layout.issuerKey);
  files.assertPrivate(layout.issuerKey, "issuer key file");
  if (files.exists(layout.rootKey)) files.assertPrivate(layout.rootKey, "root key file");
  const roots = readCaCertificates(files, layout.bundle);
  let issuerChain = readCaCertificates(files, layout.issuerCert);
  const privateKey = readCaKey(files, layout.issuerKey, options.passphrase);
  if (!keysMatch(privateKey, (issuerChain[0] as X509Certificate).publicKey)) {
    // An issuer switch interrupted after the new key was in place (pair-switch.ts): its
    // certificate is the staged one, which the next holder of the directory lock renames.
    const pending = pendingPath(layout.issuerCert);
    const staged = !files.exists(pendingPath(layout.issuerKey)) && files.exists(pending) ? readCaCertificates(files, pending) : undefined;
    if (staged === undefined || !keysMatch(privateKey, (staged[0] as X509Certificate).publicKey)) {
      throw new MeshwardError(
        "E_CA_CORRUPT",
        `${layout.issuerKey} does not belong to ${layout.issuerCert}: restore the pair from your backup of the CA directory, or install a new issuer (self-managed root: 'meshward ca rotate-issuer --dir ${options.dir} --now'; otherwise 'meshward ca import-issuer')`,
        { details: { key: layout.issuerKey, cert: layout.issuerCert } },
      );
    }
    issuerChain = staged;
  }
  const issuerCert = issuerChain[0] as X509Certificate;
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
    ...loadPreviousIssuer(layout, files, roots, issuerCert, options.passphrase),
    ...loadRootCrlSources(layout, files, roots, options.passphrase),
    ...(files.version !== undefined ? { stateVersion: files.version } : {}),
  };
}

/**
 * The previous issuer (issuer.prev.*), when it is still worth a CRL: it chains to a root of the
 * bundle (the publisher checks its expiry and that of what it signed). One that does not load is left out with the reason (the CA logs
 * it): its workloads then find no CRL of their issuer and renew at once, as before this existed;
 * it never stops the current issuer from signing.
 */
function loadPreviousIssuer(layout: CaLayout, files: AnchorFiles, roots: readonly X509Certificate[], current: X509Certificate, passphrase: string | undefined): { previousIssuer?: PreviousIssuer; previousIssuerProblem?: string } {
  const keyExists = files.exists(layout.previousIssuerKey);
  // A pair switch interrupted after the key was in place (pair-switch.ts): the staged certificate is its own.
  const staged = pendingPath(layout.previousIssuerCert);
  const certPath = files.exists(layout.previousIssuerCert) ? layout.previousIssuerCert : keyExists && !files.exists(pendingPath(layout.previousIssuerKey)) && files.exists(staged) ? staged : undefined;
  if (certPath === undefined && !keyExists) return {};
  // One file without the other is reported (review crlset LOW-2): its workloads renew at once, and the CA's log says why.
  if (certPath === undefined) return { previousIssuerProblem: `${layout.previousIssuerKey} is there but ${layout.previousIssuerCert} is missing` };
  if (!keyExists) return { previousIssuerProblem: `${layout.previousIssuerCert} is there but ${layout.previousIssuerKey} is missing` };
  try {
    files.assertPrivate(layout.previousIssuerKey, "previous issuer key file");
    const chain = readCaCertificates(files, certPath);
    const certificate = chain[0] as X509Certificate;
    if (certificate.fingerprint256 === current.fingerprint256) return {};
    const top = chain[chain.length - 1]!;
    if (!roots.some((root) => top.checkIssued(root) && top.verify(root.publicKey))) {
      return { previousIssuerProblem: `the previous issuer in ${certPath} (sha256 ${certificate.fingerprint256}) does not chain to any root in ${layout.bundle}` };
    }
    const privateKey = readCaKey(files, layout.previousIssuerKey, passphrase);
    if (!keysMatch(privateKey, certificate.publicKey)) throw new MeshwardError("E_CA_CORRUPT", `${layout.previousIssuerKey} does not belong to ${layout.previousIssuerCert}`);
    return { previousIssuer: { signer: { certificate, der: certificate.raw, privateKey }, chainPem: chain.map((c) => toPem(c.raw, "CERTIFICATE")).join("") } };
  } catch (error) {
    return { previousIssuerProblem: isMeshwardError(error) ? error.message : String(error) };
  }
}

/**
 * What the root CRLs need: the roots whose key is held (read only when a root CRL is signed) and the
 * issuers retired with --now. A damaged retired-issuers file leaves the root CRLs out (with the
 * reason, which the CA logs) rather than publishing root CRLs that miss a revoked issuer.
 */
function loadRootCrlSources(layout: CaLayout, files: AnchorFiles, roots: readonly X509Certificate[], passphrase: string | undefined): { rootKeys: readonly RootKey[]; retiredIssuers: readonly RetiredIssuer[]; retiredIssuersProblem?: string } {
  const keys = rootKeys(files, layout, roots, passphrase, readCaKey);
  try {
    return { rootKeys: keys, retiredIssuers: readRetiredIssuers(files, layout) };
  } catch (error) {
    return { rootKeys: [], retiredIssuers: [], retiredIssuersProblem: isMeshwardError(error) ? error.message : String(error) };
  }
}

/** An issuer that no longer signs certificates but still signs its CRL (see CaLayout.previousIssuerCert). */
export interface PreviousIssuer {
  readonly signer: Signer;
  /** The issuer followed by any intermediates below the root. */
  readonly chainPem: string;
}
