import { connect as netConnect, type Socket } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startEgress, type EgressEntry } from "../../src/proxy/egress.ts";
import type { IdentitySource } from "../../src/identity/source.ts";
import { createTestPki, type TestLeaf, type TestPki } from "../helpers/openssl-pki.ts";
import { startTlsEchoServer, type TlsEchoServer } from "../helpers/tls-echo.ts";
import { waitFor } from "../helpers/wait.ts";
import { bundleOf, ManualIdentity, snapshotOf } from "../transport/fixtures.ts";

// Found by review: the egress (TLS origination) closed its connections to a backend when the
// backend's certificate was revoked, but not when a root it was verified with left the mesh
// bundle, not when the backend's certificate expired, and had no age cap, while the outbound's
// tunnels and the inbound do all three. A connection to a backend the sidecar itself now refuses
// went on carrying the app's bytes for as long as it had traffic. It is now ended (no more app
// bytes sent, close_notify + FIN, cut after a grace if the backend holds it open). Backends are
// plain node:tls echo servers holding openssl-made certificates: nothing on their side ends
// anything, so whatever ends is the egress's doing.
const TD = "example.org";
const BOUND_MS = 15_000;

type Backend = TlsEchoServer;

let kept: TestPki;
let removed: TestPki;
const cleanups: (() => unknown)[] = [];

beforeAll(() => {
  kept = createTestPki({ trustDomain: TD, name: "kept root" });
  removed = createTestPki({ trustDomain: TD, name: "removed root" });
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(() => {
  kept?.cleanup();
  removed?.cleanup();
});

/** A TLS echo server holding `leaf`; `holdOpen`: it keeps its side open after the client's end. */
const backend = (leaf: TestLeaf, holdOpen = false): Promise<Backend> => startTlsEchoServer(leaf, holdOpen, cleanups);

/** An egress to `to` (verified as "localhost"); returns its port and the lines it logged. */
async function egress(to: Backend, entry: Partial<EgressEntry>, identity?: IdentitySource): Promise<{ port: number; logs: string[] }> {
  const logs: string[] = [];
  const log = (message: string) => void logs.push(message);
  const started = await startEgress(
    { listen: "127.0.0.1:0", backend: `127.0.0.1:${to.port}`, serverName: "localhost", ...entry },
    { ...(identity !== undefined ? { identity } : {}), logger: { info: log, warn: log, error: log } },
  );
  cleanups.push(() => started.close());
  return { port: Number(started.address.split(":").pop()), logs };
}

/** An app connection through the egress; resolves once a first message came back. */
async function relay(port: number) {
  const socket: Socket = netConnect({ host: "127.0.0.1", port });
  cleanups.push(() => socket.destroy());
  socket.on("error", () => undefined);
  let echoed = "";
  socket.on("data", (chunk: Buffer) => (echoed += chunk.toString()));
  const closed = new Promise<true>((resolve) => socket.once("close", () => resolve(true)));
  /** Whether `text` written now comes back. */
  const echoes = async (text: string) => {
    const before = echoed.length;
    const back = () => echoed.slice(before).includes(text);
    socket.write(text);
    await Promise.race([waitFor(`${text} to come back`, back, 10_000).catch(() => undefined), closed]);
    return back();
  };
  expect(await echoes("before;")).toBe(true);
  /** True when the connection closes, false if it is still open after `withinMs`. */
  const closedWithin = (withinMs: number) => Promise.race([closed, new Promise<false>((resolve) => setTimeout(() => resolve(false), withinMs).unref())]);
  return { socket, echoes, closedWithin };
}

const workload = (roots: TestPki[]) => new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }), bundleOf(roots)));
const localhostLeaf = (pki: TestPki, notAfter?: Date) => pki.issueLeaf({ dnsNames: ["localhost"], ...(notAfter ? { notAfter } : {}) });

describe("egress: an open connection is ended when what verified its backend no longer holds", () => {
  for (const mtls of [false, true]) {
    it(`mesh bundle${mtls ? ", mTLS" : ""}: a root leaving the bundle ends the connections verified with it, nothing more reaches the backend; others stay`, async () => {
      const db = await backend(localhostLeaf(removed));
      const cache = await backend(localhostLeaf(kept));
      const identity = workload([kept, removed]);
      const toDb = await egress(db, { mtls }, identity);
      const toCache = await egress(cache, { mtls }, identity);
      const dbRelay = await relay(toDb.port);
      const cacheRelay = await relay(toCache.port);

      identity.updateBundle(bundleOf([kept, removed], new Set(["1234"]))); // no root removed: nothing ends
      expect(await dbRelay.echoes("same-roots;")).toBe(true);

      identity.updateBundle(bundleOf([kept]));
      dbRelay.socket.write("after-removal;"); // must not reach the backend verified under that root
      expect(await dbRelay.closedWithin(BOUND_MS)).toBe(true);
      expect(db.ended[0]).toBe(true); // the egress ended it (this backend closes with it)
      expect(db.received[0]).toBe("before;same-roots;");
      expect(toDb.logs.find((line) => /ending a connection: the root its backend was verified with left the trust bundle/.test(line))).toBeDefined();

      // The backend under the kept root was verified with roots that are all still there.
      expect(await cacheRelay.echoes("cache-after-removal;")).toBe(true);
      expect(cache.ended[0]).toBe(false);
      // And a new connection to the db is refused at its handshake.
      const again = netConnect({ host: "127.0.0.1", port: toDb.port });
      cleanups.push(() => again.destroy());
      again.on("error", () => undefined);
      again.write("new;");
      await new Promise((resolve) => again.once("close", resolve));
      expect(db.received.length).toBe(1);
    }, 60_000);
  }

  it("mesh bundle: the backend's certificate expires: its connection is ended, and cut after the grace while the backend holds it open; one to a lasting backend stays", async () => {
    const db = await backend(localhostLeaf(kept, new Date(Date.now() + 4_000)), true);
    const cache = await backend(localhostLeaf(kept), true);
    const identity = workload([kept]);
    const toDb = await egress(db, { mtls: true }, identity);
    const toCache = await egress(cache, { mtls: true }, identity);
    const dbRelay = await relay(toDb.port);
    const cacheRelay = await relay(toCache.port);
    await waitFor("the db backend to see the end of the connection", () => db.ended[0] === true, BOUND_MS);
    dbRelay.socket.write("after-expiry;");
    expect(await dbRelay.closedWithin(BOUND_MS)).toBe(true);
    expect(db.received[0]).toBe("before;");
    expect(toDb.logs.find((line) => /ending a connection: the backend's certificate expired/.test(line))).toBeDefined();
    expect(await cacheRelay.echoes("cache-after;")).toBe(true);
    expect(cache.ended[0]).toBe(false);
  }, 60_000);

  it("caFile (no mesh identity): the backend's certificate expiry ends the connection too", async () => {
    const db = await backend(localhostLeaf(kept, new Date(Date.now() + 4_000)));
    const toDb = await egress(db, { caFile: kept.rootPath });
    const dbRelay = await relay(toDb.port);
    expect(await dbRelay.closedWithin(BOUND_MS)).toBe(true);
    expect(db.ended[0]).toBe(true);
    expect(toDb.logs.find((line) => /the backend's certificate expired/.test(line))).toBeDefined();
  }, 60_000);

  it("mTLS: this workload's certificate expiring ends the connection (the backend verified it once)", async () => {
    const cache = await backend(localhostLeaf(kept));
    const identity = new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web`, notAfter: new Date(Date.now() + 6_000) }), bundleOf([kept])));
    const toCache = await egress(cache, { mtls: true, caFile: kept.rootPath }, identity);
    const cacheRelay = await relay(toCache.port);
    expect(await cacheRelay.closedWithin(BOUND_MS)).toBe(true);
    expect(cache.ended[0]).toBe(true);
    expect(toCache.logs.find((line) => /this workload's certificate on it is expiring/.test(line))).toBeDefined();
  }, 60_000);

  it("maxConnectionAgeMs ends a connection (caFile and mesh bundle alike); without it the connection stays", async () => {
    const cache = await backend(localhostLeaf(kept));
    const capped = await egress(cache, { caFile: kept.rootPath, maxConnectionAgeMs: 2_000 });
    const meshCapped = await egress(cache, { maxConnectionAgeMs: 2_000 }, workload([kept]));
    const uncapped = await egress(cache, { caFile: kept.rootPath });
    const a = await relay(capped.port);
    const b = await relay(meshCapped.port);
    const c = await relay(uncapped.port);
    expect(await a.closedWithin(BOUND_MS)).toBe(true);
    expect(await b.closedWithin(BOUND_MS)).toBe(true);
    expect(capped.logs.find((line) => /maximum connection age \(2000 ms\)/.test(line))).toBeDefined();
    expect(await c.echoes("still-open;")).toBe(true);
  }, 60_000);
});
