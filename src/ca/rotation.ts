import { createPublicKey, X509Certificate, type KeyObject } from "node:crypto";
import { basename } from "node:path";
import { isMeshwardError, MeshwardError } from "../errors.ts";
import { createIssuerCertificate, createRootCertificate, type Signer } from "../pki/certificate.ts";
import { assertIssuerUsable } from "./issuer-check.ts";
import { readRetiredIssuers, retiredIssuersWith } from "./root-crl.ts";
import { checkRootScope, type RootTrustChoice } from "./root-scope.ts";
import { decodePrivateKey, encodePrivateKey, generateKeyPair, isEncryptedPrivateKeyPem, keyAlgorithmOf, keysMatch } from "../pki/keys.ts";
import { certificatesFromPem, toPem } from "../pki/pem.ts";
import type { Store } from "../store/store.ts";
import { directoryFiles, type AnchorFiles } from "./anchor-files.ts";
import {
  ANCHOR_BACKDATE_MS,
  assertKeyWritable,
  caLayout,
  DEFAULT_ISSUER_TTL_MS,
  DEFAULT_ROOT_TTL_MS,
  keyFingerprint,
  keysEncryptedState,
  readCaCertificates,
  readCaKey,
  readCaState,
  rootCommonName,
  writeCaState,
  type CaLayout,
  type CaState,
} from "./anchors.ts";

const DAY_MS = 86_400_000;

/**
 * Rotation changes only files of the CA directory, written atomically (or, with several
 * replicas, the store's copy of them, committed in one transaction); a running CA watches
 * them and switches without a restart. Signing mechanism apart from rotation policy, and
 * rotation as prepare → activate → retire, as SPIRE does.
 */

export type IssuerStage = "current" | "prepare" | "activate";

/**
 * SPIRE's thresholds: prepare a successor once less than min(½ life, 30 days) is left,
 * switch signing to it once less than min(⅙ life, 7 days) is left.
 */
export function issuerRotationStage(issuer: X509Certificate, now: Date): IssuerStage {
  const notBefore = new Date(issuer.validFrom).getTime();
  const notAfter = new Date(issuer.validTo).getTime();
  const life = notAfter - notBefore;
  const left = notAfter - now.getTime();
  if (left < Math.min(life / 6, 7 * DAY_MS)) return "activate";
  if (left < Math.min(life / 2, 30 * DAY_MS)) return "prepare";
  return "current";
}

interface RootMaterial {
  readonly certificate: X509Certificate;
  readonly signer: Signer;
}

function readRoot(files: AnchorFiles, certFile: string, keyFile: string, passphrase: string | undefined): RootMaterial {
  const certificate = readCaCertificates(files, certFile)[0] as X509Certificate;
  const privateKey = readCaKey(files, keyFile, passphrase);
  if (!keysMatch(privateKey, certificate.publicKey)) throw new MeshwardError("E_CA_CORRUPT", `${keyFile} does not belong to ${certFile}`);
  return { certificate, signer: { certificate, der: certificate.raw, privateKey } };
}

/**
 * A key file's PEM as this CA stores it: with a passphrase, one left in the clear (a successor
 * prepared by an older meshward without the passphrase) is encrypted before it is installed.
 */
function sealedKeyPem(pem: string, passphrase: string | undefined): string {
  if (passphrase === undefined || isEncryptedPrivateKeyPem(pem)) return pem;
  return encodePrivateKey(decodePrivateKey(pem), passphrase);
}

/** After a step wrote keys: a passphrase given to a CA not yet recorded as encrypting its keys is recorded in ca.json. */
function recordKeysEncrypted(dir: string, state: CaState, passphrase: string | undefined, files: AnchorFiles): void {
  const next = keysEncryptedState(state, passphrase);
  if (next !== undefined) writeCaState(dir, next, files);
}

function requireSelfManaged(state: CaState, what: string): void {
  if (state.mode !== "self-managed") {
    throw new MeshwardError(
      "E_ROTATION_EXTERNAL_ROOT",
      `${what} needs the root key, which this CA does not hold (its root belongs to your organisation). Have your root sign a new issuer and install it with 'meshward ca import-issuer'.`,
    );
  }
}

async function newIssuer(root: Signer, trustDomain: string, now: Date, ttlMs: number) {
  // The issuer keeps the root's key type (`ca init --key-type`).
  const keys = generateKeyPair(keyAlgorithmOf(root.privateKey));
  const rootNotAfter = new Date(root.certificate.validTo).getTime();
  const issued = await createIssuerCertificate({
    trustDomain,
    publicKey: keys.publicKey,
    signer: root,
    notBefore: new Date(now.getTime() - ANCHOR_BACKDATE_MS),
    notAfter: new Date(Math.min(now.getTime() + ttlMs, rootNotAfter)),
  });
  return { der: issued.der, privateKey: keys.privateKey };
}

/**
 * Installs an issuer: key and certificate as one unit (AnchorFiles.writePair; in a directory,
 * staged in full, then switched key first), so neither a watcher nor a CA restarted after a crash
 * ever pairs one issuer's key with another's certificate, and the old key stays until the new
 * pair is complete on disk.
 *
 * `keepPrevious`: the issuer being replaced becomes issuer.prev.* (its key stored as issuer.key
 * was: 0600, atomically, encrypted with the CA passphrase when the CA encrypts its keys; the pair
 * switched as one unit too), so the CA keeps signing its CRL until the certificates it signed
 * expire and workloads move to the new issuer at their own scheduled renewal, the way SPIRE keeps
 * the old X.509 authority trusted after activation (spire-server `localauthority x509
 * prepare/activate`). Without it (`rotate-issuer --now`, the answer to a leaked key) the previous
 * one is dropped: its CRL is no longer published and its workloads renew within a bundle refresh,
 * as SPIRE's `localauthority x509 taint` makes agents rotate at once away from a tainted
 * authority. Every issuer it drops is also recorded as retired (issuers-retired.json, root-crl.ts:
 * the root's CRL lists it until it expires; the CA withdraws its JWT-SVID key): the one it replaces
 * and the previous one in issuer.prev.*, if any (kept by an earlier ordinary rotation: its key was
 * beside the leaked one). The record is written in the same unit as the new pair (AnchorFiles.writePair
 * `also`: in a directory the record is staged with the pair and put in place right after the new
 * key, so a crash leaves either the old issuer and no record or the new issuer and the record; in
 * the store, one transaction), whoever calls: the CLI or code, and issuer.prev.* is removed only
 * after it. A retry after an interruption that finds the new issuer already installed records and
 * removes an issuer.prev.* still there, and keeps the record of the issuer it replaced.
 */
function installIssuer(files: AnchorFiles, layout: CaLayout, certPem: string, keyPem: string, keepPrevious: boolean, passphrase: string | undefined, now: Date): void {
  let retired: { path: string; content: string } | undefined;
  if (keepPrevious && files.exists(layout.issuerCert) && files.exists(layout.issuerKey)) {
    const currentCertPem = files.read(layout.issuerCert);
    if (currentCertPem !== certPem) {
      files.writePair({ path: layout.previousIssuerKey, content: sealedKeyPem(files.read(layout.issuerKey), passphrase) }, { path: layout.previousIssuerCert, content: currentCertPem });
    }
    files.writePair({ path: layout.issuerKey, content: keyPem }, { path: layout.issuerCert, content: certPem });
    return;
  }
  if (!keepPrevious) {
    // Every issuer whose key this drops is retired: the one replaced and the previous one (issuer.prev.*,
    // kept by an ordinary rotation), whose key sat beside the leaked one. Listed, the root CRL revokes
    // it and the CA withdraws its JWT-SVID key (review rotation task 3: it stayed published up to the TTL).
    const dropped = [replacedIssuer(files, layout.issuerCert, certPem), replacedIssuer(files, layout.previousIssuerCert, certPem)].filter((c): c is X509Certificate => c !== undefined);
    if (dropped.length > 0) retired = { path: layout.retiredIssuers, content: retiredIssuersWith(files, layout, dropped, now) };
  }
  files.writePair({ path: layout.issuerKey, content: keyPem }, { path: layout.issuerCert, content: certPem }, retired);
  // Removed once the new pair and the record are in place: a crash before leaves issuer.prev.* for the retry to record and remove.
  files.remove(layout.previousIssuerKey);
  files.remove(layout.previousIssuerCert);
}

/** The issuer in `path` (issuer.pem, issuer.prev.pem) that installing `certPem` drops; undefined when it is that one (a retry), absent or cannot be read (a damaged directory being repaired). */
function replacedIssuer(files: AnchorFiles, path: string, certPem: string): X509Certificate | undefined {
  try {
    if (!files.exists(path)) return undefined;
    const current = readCaCertificates(files, path)[0];
    const next = certificatesFromPem(certPem)[0];
    return current === undefined || (next !== undefined && current.raw.equals(next)) ? undefined : current;
  } catch {
    return undefined;
  }
}

export interface RotateIssuerOptions {
  readonly dir: string;
  readonly passphrase?: string;
  readonly now: Date;
  readonly issuerTtlMs?: number;
  /** Where the CA's files are (the store's shared state with several replicas); the directory by default. */
  readonly files?: AnchorFiles;
  /**
   * Keep the replaced issuer signing its CRL until what it signed expires (default true), so that
   * workloads move at their scheduled renewal; false (`rotate-issuer --now`) drops it, records it
   * as retired (the root's CRL lists it) and its workloads renew within a bundle refresh (see
   * installIssuer).
   */
  readonly keepPrevious?: boolean;
}

/**
 * Self-managed issuer rotation. Uses a prepared successor (issuer.next.*) when there is
 * one, else signs a fresh issuer with the active root; returns the new issuer certificate.
 */
export async function rotateIssuer(options: RotateIssuerOptions): Promise<X509Certificate> {
  const layout = caLayout(options.dir);
  const files = options.files ?? directoryFiles;
  const state = readCaState(options.dir, files);
  requireSelfManaged(state, "issuer rotation");
  assertKeyWritable(options.dir, state, options.passphrase, files);
  if (files.exists(layout.nextIssuerCert) && files.exists(layout.nextIssuerKey)) {
    const certPem = files.read(layout.nextIssuerCert);
    const certificate = readCaCertificates(files, layout.nextIssuerCert)[0] as X509Certificate;
    const root = readRoot(files, layout.rootCert, layout.rootKey, options.passphrase);
    if (certificate.checkIssued(root.certificate) && certificate.verify(root.certificate.publicKey) && new Date(certificate.validTo) > options.now) {
      installIssuer(files, layout, certPem, sealedKeyPem(files.read(layout.nextIssuerKey), options.passphrase), options.keepPrevious ?? true, options.passphrase, options.now);
      files.remove(layout.nextIssuerCert);
      files.remove(layout.nextIssuerKey);
      recordKeysEncrypted(options.dir, state, options.passphrase, files);
      return certificate;
    }
  }
  const root = readRoot(files, layout.rootCert, layout.rootKey, options.passphrase);
  const issuer = await newIssuer(root.signer, state.trustDomain, options.now, options.issuerTtlMs ?? DEFAULT_ISSUER_TTL_MS);
  installIssuer(files, layout, toPem(issuer.der, "CERTIFICATE"), encodePrivateKey(issuer.privateKey, options.passphrase), options.keepPrevious ?? true, options.passphrase, options.now);
  recordKeysEncrypted(options.dir, state, options.passphrase, files);
  return new X509Certificate(issuer.der);
}

/** Prepares the successor issuer without switching to it (the "prepare" stage). */
export async function prepareIssuer(options: RotateIssuerOptions): Promise<X509Certificate> {
  const layout = caLayout(options.dir);
  const files = options.files ?? directoryFiles;
  const state = readCaState(options.dir, files);
  requireSelfManaged(state, "issuer rotation");
  assertKeyWritable(options.dir, state, options.passphrase, files);
  const root = readRoot(files, layout.rootCert, layout.rootKey, options.passphrase);
  const issuer = await newIssuer(root.signer, state.trustDomain, options.now, options.issuerTtlMs ?? DEFAULT_ISSUER_TTL_MS);
  files.write(layout.nextIssuerKey, encodePrivateKey(issuer.privateKey, options.passphrase), { secret: true });
  files.write(layout.nextIssuerCert, toPem(issuer.der, "CERTIFICATE"), { secret: false });
  recordKeysEncrypted(options.dir, state, options.passphrase, files);
  return new X509Certificate(issuer.der);
}

/**
 * Validates an issuer (optionally followed by intermediates) against the roots: each
 * certificate signed by the next, the last by a root, all CAs, all valid now, key matching.
 */
export function validateIssuerChain(chain: readonly X509Certificate[], roots: readonly X509Certificate[], key: ReturnType<typeof decodePrivateKey>, now: Date, trustDomain: string): X509Certificate {
  const issuer = chain[0];
  if (issuer === undefined) throw new MeshwardError("E_IMPORT_INVALID", "the issuer file holds no certificate");
  if (!keysMatch(key, issuer.publicKey)) throw new MeshwardError("E_IMPORT_INVALID", "the issuer key does not belong to the issuer certificate");
  for (const [index, cert] of chain.entries()) {
    if (!cert.ca) throw new MeshwardError("E_IMPORT_INVALID", `${describe(cert)} is not a CA certificate (basicConstraints CA:TRUE is missing)`);
    if (now < new Date(cert.validFrom) || now >= new Date(cert.validTo)) {
      throw new MeshwardError("E_IMPORT_INVALID", `${describe(cert)} is not valid now (${cert.validFrom} – ${cert.validTo})`);
    }
    const parent = chain[index + 1];
    if (parent !== undefined && !(cert.checkIssued(parent) && cert.verify(parent.publicKey))) {
      throw new MeshwardError("E_IMPORT_INVALID", `${describe(cert)} is not signed by ${describe(parent)}`);
    }
  }
  const top = chain[chain.length - 1] as X509Certificate;
  const root = roots.find((r) => top.checkIssued(r) && top.verify(r.publicKey));
  if (root === undefined) throw new MeshwardError("E_IMPORT_INVALID", "the issuer does not chain to any root in the trust bundle");
  assertIssuerUsable({ issuerChain: chain, issuerKey: key, roots: [root], now, what: "the issuer", trustDomain });
  return root;
}

/** A serial as compared: uppercase hex without leading zeros (01 and 1 are the same serial). */
function normalSerial(serial: string): string {
  return serial.toUpperCase().replace(/^0+(?=.)/, "");
}

/**
 * Refuses an imported issuer whose serial equals that of a retired issuer (issuers-retired.json),
 * the current issuer or the previous one (which a later --now retires). Revocations are matched by
 * serial alone (the root's CRL lists retired issuers by serial; workloads check the CA's chain and
 * their peers' against the serials in force), which is safe for the random serials meshward makes
 * but not for issuers made elsewhere with a fixed serial (`openssl x509 -set_serial 1`): such an
 * issuer would be taken for the retired one, and no workload could get a certificate from it.
 * The same certificate as the current one (a retried import) is not a clash.
 */
function assertIssuerSerialFree(files: AnchorFiles, layout: CaLayout, issuer: X509Certificate): void {
  const serial = normalSerial(issuer.serialNumber);
  const others: { what: string; certificate: X509Certificate }[] = readRetiredIssuers(files, layout).map((r) => ({ what: `retired issuer (retired ${r.revokedAt.toISOString()})`, certificate: r.certificate }));
  for (const [path, what] of [
    [layout.issuerCert, "current issuer"],
    [layout.previousIssuerCert, "previous issuer (issuer.prev.pem)"],
  ] as const) {
    if (!files.exists(path)) continue;
    const certificate = readCaCertificates(files, path)[0];
    if (certificate !== undefined && certificate.fingerprint256 !== issuer.fingerprint256) others.push({ what, certificate });
  }
  const clash = others.find((o) => normalSerial(o.certificate.serialNumber) === serial);
  if (clash === undefined) return;
  throw new MeshwardError(
    "E_IMPORT_INVALID",
    `the issuer ${describe(issuer)} has serial ${issuer.serialNumber}, the same as the ${clash.what} ${describe(clash.certificate)} (serial ${clash.certificate.serialNumber}): revocations are matched by serial, so it would be taken for that issuer${clash.what.startsWith("retired") ? " and refused as retired" : " once that one is retired"}; re-issue it with a random serial (e.g. openssl x509 -req … -set_serial 0x$(openssl rand -hex 16))`,
    { details: { serial: issuer.serialNumber, clashingSerial: clash.certificate.serialNumber } },
  );
}

function describe(cert: X509Certificate): string {
  return JSON.stringify(cert.subject.replace(/\n/g, ", "));
}

function bundleRoots(files: AnchorFiles, layout: CaLayout): X509Certificate[] {
  return readCaCertificates(files, layout.bundle);
}

function writeBundle(files: AnchorFiles, layout: CaLayout, roots: readonly X509Certificate[]): void {
  files.write(layout.bundle, roots.map((r) => toPem(r.raw, "CERTIFICATE")).join(""), { secret: false });
}

/**
 * Installs an issuer signed by a root in the trust bundle (external-root CAs, or a
 * replacement made elsewhere). Refused, and nothing changes, if it does not validate.
 * `keepPrevious` as rotateIssuer's (false: `import-issuer --now`, the old issuer retired at once).
 */
export function importIssuer(options: { dir: string; issuerCertPem: string; issuerKeyPem: string; issuerKeyPassphrase?: string; passphrase?: string; now: Date; files?: AnchorFiles; keepPrevious?: boolean }): X509Certificate {
  const layout = caLayout(options.dir);
  const files = options.files ?? directoryFiles;
  const state = readCaState(options.dir, files);
  assertKeyWritable(options.dir, state, options.passphrase, files);
  const chain = certificatesFromPem(options.issuerCertPem).map((der) => new X509Certificate(der));
  const key = decodePrivateKey(options.issuerKeyPem, options.issuerKeyPassphrase ?? options.passphrase);
  validateIssuerChain(chain, bundleRoots(files, layout), key, options.now, state.trustDomain);
  assertIssuerSerialFree(files, layout, chain[0] as X509Certificate);
  installIssuer(files, layout, chain.map((c) => toPem(c.raw, "CERTIFICATE")).join(""), encodePrivateKey(key, options.passphrase), options.keepPrevious ?? true, options.passphrase, options.now);
  recordKeysEncrypted(options.dir, state, options.passphrase, files);
  return chain[0] as X509Certificate;
}

export interface PrepareRootOptions {
  readonly dir: string;
  readonly passphrase?: string;
  readonly now: Date;
  readonly rootTtlMs?: number;
  /** External-root CAs: the organisation's new root (certificate only). */
  readonly importedRootPem?: string;
  /** Accept an imported root that does not confine URI names to the trust domain (see root-scope.ts); recorded in ca.json. */
  readonly trustEveryCaUnderRoot?: boolean;
  readonly files?: AnchorFiles;
  /** Told when the step takes up what an interrupted prepare of this CA left (the CLI says so, the CA logs it). */
  readonly onResume?: (resumed: ResumedPrepare) => void;
}

/**
 * Step 1: a new root joins the trust bundle; signing is unchanged.
 *
 * ca.json is the commit point, written last: root.next.key, root.next.pem and bundle.pem are
 * written before it, so a prepare interrupted between them (crash, kill, full disk) leaves files
 * that ca.json does not record as prepared. A generating prepare first records in ca.json the key
 * it is about to write (preparingRoot: the SHA-256 of its SubjectPublicKeyInfo), then writes
 * root.next.key. The next prepare (the operator's, or the running CA's automatic rotation) takes
 * up what is left instead of starting over (review files MEDIUM-1), but only when it holds that key
 * (takeUpLeftover: root.next.* of another CA of the same trust domain are refused): a root.next.pem
 * whose key is in root.next.key is reused as it is; a root.next.key without its certificate gets
 * one; a root.next.pem whose key is gone (or that an import replaces) leaves the bundle again. An
 * existing root.next.key is never overwritten or removed (unless it is a copy of root.key), and the
 * bundle never keeps a root that ca.json does not record once the step is complete.
 */
export async function prepareRoot(options: PrepareRootOptions): Promise<X509Certificate> {
  const layout = caLayout(options.dir);
  const files = options.files ?? directoryFiles;
  const state = readCaState(options.dir, files);
  if (state.rootRotation !== undefined) {
    throw new MeshwardError(
      "E_ROTATION_IN_PROGRESS",
      `a root rotation is already ${state.rootRotation.phase}; continue with 'meshward ca rotate-root ${state.rootRotation.phase === "prepared" ? "activate" : "retire"}'`,
    );
  }
  // Only a generated root has a key to write.
  if (options.importedRootPem === undefined) assertKeyWritable(options.dir, state, options.passphrase, files);
  const current = readCaCertificates(files, layout.rootCert)[0] as X509Certificate;
  // What an interrupted prepare left: a root in root.next.pem that ca.json does not record.
  const leftover = unrecordedNextRoot(files, layout, current, options.passphrase);
  const othersInBundle = () => bundleRoots(files, layout).filter((r) => r.fingerprint256 !== leftover?.fingerprint256);
  let next: X509Certificate;
  let trustChoice: RootTrustChoice | undefined;
  // What ca.json will say (only a generated root has keys, so only then is encryption recorded).
  let written: CaState = options.importedRootPem === undefined ? (keysEncryptedState(state, options.passphrase) ?? state) : state;
  if (options.importedRootPem !== undefined) {
    const [der, ...more] = certificatesFromPem(options.importedRootPem);
    if (der === undefined || more.length > 0) throw new MeshwardError("E_IMPORT_INVALID", "the new root file must hold exactly one certificate");
    next = new X509Certificate(der);
    if (!next.ca || !next.checkIssued(next)) throw new MeshwardError("E_IMPORT_INVALID", "the new root must be a self-signed CA certificate");
    // Retiring "the previous root" would then remove the only one: an empty bundle, a CA that cannot start.
    // The root an interrupted import of the same file put there is not "already" in it: this run finishes that import.
    if (othersInBundle().some((root) => root.fingerprint256 === next.fingerprint256)) {
      throw new MeshwardError("E_IMPORT_INVALID", `the new root ${next.fingerprint256} is already in the trust bundle${next.fingerprint256 === current.fingerprint256 ? " (it is the current root)" : ""}: a rotation needs a root the bundle does not hold yet`);
    }
    // activate installs root.next.key as the new root's key whenever it exists: a key left by an
    // interrupted generating prepare would be paired with the imported root. It is not removed here
    // (no key is deleted without the operator).
    if (files.exists(layout.nextRootKey)) {
      throw new MeshwardError(
        "E_ROTATION_STATE",
        `${basename(layout.nextRootKey)} holds the key of a root generated by an interrupted 'meshward ca rotate-root prepare' (not recorded in ${basename(layout.state)}). Nothing was changed. ` +
          `Finish that rotation with 'meshward ca rotate-root prepare --dir ${options.dir}' (without --root-cert), or, to import this root instead, move ${basename(layout.nextRootKey)} out of ${options.dir} and run this command again (it then removes the generated root from the bundle)`,
      );
    }
    trustChoice = checkRootScope({ root: next, trustDomain: state.trustDomain, what: "the new root (--root-cert)", trustEveryCa: options.trustEveryCaUnderRoot === true, now: options.now });
    if (leftover?.fingerprint256 !== next.fingerprint256) files.write(layout.nextRootCert, toPem(next.raw, "CERTIFICATE"), { secret: false });
  } else {
    requireSelfManaged(state, "generating a root");
    // Resumed only if it is a root this CA generates (review today3 LOW-4): root.next.* copied in
    // from another CA's directory must not join the bundle as ours. Nothing is changed when refused.
    if (leftover !== undefined) refuseForeignLeftover(leftover, state.trustDomain, options.dir, layout);
    // A key an interrupted prepare of this CA wrote (the one ca.json records) is kept and used: the root published with it (if any) stays valid.
    let privateKey = files.exists(layout.nextRootKey) ? readNextRootKey(files, layout, options.dir, options.passphrase) : undefined;
    // Never the current root's key (a copy an activate left; root.key holds it): that would be no rotation at all.
    if (privateKey !== undefined && keysMatch(privateKey, current.publicKey)) {
      files.remove(layout.nextRootKey);
      privateKey = undefined;
    }
    const taken = takeUpLeftover({ state, layout, dir: options.dir, privateKey, leftover, inBundle: leftover !== undefined && bundleRoots(files, layout).some((r) => r.fingerprint256 === leftover.fingerprint256) });
    if (leftover !== undefined && privateKey !== undefined && keysMatch(privateKey, leftover.publicKey) && usableRoot(leftover, options.now)) {
      next = leftover;
    } else {
      if (privateKey === undefined) {
        privateKey = generateKeyPair(keyAlgorithmOf(current.publicKey)).privateKey;
        // The commit point first: ca.json names the key before root.next.key holds it, so that a
        // retry takes up this key and no other (review rotation: another CA's root.next.* of the same trust domain).
        written = { ...written, preparingRoot: { keyFingerprint: keyFingerprint(privateKey), startedAt: options.now.toISOString() } };
        writeCaState(options.dir, written, files);
        files.write(layout.nextRootKey, encodePrivateKey(privateKey, options.passphrase), { secret: true });
      }
      const issued = await createRootCertificate({
        trustDomain: state.trustDomain,
        commonName: rootCommonName(state.trustDomain, othersInBundle()),
        keyPair: { privateKey, publicKey: createPublicKey(privateKey) },
        notBefore: new Date(options.now.getTime() - ANCHOR_BACKDATE_MS),
        notAfter: new Date(options.now.getTime() + (options.rootTtlMs ?? DEFAULT_ROOT_TTL_MS)),
      });
      next = new X509Certificate(issued.der);
      files.write(layout.nextRootCert, toPem(issued.der, "CERTIFICATE"), { secret: false });
    }
    if (taken !== undefined) {
      options.onResume?.({
        keyKept: taken.key,
        rootKept: next.fingerprint256 === leftover?.fingerprint256,
        ...(leftover !== undefined && next.fingerprint256 !== leftover.fingerprint256 ? { rootDropped: leftover.fingerprint256 } : {}),
        recorded: taken.recorded,
      });
    }
    // A key left in the clear by an attempt without the passphrase is sealed now that one is given (the same key).
    const keyPem = files.read(layout.nextRootKey);
    if (sealedKeyPem(keyPem, options.passphrase) !== keyPem) files.write(layout.nextRootKey, sealedKeyPem(keyPem, options.passphrase), { secret: true });
  }
  // The root of an interrupted attempt that is not the one prepared now (its key is gone, or an import replaces it) leaves the bundle.
  // So does a root with the key ca.json recorded for an earlier attempt (its root.next.* moved out by the operator).
  const lostKey = state.preparingRoot?.keyFingerprint;
  const roots = othersInBundle().filter((r) => r.fingerprint256 !== next.fingerprint256 && (lostKey === undefined || r.fingerprint256 === current.fingerprint256 || keyFingerprint(r.publicKey) !== lostKey));
  writeBundle(files, layout, [...roots, next]);
  // The prepare is recorded; the key it wrote no longer needs naming apart.
  const { preparingRoot: _named, ...base } = written;
  void _named;
  writeCaState(options.dir, {
    ...base,
    ...(trustChoice !== undefined ? { trustEveryCaUnderRoot: [...(state.trustEveryCaUnderRoot ?? []).filter((c) => c.rootFingerprint !== trustChoice.rootFingerprint), trustChoice] } : {}),
    rootRotation: { phase: "prepared", preparedAt: options.now.toISOString(), previousRootFingerprint: current.fingerprint256, nextRootFingerprint: next.fingerprint256 },
  }, files);
  return next;
}

/**
 * Refuses (E_ROTATION_STATE) a root.next.pem an interrupted prepare cannot have left: one whose
 * name or identity is not what this CA generates — CN "meshward root <trust domain> G<n>" and the
 * URI SAN spiffe://<trust domain> (createRootCertificate). Not checkRootScope: the roots meshward
 * generates carry no nameConstraints (no other CA is ever under them), so that import check would
 * refuse every one. Two CAs with the same trust-domain name make the same names: this tells another
 * trust domain's root apart, not another directory's root of the same trust domain (takeUpLeftover
 * does, by the key ca.json records).
 */
function refuseForeignLeftover(root: X509Certificate, trustDomain: string, dir: string, layout: CaLayout): void {
  const cn = /(?:^|\n)CN=(.*)/.exec(root.subject)?.[1] ?? "";
  const prefix = `meshward root ${trustDomain} G`;
  const id = `spiffe://${trustDomain}`;
  let gap: string | undefined;
  if (!cn.startsWith(prefix) || !/^\d{1,6}$/.test(cn.slice(prefix.length))) gap = `its name ${JSON.stringify(cn)} is not "${prefix}<n>"`;
  else if (root.subjectAltName !== `URI:${id}`) gap = `its identity ${JSON.stringify(root.subjectAltName ?? "(none)")} is not ${JSON.stringify(`URI:${id}`)}`;
  if (gap === undefined) return;
  const key = basename(layout.nextRootKey);
  const cert = basename(layout.nextRootCert);
  throw new MeshwardError(
    "E_ROTATION_STATE",
    `${cert} (${JSON.stringify(root.subject.replace(/\n/g, ", "))}, ${root.fingerprint256}) is not recorded in ${basename(layout.state)} and is not a root this CA generates: ${gap} (trust domain ${trustDomain}). ` +
      `It was not left by an interrupted 'meshward ca rotate-root prepare' of this CA (files copied from another CA's directory?), so it is not taken up. Nothing was changed. ` +
      `Move ${cert} and ${key} (if present) out of ${dir} and run this command again: it then generates a new root. To rotate to that root on purpose, import it with --root-cert (its scope is then checked)`,
    { details: { dir, file: layout.nextRootCert, fingerprint: root.fingerprint256, trustDomain, reason: gap } },
  );
}

/**
 * root.next.key as prepareRoot reads it. One the CA passphrase does not decrypt while it decrypts
 * root.key was not sealed by this CA (every key this CA writes is sealed with that passphrase): it is
 * refused as not this CA's (E_ROTATION_STATE) rather than as a wrong passphrase; nothing is changed.
 */
function readNextRootKey(files: AnchorFiles, layout: CaLayout, dir: string, passphrase: string | undefined): KeyObject {
  try {
    return readCaKey(files, layout.nextRootKey, passphrase);
  } catch (error) {
    if (passphrase === undefined || !isMeshwardError(error, "E_KEY_PASSPHRASE_WRONG")) throw error;
    try {
      readCaKey(files, layout.rootKey, passphrase);
    } catch {
      throw error; // the passphrase opens neither: it is the wrong one
    }
    const keyName = basename(layout.nextRootKey);
    throw new MeshwardError(
      "E_ROTATION_STATE",
      `cannot take up what an interrupted 'meshward ca rotate-root prepare' left: ${keyName} is not sealed with this CA's passphrase (which opens ${basename(layout.rootKey)}), so no prepare of this CA wrote it (copied from another CA's directory?) and it is not used. Nothing was changed. ` +
        `Move ${keyName} (and ${basename(layout.nextRootCert)}, if it is not this CA's) out of ${dir} (keep them if you need them) and run this command again: it then generates a new root`,
      { details: { dir, file: layout.nextRootKey } },
    );
  }
}

/** What prepareRoot took up from an interrupted prepare (PrepareRootOptions.onResume). */
export interface ResumedPrepare {
  /** root.next.key, written by the interrupted attempt, is the new root's key. */
  readonly keyKept: boolean;
  /** root.next.pem, written by the interrupted attempt, is the prepared root (unchanged). */
  readonly rootKept: boolean;
  /** The interrupted attempt's root (its key lost) that left the bundle again. */
  readonly rootDropped?: string;
  /** The files matched the key ca.json records (preparingRoot); false: a CA directory of a meshward that recorded none, and the bundle already held the root. */
  readonly recorded: boolean;
}

/**
 * Decides whether root.next.* (a key, a certificate, or both; not the current root's) are what an
 * interrupted prepare of this CA left, before anything is written; refuses (E_ROTATION_STATE) when
 * not. Returns undefined when there is nothing to take up.
 *
 * - ca.json records a prepare under way (preparingRoot, written before root.next.key): both files
 *   must hold that key. A root.next.pem with it but no root.next.key is this CA's root whose key was
 *   lost: it leaves the bundle and a new key is made.
 * - ca.json records none: the CA directory of a meshward before 2026-12-08 (which recorded no key),
 *   or files copied in. Taken up only when the bundle already holds root.next.pem's root (this
 *   CA's prepare published it: a copied file never reached the bundle) and root.next.key, if any,
 *   is its key. A root.next.key alone, or a root the bundle does not hold, was published nowhere:
 *   refused, and once the operator moves it out, a new root is generated and nothing is lost.
 */
function takeUpLeftover(found: { state: CaState; layout: CaLayout; dir: string; privateKey: KeyObject | undefined; leftover: X509Certificate | undefined; inBundle: boolean }): { key: boolean; recorded: boolean } | undefined {
  const { state, layout, privateKey, leftover } = found;
  if (privateKey === undefined && leftover === undefined) return undefined;
  const intent = state.preparingRoot?.keyFingerprint;
  const keyFp = privateKey !== undefined ? keyFingerprint(privateKey) : undefined;
  const rootKeyFp = leftover !== undefined ? keyFingerprint(leftover.publicKey) : undefined;
  const keyName = basename(layout.nextRootKey);
  const certName = basename(layout.nextRootCert);
  let gap: string | undefined;
  let ownRoot = false;
  if (intent !== undefined) {
    ownRoot = rootKeyFp === intent;
    if (keyFp !== undefined && keyFp !== intent) gap = `${keyName} holds the key ${keyFp}, not the key ${basename(layout.state)} records for the root being prepared (${intent})`;
    else if (rootKeyFp !== undefined && rootKeyFp !== intent) gap = `${certName} holds the root ${leftover!.fingerprint256}, whose key ${rootKeyFp} is not the key ${basename(layout.state)} records for the root being prepared (${intent})`;
  } else {
    ownRoot = found.inBundle;
    const what = `${basename(layout.state)} records no root being prepared (no "preparingRoot": written by a meshward before 2026-12-08, or the files were copied in)`;
    if (leftover === undefined) gap = `${keyName} holds the key ${keyFp} without a certificate, and ${what}`;
    else if (!found.inBundle) gap = `${certName} holds the root ${leftover.fingerprint256}, which the trust bundle does not hold (no prepare of this CA published it), and ${what}`;
    else if (privateKey !== undefined && !keysMatch(privateKey, leftover.publicKey)) gap = `${keyName} holds the key ${keyFp}, which is not the key of the root in ${certName} (${leftover.fingerprint256})`;
  }
  if (gap === undefined) return { key: privateKey !== undefined, recorded: intent !== undefined };
  // This CA's own root (in the bundle, or with the recorded key) stays where it is: only the key that is not its leaves.
  const move = ownRoot ? [keyName] : [...(privateKey !== undefined ? [keyName] : []), ...(leftover !== undefined ? [certName] : [])];
  throw new MeshwardError(
    "E_ROTATION_STATE",
    `cannot take up what an interrupted 'meshward ca rotate-root prepare' left: ${gap}. They may come from another CA's directory (one of the same trust domain makes roots of the same name), so they are not used. Nothing was changed. ` +
      `Move ${move.join(" and ")} out of ${found.dir} (keep ${move.length > 1 ? "them" : "it"} if you need ${move.length > 1 ? "them" : "it"}) and run this command again: it then ${ownRoot ? "removes the root whose key is gone from the bundle and " : ""}generates a new root`,
    { details: { dir: found.dir, ...(intent !== undefined ? { recordedKey: intent } : {}), ...(keyFp !== undefined ? { foundKey: keyFp } : {}), ...(leftover !== undefined ? { foundRoot: leftover.fingerprint256, foundRootKey: rootKeyFp } : {}) } },
  );
}

/** A generated root an interrupted prepare left that can still be used: a self-signed CA, valid now. */
function usableRoot(root: X509Certificate, now: Date): boolean {
  return root.ca && root.checkIssued(root) && root.verify(root.publicKey) && new Date(root.validFrom) <= new Date(now.getTime() + ANCHOR_BACKDATE_MS) && new Date(root.validTo) > now;
}

/**
 * The root in root.next.pem when ca.json records no rotation: one an interrupted prepare left
 * (undefined when there is none). A root.next.* that holds the current root is what an activate
 * interrupted after ca.json, before it removed root.next.*, left: a copy of root.*, removed here
 * (its key only when it is the current root's, so no other key is ever deleted).
 */
function unrecordedNextRoot(files: AnchorFiles, layout: CaLayout, current: X509Certificate, passphrase: string | undefined): X509Certificate | undefined {
  if (!files.exists(layout.nextRootCert)) return undefined;
  const root = readCaCertificates(files, layout.nextRootCert)[0] as X509Certificate;
  if (root.fingerprint256 !== current.fingerprint256) return root;
  removeStaleNextRoot(files, layout, current, passphrase);
  return undefined;
}

/** Removes root.next.pem when it holds `current`, and root.next.key when it is `current`'s key. */
function removeStaleNextRoot(files: AnchorFiles, layout: CaLayout, current: X509Certificate, passphrase: string | undefined): void {
  if (!files.exists(layout.nextRootCert) || readCaCertificates(files, layout.nextRootCert)[0]?.fingerprint256 !== current.fingerprint256) return;
  if (files.exists(layout.nextRootKey)) {
    let copy = files.exists(layout.rootKey) && files.read(layout.nextRootKey) === files.read(layout.rootKey);
    try {
      copy ||= keysMatch(decodePrivateKey(files.read(layout.nextRootKey), passphrase), current.publicKey);
    } catch {
      // cannot be read (no passphrase): left in place unless it is root.key byte for byte
    }
    if (copy) files.remove(layout.nextRootKey);
  }
  files.remove(layout.nextRootCert);
}

export interface ActivateRootOptions {
  readonly dir: string;
  readonly passphrase?: string;
  readonly now: Date;
  readonly issuerTtlMs?: number;
  /** Tell every workload to renew now instead of at its next scheduled renewal. */
  readonly reissue?: boolean;
  /** External-root CAs: an issuer signed by the new root. */
  readonly importedIssuer?: { certPem: string; keyPem: string; keyPassphrase?: string };
  readonly files?: AnchorFiles;
}

/** Step 2: an issuer under the new root signs from now on; workloads move at their next renewal. */
export async function activateRoot(options: ActivateRootOptions): Promise<X509Certificate> {
  const layout = caLayout(options.dir);
  const files = options.files ?? directoryFiles;
  const state = readCaState(options.dir, files);
  if (state.rootRotation?.phase !== "prepared") {
    throw new MeshwardError("E_ROTATION_NOT_PREPARED", "no prepared root to activate; run 'meshward ca rotate-root prepare' first");
  }
  assertKeyWritable(options.dir, state, options.passphrase, files);
  const nextRoot = readCaCertificates(files, layout.nextRootCert)[0] as X509Certificate;
  // The root ca.json recorded at prepare, and no other, becomes the signing root.
  if (nextRoot.fingerprint256 !== state.rootRotation.nextRootFingerprint) {
    throw new MeshwardError(
      "E_ROTATION_STATE",
      `cannot activate: ${basename(layout.nextRootCert)} holds ${nextRoot.fingerprint256}, not the prepared root ${state.rootRotation.nextRootFingerprint} (per ${basename(layout.state)}). Nothing was changed. Restore ${basename(layout.nextRootCert)} and ${basename(layout.nextRootKey)} from your backup of ${options.dir}`,
      { details: { recorded: state.rootRotation.nextRootFingerprint, found: nextRoot.fingerprint256 } },
    );
  }
  // An activate interrupted after it switched the issuer (before ca.json) left an issuer under the
  // new root in issuer.*, the one it replaced already in issuer.prev.*: the retry keeps that
  // issuer.prev.* (the old root's issuer, whose key signs the CRL of what it issued) instead of
  // moving the first attempt's issuer over it, and reuses the first attempt's issuer.
  const switched = issuerUnder(files, layout, nextRoot, options.now);
  let issuer: { certPem: string; keyPem: string; certificate: X509Certificate };
  if (switched !== undefined && options.importedIssuer === undefined) {
    issuer = { certPem: files.read(layout.issuerCert), keyPem: files.read(layout.issuerKey), certificate: switched };
  } else if (options.importedIssuer !== undefined) {
    const chain = certificatesFromPem(options.importedIssuer.certPem).map((der) => new X509Certificate(der));
    const key = decodePrivateKey(options.importedIssuer.keyPem, options.importedIssuer.keyPassphrase ?? options.passphrase);
    validateIssuerChain(chain, [nextRoot], key, options.now, state.trustDomain);
    assertIssuerSerialFree(files, layout, chain[0] as X509Certificate);
    issuer = { certPem: chain.map((c) => toPem(c.raw, "CERTIFICATE")).join(""), keyPem: encodePrivateKey(key, options.passphrase), certificate: chain[0] as X509Certificate };
  } else {
    requireSelfManaged(state, "activating a generated root");
    const root = readRoot(files, layout.nextRootCert, layout.nextRootKey, options.passphrase);
    const made = await newIssuer(root.signer, state.trustDomain, options.now, options.issuerTtlMs ?? DEFAULT_ISSUER_TTL_MS);
    issuer = { certPem: toPem(made.der, "CERTIFICATE"), keyPem: encodePrivateKey(made.privateKey, options.passphrase), certificate: new X509Certificate(made.der) };
  }
  // The old root is kept as root.prev.* until retire; the new one becomes root.*. Resumable: an
  // activate interrupted after this point (crash, full disk) leaves ca.json "prepared", and the
  // retry must not copy the by then NEW root over root.prev.* (review atrest MEDIUM-3).
  keepPreviousRoot(files, layout, state.rootRotation.previousRootFingerprint, options.dir);
  if (files.exists(layout.nextRootKey)) {
    files.writePair({ path: layout.rootKey, content: sealedKeyPem(files.read(layout.nextRootKey), options.passphrase) }, { path: layout.rootCert, content: files.read(layout.nextRootCert) });
  } else {
    files.write(layout.rootCert, files.read(layout.nextRootCert), { secret: false });
  }
  if (switched === undefined) installIssuer(files, layout, issuer.certPem, issuer.keyPem, true, options.passphrase, options.now);
  else if (files.read(layout.issuerCert) !== issuer.certPem) files.writePair({ path: layout.issuerKey, content: issuer.keyPem }, { path: layout.issuerCert, content: issuer.certPem });
  // A reissue request belongs to one activation: one left from an earlier rotation must not
  // make this one (without --reissue) renew every workload.
  const { reissueBefore: _earlier, ...base } = keysEncryptedState(state, options.passphrase) ?? state;
  void _earlier;
  writeCaState(options.dir, {
    ...base,
    rootRotation: { ...state.rootRotation, phase: "activated", activatedAt: options.now.toISOString() },
    ...(options.reissue ? { reissueBefore: options.now.toISOString() } : {}),
  }, files);
  // Removed only once ca.json says "activated": until then a retry reads the new root from them.
  for (const file of [layout.nextRootKey, layout.nextRootCert, layout.nextIssuerCert, layout.nextIssuerKey]) files.remove(file);
  return issuer.certificate;
}

/** The issuer in issuer.* when it is signed by `root` and valid now (an earlier attempt of this activate installed it); undefined otherwise. */
function issuerUnder(files: AnchorFiles, layout: CaLayout, root: X509Certificate, now: Date): X509Certificate | undefined {
  try {
    if (!files.exists(layout.issuerCert) || !files.exists(layout.issuerKey)) return undefined;
    const chain = readCaCertificates(files, layout.issuerCert);
    const top = chain[chain.length - 1] as X509Certificate;
    const issuer = chain[0] as X509Certificate;
    return top.checkIssued(root) && top.verify(root.publicKey) && new Date(issuer.validTo) > now ? issuer : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Makes root.prev.* hold the root being replaced (fingerprint `previous`, from ca.json), copying it
 * from root.* only while root.* still is that root: never overwrites a root.prev.* that already
 * holds it (a retried activate), and refuses, writing nothing, when neither holds it, so the old
 * root key is never lost.
 */
function keepPreviousRoot(files: AnchorFiles, layout: CaLayout, previous: string, dir: string): void {
  const fingerprintOf = (path: string) => (files.exists(path) ? readCaCertificates(files, path)[0]?.fingerprint256 : undefined);
  const keyOf = (keyPath: string, certPath: string) => {
    if (!files.exists(keyPath)) return undefined;
    const pem = files.read(keyPath);
    // An encrypted key cannot be compared without decrypting; its place in the sequence tells (below).
    if (isEncryptedPrivateKeyPem(pem)) return "sealed" as const;
    return keysMatch(decodePrivateKey(pem), readCaCertificates(files, certPath)[0]!.publicKey) ? ("matches" as const) : ("other" as const);
  };
  const current = fingerprintOf(layout.rootCert);
  const kept = fingerprintOf(layout.previousRootCert) === previous;
  if (!kept) {
    if (current !== previous) {
      throw new MeshwardError(
        "E_ROTATION_STATE",
        `cannot activate: ${basename(layout.rootCert)} is not the root being replaced (${previous}, per ${basename(layout.state)}) and ${basename(layout.previousRootCert)} does not hold it either. Nothing was changed. ` +
          `Restore root.pem and root.key (the old root) from your backup of ${dir}, then run 'meshward ca rotate-root activate' again`,
        { details: { previous, current } },
      );
    }
    files.write(layout.previousRootCert, files.read(layout.rootCert), { secret: false });
  }
  // The old root's key: from root.key while root.key still is it. A root.prev.key already there
  // was copied by an earlier attempt, before root.key was switched (always in that order).
  const keptKey = keyOf(layout.previousRootKey, layout.previousRootCert);
  if (keptKey === "matches" || (kept && keptKey === "sealed")) return;
  if (!files.exists(layout.rootKey)) return; // an imported root: the CA never held its key
  const liveKey = current === previous ? keyOf(layout.rootKey, layout.rootCert) : "other";
  if (liveKey === "other") {
    throw new MeshwardError(
      "E_ROTATION_STATE",
      `cannot activate: the key of the root being replaced (${previous}) is neither in ${basename(layout.rootKey)} nor in ${basename(layout.previousRootKey)}. Nothing more was changed. ` +
        `Restore root.key (the old root's key) from your backup of ${dir}, then run 'meshward ca rotate-root activate' again`,
      { details: { previous } },
    );
  }
  files.write(layout.previousRootKey, files.read(layout.rootKey), { secret: true });
}

export interface RetireRootResult {
  readonly retiredFingerprint: string;
  readonly remaining: number;
}

/**
 * Step 3: the old root leaves the bundle. Refused while unexpired certificates in the
 * issuance log still chain to it, unless forced (they would stop verifying at once).
 */
export async function retireRoot(options: { dir: string; store: Store; now: Date; force?: boolean; files?: AnchorFiles }): Promise<RetireRootResult> {
  const layout = caLayout(options.dir);
  const files = options.files ?? directoryFiles;
  const state = readCaState(options.dir, files);
  if (state.rootRotation?.phase !== "activated") {
    throw new MeshwardError(
      "E_ROTATION_NOT_ACTIVATED",
      state.rootRotation === undefined ? "no root rotation is in progress" : "the new root is prepared but not active yet; run 'meshward ca rotate-root activate' first",
    );
  }
  const previous = state.rootRotation.previousRootFingerprint;
  const remaining = (await options.store.countValidByRoot(options.now)).get(previous) ?? 0;
  if (remaining > 0 && !options.force) {
    throw new MeshwardError(
      "E_ROTATION_CERTS_REMAIN",
      `${remaining} unexpired certificate${remaining === 1 ? "" : "s"} still chain to the old root; retiring it now would break them. Wait until they renew (or use 'rotate-root activate --reissue'), or pass --force. ` +
        `List them: meshward cert list --dir ${options.dir} --root ${previous} --live`,
      { details: { remaining } },
    );
  }
  const remainingRoots = bundleRoots(files, layout).filter((r) => r.fingerprint256 !== previous);
  writeBundle(files, layout, remainingRoots);
  // A previous issuer under the retired root has nothing left to sign a CRL for; one under a root
  // still in the bundle (an issuer rotation during the rotation) is kept, also when a retry no
  // longer finds root.prev.pem (an earlier attempt removed it before it was interrupted).
  if (files.exists(layout.previousIssuerCert)) {
    const chain = readCaCertificates(files, layout.previousIssuerCert);
    const top = chain[chain.length - 1]!;
    if (!remainingRoots.some((root) => top.checkIssued(root) && top.verify(root.publicKey))) {
      files.remove(layout.previousIssuerKey);
      files.remove(layout.previousIssuerCert);
    }
  }
  files.remove(layout.previousRootCert);
  files.remove(layout.previousRootKey);
  // A copy of the current root that an activate interrupted before its clean-up left in root.next.*.
  const current = readCaCertificates(files, layout.rootCert)[0];
  if (current !== undefined) removeStaleNextRoot(files, layout, current, undefined);
  const { rootRotation: _done, reissueBefore: _reissued, trustEveryCaUnderRoot, ...rest } = state;
  void _done;
  void _reissued;
  // A root accepted with --trust-every-ca-under-root is no longer trusted once it leaves the bundle.
  const stillTrusted = (trustEveryCaUnderRoot ?? []).filter((choice) => remainingRoots.some((r) => r.fingerprint256 === choice.rootFingerprint));
  writeCaState(options.dir, { ...rest, ...(stillTrusted.length > 0 ? { trustEveryCaUnderRoot: stillTrusted } : {}) }, files);
  return { retiredFingerprint: previous, remaining };
}

