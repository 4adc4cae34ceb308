import { createSecureServer, type Http2SecureServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_PEERS, PeerPool, type PeerTarget } from "../../src/proxy/peers.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, makeLogger, ManualIdentity, snapshotOf } from "../transport/fixtures.ts";

// Any local process names the peer of each request (dapr-app-id, resolved through the peer
// template), and the outbound kept one pool, one timer and one listener per peer it ever saw:
// 15,000 names left 37 MiB of heap behind. The pool now keeps MAX_PEERS and lets the least
// recently used go, gracefully: its idle connections close, a busy one finishes its exchange.
// The peer is a plain node:http2 server (allowHTTP1) with a real certificate.
const TD = "example.org";
const PEER_ID = `spiffe://${TD}/ns/default/inventory`;
const logger = makeLogger();
const options = { maxHeaderBytes: 16_384, idleMs: 60_000 };

let pki: TestPki;
let server: Http2SecureServer;
let port: number;

beforeAll(async () => {
  pki = createTestPki({ trustDomain: TD });
  const leaf = pki.issueLeaf({ spiffeId: PEER_ID });
  server = createSecureServer({ cert: leaf.chainPem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false, allowHTTP1: true }, (_req, res) => res.end("ok"));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  await new Promise<void>((r) => server?.close(() => r()));
  pki?.cleanup();
});

const identity = () => new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }), bundleOf([pki])));
const named = (appId: string): PeerTarget => ({ appId, namespace: "default", host: "127.0.0.1", port, expectedId: `spiffe://${TD}/ns/default/${appId}` });

describe("sidecar outbound: the peer pool is bounded", () => {
  it("keeps MAX_PEERS peers by default", () => {
    expect(MAX_PEERS).toBe(1024);
    const pool = new PeerPool(identity(), logger);
    try {
      for (let i = 0; i < MAX_PEERS + 200; i++) pool.http1(named(`app${i}`), options);
      expect(pool.size).toBe(MAX_PEERS);
    } finally {
      pool.close();
    }
  });

  it("lets the least recently used peer go: idle connections close, a busy one finishes its exchange, and the peer comes back when named again", async () => {
    const pool = new PeerPool(identity(), logger, 3);
    try {
      const inventory = named("inventory");
      const http1 = pool.http1(inventory, options);
      const idle = await http1.acquire();
      const busy = await http1.acquire();
      http1.release(idle);
      pool.http1(named("a"), options);
      pool.http1(named("b"), options);
      expect(pool.size).toBe(3);
      // Named again, inventory is no longer the least recently used: a is.
      pool.http1(inventory, options);
      pool.http1(named("c"), options);
      expect(pool.size).toBe(3);
      expect(idle.socket.destroyed).toBe(false); // inventory was kept (a went)

      pool.http1(named("d"), options); // the least recently used is b
      pool.http1(named("e"), options); // then inventory
      expect(pool.size).toBe(3);
      expect(idle.socket.destroyed).toBe(true);
      expect(busy.socket.destroyed).toBe(false); // its exchange may finish …
      http1.release(busy);
      expect(busy.socket.destroyed).toBe(true); // … and it is not pooled again

      // Named again, the peer gets a pool of its own, and it works.
      const again = pool.http1(inventory, options);
      expect(again).not.toBe(http1);
      const fresh = await again.acquire();
      expect(fresh.socket.destroyed).toBe(false);
      again.release(fresh);
    } finally {
      pool.close();
    }
  });
});
