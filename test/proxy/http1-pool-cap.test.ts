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
