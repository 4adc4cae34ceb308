import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Http1Pool, type UpstreamConnection } from "../../src/proxy/http1/pool.ts";

// The inbound's pool to the app: every HTTP/1 request and every non-gRPC HTTP/2 stream takes a
// connection. One caller's HTTP/2 connection opened 5,000 streams and the app 4,128 connections
// (issue 20 review); the pool now holds at most maxConnections (limits.maxConnections on the
// inbound), and a request past it waits for a connection to be released or to close. The
// upstream is a real TCP server counting what it accepts.
let server: Server;
let port: number;
const open = new Set<Socket>();
let accepted = 0;

beforeAll(async () => {
  server = createServer((socket) => {
    accepted++;
    open.add(socket);
    socket.on("close", () => open.delete(socket));
    socket.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  for (const socket of open) socket.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

const pool = (maxConnections?: number) =>
  new Http1Pool({
    dial: () => netConnect({ host: "127.0.0.1", port }),
    authority: `127.0.0.1:${port}`,
    maxHeaderBytes: 16_384,
    idleMs: 60_000,
    maxIdle: 8,
    ...(maxConnections !== undefined ? { maxConnections } : {}),
  });
const settle = () => new Promise((resolve) => setTimeout(resolve, 100));

describe("Http1Pool: at most maxConnections open to the upstream", () => {
  it("makes a request past the cap wait for a released connection, or a new one once a connection closes", async () => {
    accepted = 0;
    const capped = pool(2);
    try {
      const a = capped.acquire() as UpstreamConnection;
      const b = capped.acquire() as UpstreamConnection;
      const third = capped.acquire();
      const fourth = capped.acquire();
      expect(capped.size).toBe(2);
      expect(third).toBeInstanceOf(Promise);
      expect(fourth).toBeInstanceOf(Promise);
      let resolved = 0;
      void (third as Promise<UpstreamConnection>).then(() => resolved++);
      await settle();
      expect(resolved).toBe(0);
      expect(accepted).toBe(2);

      capped.release(a); // handed to the first waiting request, not pooled
      expect(await third).toBe(a);
      b.destroy(); // a slot frees: the next waiting request gets a new connection
      const d = await fourth;
      expect(d).not.toBe(b);
      expect(d.dead).toBe(false);
      await settle();
      expect(accepted).toBe(3); // b closed before d was dialled (the server may hear of b's close a little later)
      expect(capped.size).toBe(2);
    } finally {
      capped.close();
    }
  });

  it("rejects requests still waiting when the pool closes", async () => {
    const capped = pool(1);
    capped.acquire();
    const waiting = capped.acquire();
    capped.close();
    await expect(waiting).rejects.toMatchObject({ code: "ECONNRESET" });
  });

  it("dials without waiting when no cap is given (the peers' pools)", async () => {
    accepted = 0;
    const free = pool();
    try {
      const connections = Array.from({ length: 5 }, () => free.acquire());
      for (const c of connections) expect(c).not.toBeInstanceOf(Promise);
      await settle();
      expect(accepted).toBe(5);
    } finally {
      free.close();
    }
  });
});

// Found by review: a request waiting at the cap waited for ever (an h2c caller's 8 unanswered
// streams held the inbound's 8 app connections; an HTTP/1 GET then got no answer), and a waiter
// whose caller had gone stayed queued, to be handed a connection nobody would use.
describe("Http1Pool: waiting at the cap is bounded and can be withdrawn", () => {
  const waitPool = (maxConnections: number, maxWaitMs?: number) =>
    new Http1Pool({
      dial: () => netConnect({ host: "127.0.0.1", port }),
      authority: `127.0.0.1:${port}`,
      maxHeaderBytes: 16_384,
      idleMs: 60_000,
      maxIdle: 8,
      maxConnections,
      ...(maxWaitMs !== undefined ? { maxWaitMs } : {}),
    });

  it("fails a request that waited maxWaitMs for a connection with E_POOL_TIMEOUT, and forgets it", async () => {
    const capped = waitPool(1, 200);
    try {
      capped.acquire();
      const waiting = capped.acquire() as Promise<UpstreamConnection>;
      const outcome = await Promise.race([waiting.then(() => "connection", (error: { code?: string }) => error.code), new Promise((resolve) => setTimeout(() => resolve("still waiting"), 10_000))]);
      expect(outcome).toBe("E_POOL_TIMEOUT");
      expect(capped.waiting).toBe(0);
    } finally {
      capped.close();
    }
  }, 20_000);

  it("does not hand a released connection to a request that was withdrawn: it goes idle for the next one", async () => {
    const capped = waitPool(1);
    try {
      const a = capped.acquire() as UpstreamConnection;
      const gone = capped.acquire() as Promise<UpstreamConnection>;
      let handed = false;
      void gone.then(() => (handed = true));
      capped.cancel(gone);
      expect(capped.waiting).toBe(0);
      capped.release(a);
      expect(capped.acquire()).toBe(a); // taken from the idle list at once, no wait
      await settle();
      expect(handed).toBe(false);
    } finally {
      capped.close();
    }
  });

  it("withdraws ten thousand abandoned waiters without holding them", () => {
    const capped = waitPool(1);
    try {
      capped.acquire();
      const pending = Array.from({ length: 10_000 }, () => capped.acquire() as Promise<UpstreamConnection>);
      expect(capped.waiting).toBe(10_000);
      for (const p of pending) capped.cancel(p);
      expect(capped.waiting).toBe(0);
    } finally {
      capped.close();
    }
  });
});
