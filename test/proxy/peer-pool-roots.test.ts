import { createSecureServer, type Http2SecureServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PeerPool, type PeerTarget } from "../../src/proxy/peers.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, makeLogger, ManualIdentity, snapshotOf } from "../transport/fixtures.ts";

// The sidecar's outbound keeps verified connections to peer sidecars (HTTP/1.1 keep-alive pool,
// one HTTP/2 session per peer). When a root leaves this sidecar's bundle, a peer verified under
// it must not get another request on them: the peer's own sidecar retires its connections only
// once its bundle changes too, up to bundleRefreshInterval later. The peer here is a plain
// node:http2 server (allowHTTP1), so nothing on its side closes anything.
const TD = "example.org";
const PEER_ID = `spiffe://${TD}/ns/default/inventory`;
const logger = makeLogger();

let kept: TestPki;
let removed: TestPki;
let server: Http2SecureServer;
let target: PeerTarget;

beforeAll(async () => {
  kept = createTestPki({ trustDomain: TD, name: "kept root" });
  removed = createTestPki({ trustDomain: TD, name: "removed root" });
  const leaf = removed.issueLeaf({ spiffeId: PEER_ID });
  server = createSecureServer({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false, allowHTTP1: true }, (_req, res) => res.end("ok"));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  target = { appId: "inventory", namespace: "default", host: "127.0.0.1", port: (server.address() as AddressInfo).port, expectedId: PEER_ID };
});
afterAll(async () => {
  await new Promise<void>((r) => server?.close(() => r()));
  kept?.cleanup();
  removed?.cleanup();
});

const client = () => new ManualIdentity(snapshotOf(kept.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }), bundleOf([kept, removed])));

describe("sidecar outbound pool when a root leaves the bundle", () => {
  it("HTTP/1.1: idle pooled connections close, a busy one is not pooled again, and the next dial is refused", async () => {
    const identity = client();
    const pool = new PeerPool(identity, logger);
    try {
      const http1 = pool.http1(target, { maxHeaderBytes: 16_384, idleMs: 60_000 });
      const idle = await http1.acquire();
      const busy = await http1.acquire();
      http1.release(idle);
      expect(idle.socket.destroyed).toBe(false);
      identity.updateBundle(bundleOf([kept, removed])); // no root removed: nothing happens
      expect(idle.socket.destroyed).toBe(false);
      identity.updateBundle(bundleOf([kept]));
      expect(idle.socket.destroyed).toBe(true);
      expect(busy.socket.destroyed).toBe(false); // its exchange may finish
      http1.release(busy);
      expect(busy.socket.destroyed).toBe(true);
      await expect(Promise.resolve(http1.acquire())).rejects.toMatchObject({ code: "UNABLE_TO_GET_ISSUER_CERT_LOCALLY" });
    } finally {
      pool.close();
    }
  });

  it("HTTP/2: the session closes and a new one is refused", async () => {
    const identity = client();
    const pool = new PeerPool(identity, logger);
    try {
      const session = await pool.h2(target);
      expect(session.closed).toBe(false);
      identity.updateBundle(bundleOf([kept]));
      await new Promise((r) => setImmediate(r));
      expect(session.closed).toBe(true);
      await expect(pool.h2(target)).rejects.toMatchObject({ code: "UNABLE_TO_GET_ISSUER_CERT_LOCALLY" });
    } finally {
      pool.close();
    }
  });
});
