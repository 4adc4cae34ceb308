import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { fileIdentitySource } from "../../src/identity/file-source.ts";
import type { FileIdentityOptions } from "../../src/identity/file-source.ts";
import { startFileSink } from "../../src/identity/file-sink.ts";
import type { IdentityEvent, IdentitySnapshot, IdentitySource } from "../../src/identity/source.ts";
import { createCrl, encodePrivateKey, toPem } from "../../src/pki/index.ts";
import { FakeClock } from "../helpers/fake-clock.ts";
import { createTestPki, manualIdentitySource } from "../helpers/test-pki.ts";
import type { TestPki } from "../helpers/test-pki.ts";

let pki: TestPki;
let otherPki: TestPki;
let root: string;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  pki = await createTestPki();
  otherPki = await createTestPki();
  root = mkdtempSync(join(tmpdir(), "mw-fsrc-"));
});
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

let counter = 0;
function freshDir(): string {
  const dir = join(root, `d-${++counter}`);
  mkdirSync(dir);
  return dir;
}

function files(dir: string) {
  return { certFile: join(dir, "cert.pem"), keyFile: join(dir, "key.pem"), bundleFile: join(dir, "bundle.pem") };
}

/** Writes a snapshot's files directly (not atomically: a careless writer). */
function writeSet(dir: string, snapshot: IdentitySnapshot, parts: { cert?: string; key?: string; bundle?: string } = {}): void {
  const paths = files(dir);
  writeFileSync(paths.bundleFile, parts.bundle ?? snapshot.bundle.rootsPem);
  writeFileSync(paths.keyFile, parts.key ?? encodePrivateKey(snapshot.svid.privateKey), { mode: 0o600 });
  writeFileSync(paths.certFile, parts.cert ?? snapshot.svid.certChainPem);
}

function capture() {
  const lines: { level: number; msg: string; problem?: string; event?: string }[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { lines, logger };
}

function source(options: FileIdentityOptions): IdentitySource {
  const created = fileIdentitySource({ pollMs: 100, settleMs: 100, ...options });
  cleanups.push(() => created.close());
  return created;
}

function recorder(src: IdentitySource) {
  const events: IdentityEvent[] = [];
  src.subscribe((event) => events.push(event));
  const next = (type: IdentityEvent["type"]) =>
    new Promise<IdentityEvent>((resolve) => {
      const off = src.subscribe((event) => {
        if (event.type === type) {
          off();
          resolve(event);
        }
      });
    });
  return { events, next };
}

/** Waits until `predicate` holds, polling; a real wait for file events, bounded by the test timeout. */
async function until(predicate: () => boolean): Promise<void> {
  while (!predicate()) await new Promise((resolve) => setTimeout(resolve, 20));
}

describe("file identity source", () => {
  it("round trip: picks up what the file sink writes, including a rotation and a bundle update", async () => {
    const dir = join(root, `sink-${++counter}`);
    const upstream = manualIdentitySource(pki.snapshot({ spiffeId: "spiffe://example.org/ns/default/one" }));
    const sink = startFileSink({ source: upstream, dir });
    cleanups.push(() => sink.close());
    await sink.ready();

    const src = source(files(dir));
    const first = await src.ready();
    expect(first.svid.spiffeId).toBe("spiffe://example.org/ns/default/one");
    expect(first.svid.serial).toBe(upstream.current()!.svid.serial);
    const { events, next } = recorder(src);

    const rotated = next("rotated");
    const second = pki.snapshot({ spiffeId: "spiffe://example.org/ns/default/two" });
    upstream.rotate(second);
    const event = await rotated;
    expect(event.type === "rotated" && event.snapshot.svid.serial).toBe(second.svid.serial);
    expect(src.current()?.svid.serial).toBe(second.svid.serial);

    const updated = next("bundle-updated");
    upstream.updateBundle(pki.bundle({ extraRootsPem: otherPki.rootPem }));
    const bundleEvent = await updated;
    expect(bundleEvent.type === "bundle-updated" && bundleEvent.snapshot.bundle.rootsPem).toBe(pki.rootPem + otherPki.rootPem);
    expect(bundleEvent.type === "bundle-updated" && bundleEvent.snapshot.svid.serial).toBe(second.svid.serial);
    // The half-written states in between (new key with old cert) produced no event.
    expect(events.map((e) => e.type)).toEqual(["rotated", "bundle-updated"]);
  });

  it("ignores a key that does not match the certificate, keeps the old identity and logs once", async () => {
    const dir = freshDir();
    const good = pki.snapshot();
    writeSet(dir, good);
    const { lines, logger } = capture();
    const src = source({ ...files(dir), logger });
    await src.ready();
    const { events } = recorder(src);

    const stranger = pki.issueSvid();
    const newer = pki.snapshot();
    writeSet(dir, newer, { key: encodePrivateKey(stranger.privateKey) });
    await until(() => lines.some((line) => line.event === "identity-files-ignored"));
    // Let several more polls see the same problem.
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(src.current()?.svid.serial).toBe(good.svid.serial);
    expect(events).toEqual([]);
    const warnings = lines.filter((line) => line.event === "identity-files-ignored");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.problem).toMatch(/E_KEY_MISMATCH/);

    // The right key arrives: the new identity is taken.
    writeSet(dir, newer);
    await until(() => events.length > 0);
    expect(events[0]!.type === "rotated" && events[0]!.snapshot.svid.serial).toBe(newer.svid.serial);
  });

  it("a FIFO or a device in place of a file is reported at once, never read (review files LOW-3), and a valid set is still taken", async () => {
    const dir = freshDir();
    const paths = files(dir);
    // A FIFO nobody writes to as key.pem hung the read (a thread-pool read that never returns, so no
    // later change was ever read); /dev/zero as cert.pem grew memory without bound.
    execFileSync("mkfifo", ["-m", "600", paths.keyFile]);
    symlinkSync("/dev/zero", paths.certFile);
    writeFileSync(paths.bundleFile, pki.rootPem);
    const { lines, logger } = capture();
    const src = source({ ...paths, logger });
    await until(() => lines.some((line) => line.event === "identity-files-ignored"));
    const problem = lines.find((line) => line.event === "identity-files-ignored")!.problem ?? "";
    expect(problem).toMatch(/is a (named pipe \(FIFO\)|character device \(as \/dev\/zero or a terminal\)), not a regular file/);
    rmSync(paths.keyFile);
    rmSync(paths.certFile);
    const good = pki.snapshot();
    writeSet(dir, good);
    expect((await src.ready()).svid.serial).toBe(good.svid.serial);
  });

  it("survives garbage, truncated and missing files, and starts once a valid set appears", async () => {
    const dir = freshDir();
    const good = pki.snapshot();
    const paths = files(dir);
    writeFileSync(paths.certFile, "garbage\x00\xff not a pem");
    writeFileSync(paths.keyFile, toPem(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]), "PRIVATE KEY")); // a key file that holds no key
    // bundle.pem missing
    const { lines, logger } = capture();
    const src = source({ ...paths, logger });
    let ready = false;
    void src.ready().then(() => (ready = true));
    await until(() => lines.some((line) => line.event === "identity-files-ignored"));
    expect(ready).toBe(false);
    expect(src.current()).toBeUndefined();

    writeSet(dir, good);
    expect((await src.ready()).svid.serial).toBe(good.svid.serial);
    const { events } = recorder(src);

    // Truncated certificate (a writer that does not rename atomically, caught mid-write).
    const next = pki.snapshot();
    writeSet(dir, next, { cert: next.svid.certChainPem.slice(0, 300) });
    await until(() => lines.some((line) => line.problem?.includes("has no END line")));
    expect(src.current()?.svid.serial).toBe(good.svid.serial);
    writeFileSync(paths.certFile, Buffer.from([0x30, 0x82, 0xff, 0xff, 0x00]));
    await until(() => lines.some((line) => line.problem?.includes("no PEM block")));
    expect(src.current()?.svid.serial).toBe(good.svid.serial);
    expect(events).toEqual([]);

    writeSet(dir, next);
    await until(() => events.length > 0);
    expect(src.current()?.svid.serial).toBe(next.svid.serial);
  });

  it("ignores a certificate that does not chain to the bundle, and a CA certificate posing as the leaf", async () => {
    const dir = freshDir();
    const good = pki.snapshot();
    writeSet(dir, good);
    const { lines, logger } = capture();
    const src = source({ ...files(dir), logger });
    await src.ready();
    const { events } = recorder(src);

    const foreign = otherPki.issueSvid();
    writeSet(dir, { svid: foreign, bundle: pki.bundle() });
    await until(() => lines.some((line) => line.problem?.includes("E_CHAIN_UNTRUSTED")));
    writeSet(dir, good, { cert: pki.issuerPem, key: encodePrivateKey(pki.issuer.privateKey) });
    await until(() => lines.some((line) => line.problem?.includes("CA certificate")));
    expect(events).toEqual([]);
    expect(src.current()?.svid.serial).toBe(good.svid.serial);
  });

  it("reads revoked serials from a CRL signed by the issuer and refuses a CRL from another CA", async () => {
    const dir = freshDir();
    const good = pki.snapshot();
    writeSet(dir, good);
    const crlFile = join(dir, "crl.pem");
    const now = Date.now();
    const crl = async (signer = pki.issuer, serials = ["0A0B", "7F01"]) =>
      toPem(await createCrl({ signer, entries: serials.map((serial) => ({ serial, revokedAt: new Date(now - 1000) })), thisUpdate: new Date(now - 60_000), nextUpdate: new Date(now + 3_600_000), crlNumber: 1n }), "X509 CRL");
    writeFileSync(crlFile, await crl());
    const { lines, logger } = capture();
    const src = source({ ...files(dir), crlFile, logger });
    expect([...(await src.ready()).bundle.revokedSerials].sort()).toEqual(["0A0B", "7F01"]);
    const { events, next } = recorder(src);

    const updated = next("bundle-updated");
    writeFileSync(crlFile, await crl(pki.issuer, ["0A0B", "7F01", "55"]));
    const event = await updated;
    expect(event.type === "bundle-updated" && [...event.snapshot.bundle.revokedSerials].sort()).toEqual(["0A0B", "55", "7F01"]);

    writeFileSync(crlFile, await crl(otherPki.issuer, []));
    await until(() => lines.some((line) => line.problem?.includes("E_CRL_SIGNATURE")));
    expect(src.current()?.bundle.revokedSerials.size).toBe(3);
    expect(events.map((e) => e.type)).toEqual(["bundle-updated"]);
  });

  it("passes on a CRL re-signed with the same revocations (a later nextUpdate), as the Workload API hands the CRL itself on (found by review)", async () => {
    const dir = freshDir();
    writeSet(dir, pki.snapshot());
    const crlFile = join(dir, "crl.pem");
    const now = Date.now();
    const crl = async (crlNumber: bigint, thisUpdate: number) =>
      createCrl({ signer: pki.issuer, entries: [{ serial: "0A0B", revokedAt: new Date(now - 1000) }], thisUpdate: new Date(thisUpdate), nextUpdate: new Date(thisUpdate + 3_600_000), crlNumber });
    const first = await crl(1n, now - 60_000);
    writeFileSync(crlFile, toPem(first, "X509 CRL"));
    const src = source({ ...files(dir), crlFile });
    expect((await src.ready()).bundle.crls?.[0]?.equals(first)).toBe(true);

    const resigned = await crl(2n, now);
    const updated = recorder(src).next("bundle-updated");
    writeFileSync(crlFile, toPem(resigned, "X509 CRL"));
    const event = await updated;
    if (event.type !== "bundle-updated") throw new Error("unreachable");
    expect([...event.snapshot.bundle.revokedSerials]).toEqual(["0A0B"]);
    expect(event.snapshot.bundle.crls?.[0]?.equals(resigned)).toBe(true);
    expect(src.current()?.bundle.crls?.[0]?.equals(resigned)).toBe(true);
  });

  it("emits expired when the certificate passes notAfter without a replacement (injected clock)", async () => {
    const clock = new FakeClock(Date.now());
    const dir = freshDir();
    const short = pki.snapshot({ notAfter: new Date(clock.now() + 3_600_000) });
    writeSet(dir, short);
    const src = source({ ...files(dir), clock });
    await src.ready();
    const { events } = recorder(src);
    await clock.advance(3_000_000);
    expect(events).toEqual([]);
    expect(src.current()).toBeDefined();
    await clock.advance(700_000);
    expect(events).toEqual([{ type: "expired", spiffeId: short.svid.spiffeId }]);
    expect(src.current()).toBeUndefined();

    // A renewed set written later is taken again.
    const renewed = pki.snapshot({ notAfter: new Date(clock.now() + 3_600_000) });
    writeSet(dir, renewed);
    await until(() => events.length > 1);
    expect(events[1]!.type === "rotated" && events[1]!.snapshot.svid.serial).toBe(renewed.svid.serial);
    expect(src.current()?.svid.serial).toBe(renewed.svid.serial);
  });
});
