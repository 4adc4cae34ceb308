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
