import { once } from "node:events";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpsServer, createMtlsAgent, httpsRequest } from "../../src/transport/index.ts";
import type { MtlsHttpsServer } from "../../src/transport/index.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";
import type { TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// A server closes a kept-alive connection (idle timeout, age cap, a root leaving the bundle) just
// as the client writes its next request on it. Here the server destroys the connection when that
// request's bytes arrive, without answering: the race made deterministic.
const TD = "example.org";
const SERVER_ID = `spiffe://${TD}/ns/default/api`;
const logger = makeLogger();

let pki: TestPki;
let server: MtlsHttpsServer;
let url: string;
let client: ManualIdentity;
let served = 0;
let connections = 0;
const dropNextRequest = new Set<TLSSocket>();

beforeAll(async () => {
  pki = createTestPki({ trustDomain: TD });
  client = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }), bundleOf([pki])));
  const serverIdentity = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([pki])));
  server = await createHttpsServer({ identity: serverIdentity, logger }, (req, res) => {
    const socket = req.socket as TLSSocket;
    // The dropped request is still parsed (the same 'data' event), on a destroyed socket.
    if (socket.destroyed) return;
    served += 1;
    res.end(`${req.method} ${served}`, () => {
      // The next request on this connection is dropped as it arrives.
      socket.prependOnceListener("data", () => socket.destroy());
    });
  });
  server.on("secureConnection", () => void connections++);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});
afterAll(async () => {
  await server?.meshward.close();
  pki?.cleanup();
});

describe("a request on a kept-alive connection the server closes as it arrives", () => {
  it("an idempotent request is sent once more on a new connection and succeeds", async () => {
    const agent = await createMtlsAgent({ identity: client, expect: SERVER_ID, logger });
    try {
      expect((await httpsRequest(url, { identity: client, expect: SERVER_ID, logger, agent })).status).toBe(200);
      const before = served;
      const second = await httpsRequest(url, { identity: client, expect: SERVER_ID, logger, agent, method: "PUT", body: "x" });
      expect(second.status).toBe(200);
      expect(served).toBe(before + 1);
    } finally {
      agent.destroy();
    }
  });

  it("two pooled connections closed together: the request moves on to a new connection", async () => {
    // Both connections are dropped when the next request arrives, as when the server closed two
    // idle connections in one go: the pool hands out the second before its close is read.
    const agent = await createMtlsAgent({ identity: client, expect: SERVER_ID, logger });
    try {
      const get = () => httpsRequest(url, { identity: client, expect: SERVER_ID, logger, agent });
      const pair = await Promise.all([get(), get()]);
      expect(pair.map((r) => r.status)).toEqual([200, 200]);
      expect(Object.values(agent.freeSockets).flat()).toHaveLength(2);
      const before = served;
      const connectionsBefore = connections;
      expect((await get()).status).toBe(200);
      expect(served).toBe(before + 1);
      expect(connections).toBe(connectionsBefore + 1);
    } finally {
      agent.destroy();
    }
  });

  it("a POST is not sent again: the caller gets the error", async () => {
    const agent = await createMtlsAgent({ identity: client, expect: SERVER_ID, logger });
    try {
      expect((await httpsRequest(url, { identity: client, expect: SERVER_ID, logger, agent })).status).toBe(200);
      const before = served;
      await expect(httpsRequest(url, { identity: client, expect: SERVER_ID, logger, agent, method: "POST", body: "x" })).rejects.toMatchObject({ code: "ECONNRESET" });
      expect(served).toBe(before);
    } finally {
      agent.destroy();
    }
  });
});

describe("an idle pooled connection and the server's Keep-Alive timeout", () => {
  it("the client closes it before the server's announced timeout, so no request meets the server's close", async () => {
    // Node's agent ignores `Keep-Alive: timeout=N` unless it has a timeout of its own; the
    // MtlsAgent closes an idle connection before N. The server here announces timeout=3 (at 1, Node itself does not keep the connection).
    const serverIdentity = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([pki])));
    const idleServer = await createHttpsServer({ identity: serverIdentity, logger, keepAliveTimeoutMs: 3_000 }, (_req, res) => res.end("ok"));
    const closed = new Promise<string>((resolve) => {
      idleServer.on("secureConnection", (socket: TLSSocket) => {
        // Which side ended the idle connection: the client's FIN ('end') or the server's own idle timer.
        socket.once("timeout", () => resolve("server timeout"));
        socket.once("end", () => resolve("client closed"));
      });
    });
    await new Promise<void>((r) => idleServer.listen(0, "127.0.0.1", r));
    const agent = await createMtlsAgent({ identity: client, expect: SERVER_ID, logger });
    try {
      const res = await httpsRequest(`https://127.0.0.1:${(idleServer.address() as AddressInfo).port}/`, { identity: client, expect: SERVER_ID, logger, agent });
      expect(res.headers["keep-alive"]).toBe("timeout=3");
      expect(await closed).toBe("client closed");
      // The server may read the close before the client's socket has emitted 'close' and left the
      // pool: one still in the pool has not emitted it yet.
      await Promise.all(Object.values(agent.freeSockets).flat().map((socket) => once(socket!, "close")));
      expect(Object.values(agent.freeSockets).flat()).toHaveLength(0);
    } finally {
      agent.destroy();
      await idleServer.meshward.close();
    }
  });
});
