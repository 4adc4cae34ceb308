import { existsSync, rmSync } from "node:fs";
import { basename, dirname, extname, join } from "node:path";
import { MeshwardError } from "../errors.ts";
import { renameDurably, writeFileAtomic, writeSecretFileAtomic } from "../util/files.ts";

/**
 * A key and its certificate replaced as one unit in the CA directory (review atrest HIGH-1: two
 * independent renames left a new issuer.key beside the old issuer.pem after a crash or a full
 * disk between them, and the old key was gone). Two phases, each file change atomic and durable:
 *
 * 1. stage: the new key, then the new certificate, written in full beside them as
 *    `<name>.pending.key` and `<name>.pending.pem` (nothing in use changes), and a file switched
 *    with them, if any (`also`: the retired-issuer record of `rotate-issuer --now`), as
 *    `<name>.pending.<ext>`;
 * 2. switch: `.pending.key` renamed onto the key, then the staged `also` onto its file, then
 *    `.pending.pem` onto the certificate.
 *
 * What the files tell after an interruption at any point (no passphrase needed to tell it):
 * a `.pending.key` means the switch never began (the pair in use is whole: the staged files are
 * discarded); a `.pending.pem` (or a staged `also`) without a `.pending.key` means the new key is
 * in place and the staged files belong to it (the switch is finished by renaming them). So a crash leaves the old
 * pair or the new one, and the old key is replaced only once the new pair is complete on disk.
 * loadAnchors reads a half-switched pair as the new one; `finishPairSwitch`, run under the CA
 * directory lock (dir-lock.ts), puts the files in order.
 */

/** `issuer.key` → `issuer.pending.key`, `issuer.pem` → `issuer.pending.pem`. */
export function pendingPath(path: string): string {
  const ext = extname(path);
  return join(dirname(path), `${basename(path, ext)}.pending${ext}`);
}

export function switchPair(keyPath: string, keyPem: string, certPath: string, certPem: string, also?: { path: string; content: string }): void {
  const pendingKey = pendingPath(keyPath);
  const pendingCert = pendingPath(certPath);
  const pendingAlso = also === undefined ? undefined : pendingPath(also.path);
  const discard = () => {
    rmSync(pendingKey, { force: true });
    rmSync(pendingCert, { force: true });
    if (pendingAlso !== undefined) rmSync(pendingAlso, { force: true });
  };
  try {
    discard();
    writeSecretFileAtomic(pendingKey, keyPem);
    writeFileAtomic(pendingCert, certPem);
    if (also !== undefined) writeFileAtomic(pendingAlso!, also.content);
  } catch (error) {
    discardQuietly(discard);
    throw new MeshwardError("E_FILE_WRITE", `${(error as Error).message} (${basename(keyPath)} and ${basename(certPath)} were not changed)`, { cause: error });
  }
  try {
    renameDurably(pendingKey, keyPath);
  } catch (error) {
    discardQuietly(discard);
    throw new MeshwardError("E_FILE_WRITE", `cannot write ${keyPath}: ${(error as Error).message} (${basename(keyPath)} and ${basename(certPath)} were not changed)`, { cause: error });
  }
  try {
    if (also !== undefined) renameDurably(pendingAlso!, also.path);
    renameDurably(pendingCert, certPath);
  } catch (error) {
    throw new MeshwardError(
      "E_FILE_WRITE",
      `cannot write ${certPath}: ${(error as Error).message}. The new ${basename(keyPath)} is in place and its certificate is kept in ${basename(pendingCert)}: the CA uses that pair, and the next 'meshward ca serve' start or 'meshward ca rotate-*'/'import-issuer' command finishes the switch; nothing is lost`,
      { cause: error, details: { pending: pendingCert } },
    );
  }
}

function discardQuietly(discard: () => void): void {
  try {
    discard();
  } catch {
    // the next holder of the CA directory lock discards them (finishPairSwitch)
  }
}

/**
 * Puts an interrupted switch of the pair in order (call it under the CA directory lock, so no
 * switch is under way): finished when the new key is already in place, undone (the staged files
 * removed) when it is not. Returns what was done, for the log; empty when there was nothing to do.
 */
export function finishPairSwitch(keyPath: string, certPath: string, also: readonly string[] = []): string[] {
  const pendingKey = pendingPath(keyPath);
  const pendingCert = pendingPath(certPath);
  const pendingAlso = also.map((path) => ({ path, pending: pendingPath(path) })).filter((a) => existsSync(a.pending));
  if (existsSync(pendingKey)) {
    rmSync(pendingKey, { force: true });
    rmSync(pendingCert, { force: true });
    for (const a of pendingAlso) rmSync(a.pending, { force: true });
    return [`a switch of ${basename(keyPath)}/${basename(certPath)} was interrupted before it began: removed the staged ${listed([pendingKey, pendingCert, ...pendingAlso.map((a) => a.pending)].map((p) => basename(p)))}; the pair in use is unchanged`];
  }
  const finished: string[] = [];
  for (const a of pendingAlso) {
    renameDurably(a.pending, a.path);
    finished.push(`${basename(a.pending)} renamed to ${basename(a.path)}`);
  }
  if (existsSync(pendingCert)) {
    renameDurably(pendingCert, certPath);
    finished.push(`${basename(pendingCert)} renamed to ${basename(certPath)}`);
  }
  if (finished.length === 0) return [];
  return [`a switch of ${basename(keyPath)}/${basename(certPath)} was interrupted after the new key was in place: finished it (${listed(finished)})`];
}

/** "a", "a and b", "a, b and c". */
function listed(items: readonly string[]): string {
  return items.length <= 2 ? items.join(" and ") : `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]!}`;
}
