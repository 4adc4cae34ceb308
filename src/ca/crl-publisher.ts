import type { Signer } from "../pki/certificate.ts";
import { createCrl, type CrlEntry, type RevocationReason } from "../pki/crl.ts";
import { toPem } from "../pki/pem.ts";
import type { Store } from "../store/store.ts";

export const CRL_VALIDITY_MS = 24 * 3_600_000;
/** Re-sign well before nextUpdate so relying parties never see a stale CRL. */
const CRL_RESIGN_AFTER_MS = CRL_VALIDITY_MS / 2;

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

  constructor(
    private readonly store: Store,
    private readonly signer: () => Signer,
    private readonly clock: () => Date,
  ) {}

  get current(): PublishedCrl | undefined {
    return this.#current;
  }

  /** Returns true when a new CRL was signed. */
  async refresh(): Promise<boolean> {
    const revocations = await this.store.listRevocations();
    const fingerprint = revocations.map((r) => r.serial).sort().join(",");
    const now = this.clock();
    const signer = this.signer();
    const stale = this.#current === undefined || now.getTime() - this.#current.thisUpdate.getTime() > CRL_RESIGN_AFTER_MS;
    if (!stale && fingerprint === this.#fingerprint && signer === this.#signedFor) return false;
    const entries: CrlEntry[] = revocations.map((r) => ({
      serial: r.serial,
      revokedAt: r.revokedAt,
      reason: REASONS.has(r.reason as RevocationReason) ? (r.reason as RevocationReason) : "unspecified",
    }));
    const der = await createCrl({
      signer,
      entries,
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + CRL_VALIDITY_MS),
      crlNumber: await this.store.nextCrlNumber(),
    });
    this.#current = { der, pem: toPem(der, "X509 CRL"), revokedSerials: new Set(entries.map((e) => e.serial)), thisUpdate: now };
    this.#fingerprint = fingerprint;
    this.#signedFor = signer;
    return true;
  }
}
