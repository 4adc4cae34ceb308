import type { Signer } from "../pki/certificate.ts";
import { createCrl, parseCrl, type CrlEntry, type RevocationReason } from "../pki/crl.ts";
import { toPem } from "../pki/pem.ts";
import type { RevocationRecord, Store } from "../store/store.ts";

export const CRL_VALIDITY_MS = 24 * 3_600_000;
/** Re-sign well before nextUpdate so relying parties never see a stale CRL. */
const CRL_RESIGN_AFTER_MS = CRL_VALIDITY_MS / 2;

/** Followers: how often the store's revocations are compared with the CRL in force. */
export const UNSIGNED_CHECK_MS = 5_000;

const REASONS = new Set<RevocationReason>(["unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded", "cessationOfOperation"]);

export interface PublishedCrl {
  readonly der: Buffer;
  readonly pem: string;
  readonly revokedSerials: ReadonlySet<string>;
  readonly thisUpdate: Date;
}

/** Keeps a signed CRL matching the store's revocations; re-signs on change and before it goes stale. */
export class CrlPublisher {
  #current: PublishedCrl | undefined;
  #fingerprint = "";
  #signedFor: Signer | undefined;

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
  ) {}

  get current(): PublishedCrl | undefined {
    return this.#current;
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

  /** At most every UNSIGNED_CHECK_MS: the revocations are a full read of the table. */
  async #checkUnsigned(): Promise<void> {
    if (Date.now() - this.#unsignedCheckedAt < UNSIGNED_CHECK_MS) return;
    const revocations = await this.store.listRevocations();
    this.#unsignedCheckedAt = Date.now();
    const inForce = this.#current?.revokedSerials;
    const count = revocations.filter((r) => inForce?.has(r.serial) !== true).length;
    this.#unsigned = count === 0 ? undefined : { count, since: this.#unsigned?.since ?? this.#unsignedCheckedAt };
  }

  /**
   * The leader: signs when the published CRL is missing, stale, not the store's revocations, or
   * not by the current issuer, and once on becoming the leader (`force`), as one CA process
   * always did on start: the CRL served is then one this leader signed, numbered above any CRL a
   * previous leader signed, published or not.
   */
  async #signShared(force: boolean): Promise<void> {
    const [revocations, published] = await Promise.all([this.store.listRevocations(), this.store.latestCrl()]);
    const now = this.clock();
    const signer = this.signer();
    if (published !== undefined) {
      let parsed: ReturnType<typeof parseCrl> | undefined;
      try {
        parsed = parseCrl(published.der, signer.certificate);
      } catch {
        parsed = undefined; // signed by a previous issuer: re-sign
      }
      const fresh = now.getTime() - published.thisUpdate.getTime() <= CRL_RESIGN_AFTER_MS;
      const same = parsed !== undefined && parsed.revokedSerials.size === revocations.length && revocations.every((r) => parsed.revokedSerials.has(r.serial));
      if (fresh && same && !force) return;
    }
    // The number first, then the revocations it covers: they only grow, so a CRL with a higher
    // number (this replica's next one, or another leader's) holds at least these.
    const crlNumber = await this.store.nextCrlNumber();
    const signed = await this.store.listRevocations();
    const der = await this.#sign(signer, signed, now, crlNumber);
    // False when another leader published a higher number meanwhile: theirs stands.
    await this.store.publishCrl({ number: crlNumber, der, thisUpdate: now });
  }

  async #adoptPublished(): Promise<boolean> {
    const published = await this.store.latestCrl();
    if (published === undefined || published.number === this.#publishedNumber) return false;
    const parsed = parseCrl(published.der);
    this.#current = { der: published.der, pem: toPem(published.der, "X509 CRL"), revokedSerials: parsed.revokedSerials, thisUpdate: published.thisUpdate };
    this.#publishedNumber = published.number;
    return true;
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
    const fingerprintOf = (revocations: readonly RevocationRecord[]) => revocations.map((r) => r.serial).sort().join(",");
    const now = this.clock();
    const signer = this.signer();
    const stale = this.#current === undefined || now.getTime() - this.#current.thisUpdate.getTime() > CRL_RESIGN_AFTER_MS;
    if (!stale && fingerprintOf(await this.store.listRevocations()) === this.#fingerprint && signer === this.#signedFor) return false;
    // The number first, then the revocations it covers (see #signShared).
    const crlNumber = await this.store.nextCrlNumber();
    const revocations = await this.store.listRevocations();
    const der = await this.#sign(signer, revocations, now, crlNumber);
    this.#current = { der, pem: toPem(der, "X509 CRL"), revokedSerials: new Set(revocations.map((r) => r.serial)), thisUpdate: now };
    this.#fingerprint = fingerprintOf(revocations);
    this.#signedFor = signer;
    return true;
  }
}
