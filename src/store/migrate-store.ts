import { MeshwardError } from "../errors.ts";
import type { Store } from "./store.ts";

export interface StoreCopyReport {
  readonly issuances: number;
  readonly revocations: number;
  readonly tokens: number;
  readonly crlNumber: bigint;
  /** Files of the shared CA state copied (rotated issuers with their encrypted keys, bundle, ca.json, removals); 0 when the source holds none. */
  readonly caStateFiles: number;
  /** The number of the published CRL copied; undefined when the source had none published. */
  readonly publishedCrl: bigint | undefined;
}

/** Whether CA replicas share their CA state through this store (PostgreSQL), as src/ca/state-watcher.ts decides. */
function sharesCaState(store: Store): boolean {
  return typeof store.listen === "function" && typeof store.leaderLock === "function";
}

/**
 * Moves a CA's records from one store to another (ca migrate-store: a single-replica SQLite CA
 * becoming several replicas on PostgreSQL, or replicas moving to another PostgreSQL): the
 * issuance log with its renewal links, the revocations, the join tokens with their uses left,
 * the CRL number, so the next CRL's number is higher than any the old store gave, and the CA
 * state replicas share: what rotations changed after init (rotated issuers with their encrypted
 * keys, the trust bundle, ca.json with the root-rotation stage; its version too, which is the
 * SPIFFE bundle's sequence) and the published CRL. Without that state, replicas on the new store
 * would sign with the issuer `ca init` made, after a root rotation one under the retired root.
 *
 * A SQLite source holds no such state: a single CA keeps what rotations change in its directory
 * (which every replica gets a copy of), and signs its CRL in memory; its ca_files table stays
 * empty and nothing is published, so only the records move. For the same reason a SQLite target
 * cannot carry the state of PostgreSQL replicas: that is refused, as is a target that already
 * holds records, CA state or a published CRL. Stop the CA first: what it issues or rotates during
 * the copy would stay behind.
 */
export async function copyStore(from: Store, to: Store): Promise<StoreCopyReport> {
  const [existingIssuance] = await to.listIssuances({ limit: 1 });
  if (
    existingIssuance !== undefined ||
    (await to.listTokens()).length > 0 ||
    (await to.listRevocations()).length > 0 ||
    (await to.caStateVersion()) > 0 ||
    (await to.latestCrl()) !== undefined
  ) {
    throw new MeshwardError(
      "E_MIGRATE_TARGET_NOT_EMPTY",
      "the target store already holds certificates, tokens, revocations, CA state or a published CRL (a CA has run on it); migrate into an empty database",
    );
  }
  const state = await from.readCaFiles();
  if (state.version > 0 && !sharesCaState(to)) {
    throw new MeshwardError(
      "E_MIGRATE_TARGET_NOT_SHARED",
      `the source store holds CA state that replicas share (${[...state.files.keys()].join(", ")}: what rotations changed after init), which a single CA on SQLite would not read (it reads its directory); migrate to a PostgreSQL store instead`,
    );
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

  // The shared CA state, removals (null) included, in one compare-and-swap from the empty state;
  // then its version is carried up to the source's (each empty write adds one), so the SPIFFE
  // bundle's sequence, which is that version, does not go back.
  if (state.version > 0) {
    let version = await to.writeCaFiles(0, state.files);
    while (version !== undefined && version < state.version) version = await to.writeCaFiles(version, new Map());
    if (version === undefined) {
      throw new MeshwardError("E_STORE_CONFLICT", "the CA state in the target store changed during the migration (a CA or admin is using it); stop it, empty the target and run the migration again");
    }
  }
  // The published CRL set (the current issuer's CRL and, in `others`, the previous issuer's while
  // its certificates may be valid), so replicas serve the same set from their start.
  const published = await from.latestCrl();
  if (published !== undefined) await to.publishCrl(published);
  // The source's next number is above every CRL it signed (the published one too); the target continues from there.
  const crlNumber = await from.nextCrlNumber();
  await to.raiseCrlNumber(crlNumber);
  return {
    issuances: issuances.length,
    revocations: revocations.length,
    tokens: tokens.length,
    crlNumber,
    caStateFiles: state.version > 0 ? state.files.size : 0,
    publishedCrl: published?.number,
  };
}
