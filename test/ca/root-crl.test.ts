import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { directoryFiles } from "../../src/ca/anchor-files.ts";
import { caLayout, initAnchors, loadAnchors, type LoadedAnchors } from "../../src/ca/anchors.ts";
import { CrlPublisher } from "../../src/ca/crl-publisher.ts";
import { recordRetiredIssuer, ROOT_CRL_RESIGN_AFTER_MS } from "../../src/ca/root-crl.ts";
import { rotateIssuer } from "../../src/ca/rotation.ts";
import { parseCrl } from "../../src/pki/crl.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import type { Store } from "../../src/store/store.ts";

// The root CRL (root-crl.ts): signed by each root whose key the CA holds, for OpenSSL's
// whole-chain CRL check; it lists the issuers retired with --now and is re-signed on its own schedule.
const dirs: string[] = [];
const stores: Store[] = [];
afterEach(async () => {
  for (const store of stores.splice(0)) await store.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

async function ca(imported = false): Promise<{ dir: string; store: Store; now: { at: Date } }> {
  const dir = join(mkdtempSync(join(tmpdir(), "meshward-root-crl-")), "ca");
  dirs.push(join(dir, ".."));
  if (imported) throw new Error("unused");
  await initAnchors({ dir, trustDomain: "root-crl.test", now: new Date() });
  const store = openSqliteStore(":memory:");
  await store.migrate();
  stores.push(store);
  return { dir, store, now: { at: new Date() } };
}

function rootCrls(anchors: LoadedAnchors, others: readonly Buffer[]) {
  return others.flatMap((der) => anchors.roots.flatMap((root) => {
    try {
      return [parseCrl(der, root)];
    } catch {
      return [];
    }
  }));
}

describe("root CRLs", () => {
  it("a self-managed CA publishes one root CRL, empty, kept across refreshes until it is due", async () => {
    const { dir, store, now } = await ca();
    let anchors = loadAnchors({ dir });
    const publisher = new CrlPublisher(store, () => anchors.issuer, () => now.at, undefined, () => anchors.previousIssuer?.signer, () => anchors);
    await publisher.refresh();
    const [root] = rootCrls(anchors, publisher.current!.others);
    expect(root?.revokedSerials.size).toBe(0);
    expect(root!.nextUpdate!.getTime() - root!.thisUpdate.getTime()).toBeGreaterThan(7 * 86_400_000);
    // A revocation re-signs the issuer's CRL, not the root's.
    await store.revoke({ serial: "0A0B", revokedAt: now.at, reason: "keyCompromise" });
    await publisher.refresh();
    expect(publisher.current!.revokedSerials.has("0A0B")).toBe(true);
    expect(rootCrls(anchors, publisher.current!.others)[0]!.der.equals(root!.der)).toBe(true);
    // Past ROOT_CRL_RESIGN_AFTER_MS it is signed again.
    now.at = new Date(now.at.getTime() + ROOT_CRL_RESIGN_AFTER_MS + 60_000);
    await publisher.refresh();
    const again = rootCrls(anchors, publisher.current!.others)[0]!;
    expect(again.thisUpdate.getTime()).toBe(Math.floor(now.at.getTime() / 1000) * 1000);
    anchors = loadAnchors({ dir });
  });

  it("an issuer retired with --now is listed in the root's CRL; the replaced issuer kept for its CRL is not, until a --now drops it too", async () => {
    const { dir, store, now } = await ca();
    let anchors = loadAnchors({ dir });
    const publisher = new CrlPublisher(store, () => anchors.issuer, () => now.at, undefined, () => anchors.previousIssuer?.signer, () => anchors);
    await publisher.refresh();
    const first = anchors.issuer.certificate;
    await rotateIssuer({ dir, now: now.at, keepPrevious: true });
    anchors = loadAnchors({ dir });
    await publisher.refresh();
    expect(rootCrls(anchors, publisher.current!.others)[0]!.revokedSerials.size).toBe(0);
    // --now, as the CLI does it: the replaced issuer is recorded as retired.
    const second = anchors.issuer.certificate;
    await rotateIssuer({ dir, now: now.at, keepPrevious: false });
    recordRetiredIssuer(directoryFiles, caLayout(dir), second, now.at);
    anchors = loadAnchors({ dir });
    await publisher.refresh();
    const root = rootCrls(anchors, publisher.current!.others);
    expect(root).toHaveLength(1);
    // The first issuer, kept in issuer.prev.* by the ordinary rotation, is dropped by --now with its
    // key beside the leaked one: it is retired too (review rotation task 3).
    expect([...root[0]!.revokedSerials].sort()).toEqual([second.serialNumber.toUpperCase(), first.serialNumber.toUpperCase()].sort());
    expect(root[0]!.entries.map((e) => e.reason)).toEqual(["cACompromise", "cACompromise"]);
    expect(new X509Certificate(anchors.issuer.der).fingerprint256).not.toBe(second.fingerprint256);
  });

  it("several replicas: the leader signs the root CRL, a follower serves the same bytes", async () => {
    const { dir, store, now } = await ca();
    const anchors = loadAnchors({ dir });
    const leader = new CrlPublisher(store, () => anchors.issuer, () => now.at, { isLeader: () => true }, () => undefined, () => anchors);
    const follower = new CrlPublisher(store, () => anchors.issuer, () => now.at, { isLeader: () => false }, () => undefined, () => anchors);
    await leader.refresh();
    await follower.refresh();
    expect(rootCrls(anchors, leader.current!.others)).toHaveLength(1);
    expect(follower.current!.others.map((d) => d.toString("hex"))).toEqual(leader.current!.others.map((d) => d.toString("hex")));
    // Refreshing again does not re-sign: the published set is up to date.
    const number = (await store.latestCrl())!.number;
    await leader.refresh();
    expect((await store.latestCrl())!.number).toBe(number);
  });

  it("without the root key (an external root) no root CRL is published", async () => {
    const { dir, store, now } = await ca();
    rmSync(caLayout(dir).rootKey);
    const anchors = loadAnchors({ dir });
    expect(anchors.rootKeys).toHaveLength(0);
    const publisher = new CrlPublisher(store, () => anchors.issuer, () => now.at, undefined, () => undefined, () => anchors);
    await publisher.refresh();
    expect(publisher.current!.others).toHaveLength(0);
  });
});
