import { MeshwardError } from "../errors.ts";
import type { Store } from "./store.ts";

export interface StoreCopyReport {
  readonly issuances: number;
  readonly revocations: number;
  readonly tokens: number;
  readonly crlNumber: bigint;
}

/**
 * Moves a CA's records from one store to another (ca migrate-store: a single-replica SQLite CA
 * becoming several replicas on PostgreSQL): the issuance log with its renewal links, the
 * revocations, the join tokens with their uses left, and the CRL number, so the next CRL's
 * number is higher than any the old store gave. Refused when the target already holds records.
 * Stop the CA first: what it issues during the copy would stay behind.
 */
export async function copyStore(from: Store, to: Store): Promise<StoreCopyReport> {
  const [existingIssuance] = await to.listIssuances({ limit: 1 });
  if (existingIssuance !== undefined || (await to.listTokens()).length > 0 || (await to.listRevocations()).length > 0) {
    throw new MeshwardError("E_MIGRATE_TARGET_NOT_EMPTY", "the target store already holds certificates, tokens or revocations; migrate into an empty database");
  }
  const issuances = (await from.listIssuances()).reverse(); // oldest first, so a renewal follows what it replaced
  // Every renewal, forks included (revoking a certificate follows them all).
  const replaced = new Map((await from.listRenewals()).map((r) => [r.serial, r.renews]));
  for (const record of issuances) {
    const supersedes = replaced.get(record.serial);
    await to.recordIssuance({ ...record, ...(supersedes !== undefined ? { supersedes } : {}) });
  }
  const revocations = await from.listRevocations();
  for (const r of revocations) await to.revoke({ serial: r.serial, revokedAt: r.revokedAt, reason: r.reason });
  const tokens = await from.listTokens();
  for (const token of tokens) await to.createToken(token);
  // The source's next number is above every CRL it signed; the target continues from there.
  const crlNumber = await from.nextCrlNumber();
  await to.raiseCrlNumber(crlNumber);
  return { issuances: issuances.length, revocations: revocations.length, tokens: tokens.length, crlNumber };
}
