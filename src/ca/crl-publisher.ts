import type { Signer } from "../pki/certificate.ts";
import type { X509Certificate } from "node:crypto";
import { createCrl, parseCrl, type CrlEntry, type ParsedCrl, type RevocationReason } from "../pki/crl.ts";
import { toPem } from "../pki/pem.ts";
import type { RevocationRecord, Store } from "../store/store.ts";
import { issuedBy, ROOT_CRL_RESIGN_AFTER_MS, ROOT_CRL_VALIDITY_MS, type RetiredIssuer, type RootKey } from "./root-crl.ts";

export const CRL_VALIDITY_MS = 24 * 3_600_000;
/** Re-sign well before nextUpdate so relying parties never see a stale CRL. */
const CRL_RESIGN_AFTER_MS = CRL_VALIDITY_MS / 2;

/** Followers: how often the store's revocations are compared with the CRL in force. */
export const UNSIGNED_CHECK_MS = 5_000;

const REASONS = new Set<RevocationReason>(["unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded", "cessationOfOperation"]);

export interface PublishedCrl {
  /** The current issuer's CRL: what `/v1/crl` serves, as before. */
  readonly der: Buffer;
  readonly pem: string;
  readonly revokedSerials: ReadonlySet<string>;
  readonly thisUpdate: Date;
  /**
   * The CRLs of earlier issuers whose certificates may still be valid, each signed by its own
   * issuer, with the same number and revocations as `der` (`/v1/crl?format=set`), then the root
   * CRLs (one per root whose key the CA holds, see root-crl.ts). Empty when none.
   */
  readonly others: readonly Buffer[];
}

interface RootPlan {
  readonly keep: Map<string, Buffer>;
  readonly sign: readonly { readonly root: RootKey; readonly entries: CrlEntry[] }[];
  readonly upToDate: boolean;
}

/** Where the root CRLs come from (LoadedAnchors). */
export interface RootCrlSources {
  readonly rootKeys: readonly RootKey[];
  readonly retiredIssuers: readonly RetiredIssuer[];
}

/**
 * The CRL set a CA publishes: one CRL per issuer whose certificates may still be valid, each signed
 * by that issuer's own key, so that a workload verifies the CRL of its own issuer with the chain it
 * holds and keeps its certificate until its scheduled renewal after an issuer rotation.
 *
 * Retention: the previous issuer (issuer.prev.*, kept by a rotation that is not `--now`) signs its
 * CRL while the CA holds it and it has not expired, even before it has signed anything (an issuer
 * the CA holds may sign during the hold after a rotation: every live issuer is in the set). The
 * CA holds it while the store records a certificate it signed whose notAfter is still ahead
 * (revoked or superseded ones count: their notAfter bounds how long a stolen copy verifies), plus
 * a margin (rotation-manager.ts removes it then). Every CRL of the set lists every revocation the CA holds, as
 * the single CRL did: a workload that verifies any one of them enforces all revocations, and a
 * client older than the set (which reads only `/v1/crl`) still refuses revoked certificates of an
 * earlier issuer. Serials are random (pki/certificate.ts), so listing another issuer's serials
 * revokes nothing else.
 */

/** Keeps a signed CRL matching the store's revocations; re-signs on change and before it goes stale. */
export class CrlPublisher {
  #current: PublishedCrl | undefined;
  /** How many revocations the store held when this replica last signed alone (#refreshLocal). */
  #signedCount: number | undefined;
  #signedFor: Signer | undefined;
  #previousSignedFor: Signer | undefined;

  #publishedNumber: bigint | undefined;
  /** The refresh running now, if any, and whether a call arrived since it began. */
  #running: Promise<boolean> | undefined;
  #again = false;
  /** Whether this replica signed a CRL since it last became the leader. */
  #signedAsLeader = false;
  /** Followers: revocations in the store missing from the CRL in force, and since when (Date.now()) they have been. */
  #unsigned: { count: number; since: number } | undefined;
  #unsignedCheckedAt = 0;

  /**
   * `shared`: several replicas on one store (issue 17). Only the leader signs, and publishes to
   * the store fenced by the CRL number; every replica serves the CRL published there, so all
   * serve the same bytes.
   */
  constructor(
    private readonly store: Store,
    private readonly signer: () => Signer,
    private readonly clock: () => Date,
    private readonly shared?: { readonly isLeader: () => boolean },
    /** The issuer the last rotation replaced, if the CA still holds it (LoadedAnchors.previousIssuer). */
    private readonly previous?: () => Signer | undefined,
    /** Roots whose key the CA holds and the issuers retired with --now: a root CRL per root (root-crl.ts). */
    private readonly roots?: () => RootCrlSources,
  ) {}

  /** Roots whose key could not be read, with the reason (the CA logs them); tried again when the anchors change. */
  #rootFailures = new Map<string, string>();
  #rootFailuresFor: RootCrlSources | undefined;

  get rootCrlProblems(): ReadonlyMap<string, string> {
    return this.#rootFailures;
  }

  /**
   * The root CRLs to publish, given those published now (`existing`, any DER of the set): a root's
   * published CRL is kept while it is younger than ROOT_CRL_RESIGN_AFTER_MS and lists exactly the
   * retired issuers that root signed (unexpired); otherwise it is signed again, numbered
   * `crlNumber` when given. `upToDate`: nothing to sign and nothing to drop.
   */
  #rootPlan(now: Date, existing: readonly Buffer[]): RootPlan {
    const sources = this.roots?.();
    if (sources !== this.#rootFailuresFor) {
      this.#rootFailures = new Map();
      this.#rootFailuresFor = sources;
    }
    const keep = new Map<string, Buffer>();
    const sign: { root: RootKey; entries: CrlEntry[] }[] = [];
    const published = existing.filter((der) => sources?.rootKeys.some((root) => signedByCertificate(der, root.certificate)) === true);
    for (const root of sources?.rootKeys ?? []) {
      if (this.#rootFailures.has(root.certificate.fingerprint256)) continue;
      const entries: CrlEntry[] = sources!.retiredIssuers
        .filter((r) => new Date(r.certificate.validTo).getTime() > now.getTime() && issuedBy(r.certificate, root.certificate))
        .map((r) => ({ serial: r.serial, revokedAt: r.revokedAt, reason: r.reason }));
      const current = published.find((der) => signedByCertificate(der, root.certificate));
      if (current !== undefined) {
        const parsed = parseCrl(current);
        const fresh = now.getTime() - parsed.thisUpdate.getTime() <= ROOT_CRL_RESIGN_AFTER_MS;
        const same = parsed.revokedSerials.size === entries.length && entries.every((e) => parsed.revokedSerials.has(e.serial));
        if (fresh && same) {
          keep.set(root.certificate.fingerprint256, current);
          continue;
        }
      }
      sign.push({ root, entries });
    }
    return { keep, sign, upToDate: sign.length === 0 && published.length === keep.size };
  }

  /** The root CRLs of a plan, signing what must be; a root whose key cannot be read is left out (rootCrlProblems). */
  async #rootCrls(plan: RootPlan, now: Date, crlNumber: bigint): Promise<Buffer[]> {
    const out = [...plan.keep.values()];
    for (const { root, entries } of plan.sign) {
      let signer: Signer;
      try {
        signer = root.signer();
      } catch (error) {
        this.#rootFailures.set(root.certificate.fingerprint256, error instanceof Error ? error.message : String(error));
        continue;
      }
      out.push(await createCrl({ signer, entries, thisUpdate: now, nextUpdate: new Date(now.getTime() + ROOT_CRL_VALIDITY_MS), crlNumber }));
    }
    return out;
  }

  /**
   * The previous issuer, while the CA holds it (issuer.prev.*) and it has not expired, whether or
   * not it has signed anything yet: during the hold after a rotation (server.ts) it signs the
   * requests that arrive, and a set without its CRL made workloads refuse those certificates
   * (renewal-issuer-retired) until the next refresh. The rotation manager removes issuer.prev.*
   * once nothing it signed is still valid, which ends its CRL (see the retention rule above).
   */
  #retainedPrevious(current: Signer, now: Date): Signer | undefined {
    const previous = this.previous?.();
    if (previous === undefined || previous.certificate.fingerprint256 === current.certificate.fingerprint256) return undefined;
    return new Date(previous.certificate.validTo).getTime() > now.getTime() ? previous : undefined;
  }

  get current(): PublishedCrl | undefined {
    return this.#current;
  }

  /** Called, synchronously, each time the set in force (`current`) changes. */
  onChange: (() => void) | undefined;

  /** Which issuers the set in force publishes a CRL of (by fingerprint256), filled as asked. */
  #publishedBy = new WeakMap<PublishedCrl, Map<string, boolean>>();

  /**
   * Whether the CRL set in force (`current`) holds a CRL this certificate signed: what a workload
   * checks a renewed certificate's issuer against (ca-source.ts, E_ISSUER_RETIRED), so the CA
   * signs with an issuer only once this is true (server.ts).
   */
  publishes(certificate: X509Certificate): boolean {
    const current = this.#current;
    if (current === undefined) return false;
    let known = this.#publishedBy.get(current);
    if (known === undefined) this.#publishedBy.set(current, (known = new Map()));
    let answer = known.get(certificate.fingerprint256);
    if (answer === undefined) {
      answer = [current.der, ...current.others].some((der) => signedByCertificate(der, certificate));
      known.set(certificate.fingerprint256, answer);
    }
    return answer;
  }

  #setCurrent(next: PublishedCrl): void {
    this.#current = next;
    this.onChange?.();
  }

  /**
   * Several replicas: revocations the store holds that the CRL in force lacks, and since when
   * (Date.now()) this replica has seen some missing; undefined when none are. A leader signs them
   * within a refresh; missing for long means no replica leads (or the leader cannot sign).
   */
  get unsigned(): { readonly count: number; readonly since: number } | undefined {
    return this.#unsigned;
  }

  /**
   * Returns true when a new CRL was signed (one replica) or adopted from the store (several).
   * One refresh runs at a time (the timer, change notifications, a new issuer and leader
   * election all call this): a call arriving meanwhile is served by one more run after the
   * current one, which sees what was committed before the call, and settles with it. Two
   * overlapping runs could otherwise sign out of order: the one that read the revocations first
   * taking the higher CRL number, so the CRL clients keep (the highest number) would miss the
   * revocation the other one had.
   */
  refresh(): Promise<boolean> {
    this.#again = true;
    this.#running ??= this.#drain();
    return this.#running;
  }

  async #drain(): Promise<boolean> {
    let changed = false;
    try {
      for (;;) {
        this.#again = false;
        try {
          changed = (await this.#refreshOnce()) || changed;
          if (!this.#again) return changed;
        } catch (error) {
          // A call that arrived during the failed run still gets its own run.
          if (!this.#again) throw error;
        }
      }
    } finally {
      // Cleared in the same turn as the last check of #again: a later call starts a new run.
      this.#running = undefined;
    }
  }

  async #refreshOnce(): Promise<boolean> {
    if (this.shared === undefined) return this.#refreshLocal();
    if (this.shared.isLeader()) {
      await this.#signShared(!this.#signedAsLeader);
      this.#signedAsLeader = true;
    } else {
      this.#signedAsLeader = false;
    }
    const adopted = await this.#adoptPublished();
    if (this.shared.isLeader()) this.#unsigned = undefined;
    else await this.#checkUnsigned();
    return adopted;
  }

  /**
   * At most every UNSIGNED_CHECK_MS. The CRL in force was signed from this store's revocations,
   * which only grow (Store.countRevocations): those it lacks are the difference of the counts.
   */
  async #checkUnsigned(): Promise<void> {
    if (Date.now() - this.#unsignedCheckedAt < UNSIGNED_CHECK_MS) return;
    const stored = await this.store.countRevocations();
    this.#unsignedCheckedAt = Date.now();
    const count = Math.max(0, stored - (this.#current?.revokedSerials.size ?? 0));
    this.#unsigned = count === 0 ? undefined : { count, since: this.#unsigned?.since ?? this.#unsignedCheckedAt };
  }

  /**
   * The leader: signs when the published CRL is missing, stale, not the store's revocations, or
   * not by the current issuer, and once on becoming the leader (`force`), as one CA process
   * always did on start: the CRL served is then one this leader signed, numbered above any CRL a
   * previous leader signed, published or not.
   */
  async #signShared(force: boolean): Promise<void> {
    // A count, not the rows: the published CRL was signed from this store's revocations, which
    // only grow (Store.countRevocations), so it lists them all exactly when it lists as many.
    const [revoked, published] = await Promise.all([this.store.countRevocations(), this.store.latestCrl()]);
    const now = this.clock();
    const signer = this.signer();
    const previous = this.#retainedPrevious(signer, now);
    if (published !== undefined) {
      let parsed: ReturnType<typeof parseCrl> | undefined;
      try {
        parsed = parseVerifiedCrl(published.der, signer.certificate);
      } catch {
        parsed = undefined; // signed by a previous issuer: re-sign
      }
      const fresh = now.getTime() - published.thisUpdate.getTime() <= CRL_RESIGN_AFTER_MS;
      const same = parsed !== undefined && parsed.revokedSerials.size === revoked;
      const others = published.others ?? [];
      const rootPlan = this.#rootPlan(now, others);
      const issuerOthers = others.filter((der) => !rootPlan.keep.has(crlSigner(der, this.roots?.().rootKeys ?? []) ?? ""));
      const sameSet = (previous === undefined ? issuerOthers.length === 0 : issuerOthers.length === 1 && signedBy(issuerOthers[0]!, previous)) && rootPlan.upToDate;
      if (fresh && same && sameSet && !force) return;
    }
    const rootPlan = this.#rootPlan(now, published?.others ?? []);
    // The number first, then the revocations it covers: they only grow, so a CRL with a higher
    // number (this replica's next one, or another leader's) holds at least these.
    const crlNumber = await this.#nextCrlNumber(now);
    const signed = await this.store.listRevocations();
    const der = await this.#sign(signer, signed, now, crlNumber);
    const others = [...(previous === undefined ? [] : [await this.#sign(previous, signed, now, crlNumber)]), ...(await this.#rootCrls(rootPlan, now, crlNumber))];
    // False when another leader published a higher number meanwhile: theirs stands. The set is
    // one row: every replica serves the same CRLs.
    await this.store.publishCrl({ number: crlNumber, der, thisUpdate: now, ...(others.length > 0 ? { others } : {}) });
  }

  async #adoptPublished(): Promise<boolean> {
    const published = await this.store.latestCrl();
    if (published === undefined || published.number === this.#publishedNumber) return false;
    const parsed = parseCrl(published.der);
    this.#publishedNumber = published.number;
    this.#setCurrent({ der: published.der, pem: toPem(published.der, "X509 CRL"), revokedSerials: parsed.revokedSerials, thisUpdate: published.thisUpdate, others: published.others ?? [] });
    return true;
  }

  /**
   * The next CRL number, never below the signing time in milliseconds: numbers keep rising across
   * a store restored from a backup (its counter goes back; workloads keep the highest-numbered
   * set they have seen and would ignore every lower one, and then refuse renewals from an issuer
   * only the lower sets publish: review rev2 MEDIUM-1), as long as the CA's clock does not go
   * back further than the restore. The store's counter is raised to it first, then advanced.
   */
  async #nextCrlNumber(now: Date): Promise<bigint> {
    await this.store.raiseCrlNumber(BigInt(now.getTime()));
    return this.store.nextCrlNumber();
  }

  #sign(signer: Signer, revocations: readonly RevocationRecord[], now: Date, crlNumber: bigint): Promise<Buffer> {
    const entries: CrlEntry[] = revocations.map((r) => ({
      serial: r.serial,
      revokedAt: r.revokedAt,
      reason: REASONS.has(r.reason as RevocationReason) ? (r.reason as RevocationReason) : "unspecified",
    }));
    return createCrl({ signer, entries, thisUpdate: now, nextUpdate: new Date(now.getTime() + CRL_VALIDITY_MS), crlNumber });
  }

  async #refreshLocal(): Promise<boolean> {
    const now = this.clock();
    const signer = this.signer();
    const previous = this.#retainedPrevious(signer, now);
    const stale = this.#current === undefined || now.getTime() - this.#current.thisUpdate.getTime() > CRL_RESIGN_AFTER_MS;
    const rootPlan = this.#rootPlan(now, this.#current?.others ?? []);
    // Revocations only grow (Store.countRevocations): the same count is the same set, and the rows are read only to sign.
    if (!stale && rootPlan.upToDate && signer === this.#signedFor && previous === this.#previousSignedFor && (await this.store.countRevocations()) === this.#signedCount) return false;
    // The number first, then the revocations it covers (see #signShared).
    const crlNumber = await this.#nextCrlNumber(now);
    const revocations = await this.store.listRevocations();
    const der = await this.#sign(signer, revocations, now, crlNumber);
    const others = [...(previous === undefined ? [] : [await this.#sign(previous, revocations, now, crlNumber)]), ...(await this.#rootCrls(rootPlan, now, crlNumber))];
    this.#signedCount = revocations.length;
    this.#signedFor = signer;
    this.#previousSignedFor = previous;
    this.#setCurrent({ der, pem: toPem(der, "X509 CRL"), revokedSerials: new Set(revocations.map((r) => r.serial)), thisUpdate: now, others });
    return true;
  }
}

/** Whether a published CRL (DER) verifies with this issuer. */
function signedBy(der: Buffer, issuer: Signer): boolean {
  return signedByCertificate(der, issuer.certificate);
}

function signedByCertificate(der: Buffer, certificate: X509Certificate): boolean {
  try {
    parseVerifiedCrl(der, certificate);
    return true;
  } catch {
    return false;
  }
}

/** How many signature checks of CRLs parseVerifiedCrl remembers (the set's CRLs against the issuers and roots). */
export const REMEMBERED_CRL_CHECKS = 16;
/** CRLs larger than this are verified at every call, never remembered: the memory held stays under 16 × 1 MiB. */
export const REMEMBERED_CRL_MAX_BYTES = 1024 * 1024;
const crlChecks: { readonly der: Buffer; readonly certificate: X509Certificate; readonly refusal: unknown }[] = [];
let signatureChecks = 0;

/** Signature checks parseVerifiedCrl has made in this process (for tests). */
export function crlSignatureChecks(): number {
  return signatureChecks;
}

/**
 * parseCrl(der, certificate), with the signature check remembered for the last
 * REMEMBERED_CRL_CHECKS (bytes, certificate) pairs. The leader reads the published set back at
 * every crlRefresh (1 s by default) and checks its CRLs against the current issuer, the previous
 * one and the roots: while nothing changes, the same bytes against the same certificates, an
 * ECDSA verification apiece each second. The check's outcome (it verifies, or its refusal)
 * depends on those two alone, so it is reused only for bytes equal to the ones checked and the
 * same certificate (by its SHA-256 fingerprint); the bytes are still parsed at each call. Other
 * bytes are verified as before.
 */
export function parseVerifiedCrl(der: Buffer, certificate: X509Certificate): ParsedCrl {
  const known = crlChecks.find((check) => (check.certificate === certificate || check.certificate.fingerprint256 === certificate.fingerprint256) && check.der.equals(der));
  if (known !== undefined) {
    if (known.refusal !== undefined) throw known.refusal;
    return parseCrl(der);
  }
  signatureChecks += 1;
  let parsed: ParsedCrl | undefined;
  let refusal: unknown;
  try {
    parsed = parseCrl(der, certificate);
  } catch (error) {
    refusal = error ?? new Error("the CRL was refused");
  }
  if (der.length <= REMEMBERED_CRL_MAX_BYTES) {
    crlChecks.push({ der: Buffer.from(der), certificate, refusal });
    if (crlChecks.length > REMEMBERED_CRL_CHECKS) crlChecks.shift();
  }
  if (parsed === undefined) throw refusal;
  return parsed;
}

/** The fingerprint of the root (of `roots`) that signed this CRL, if one did. */
function crlSigner(der: Buffer, roots: readonly RootKey[]): string | undefined {
  return roots.find((root) => signedByCertificate(der, root.certificate))?.certificate.fingerprint256;
}
