import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { createServer, type Server, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { normalizeSerial } from "../../src/tls/verify.ts";
import { createMtlsAgent, httpsRequest } from "../../src/transport/index.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// A client that refuses a server must not have sent it anything first: the request line,
// headers and body can carry secrets. The server here is a plain node:tls server (not
// meshward) that records every byte it receives and whether the session was resumed.
const TD = "example.org";
const API = `spiffe://${TD}/ns/default/api`;

let pki: TestPki;
let client: ManualIdentity;
const servers: Server[] = [];
const logger = makeLogger();

async function recordingServer(spiffeId: string, maxVersion: "TLSv1.2" | "TLSv1.3" = "TLSv1.3"): Promise<{ port: number; received: string[]; resumed: boolean[]; serial: string }> {
  const leaf = pki.issueLeaf({ spiffeId });
  const received: string[] = [];
  const resumed: boolean[] = [];
  const server = createServer({ cert: readFileSync(leaf.chainPath), key: readFileSync(leaf.keyPath), requestCert: true, rejectUnauthorized: false, maxVersion }, (socket: TLSSocket) => {
    resumed.push(socket.isSessionReused());
    socket.on("error", () => undefined);
    socket.on("data", (data) => {
      received.push(data.toString());
      socket.end("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const serial = normalizeSerial(new X509Certificate(readFileSync(leaf.chainPath)).serialNumber);
  return { port: (server.address() as AddressInfo).port, received, resumed, serial };
}

beforeAll(() => {
  pki = createTestPki({ trustDomain: TD });
  client = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }), bundleOf([pki])));
});

afterAll(() => {
  for (const server of servers) server.close();
  pki?.cleanup();
});

describe("no request byte reaches a server the client refuses", () => {
  it("a server with another SPIFFE ID gets nothing (fresh handshakes)", async () => {
    const evil = await recordingServer(`spiffe://${TD}/ns/default/evil`);
    for (let i = 0; i < 3; i++) {
      await expect(httpsRequest(`https://127.0.0.1:${evil.port}/secret?token=abc`, { identity: client, expect: API, logger, method: "POST", body: "password=hunter2" })).rejects.toMatchObject({
        code: "E_SPIFFE_MISMATCH",
      });
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(evil.resumed).toEqual([]); // the client never finished a handshake with it
    expect(evil.received).toEqual([]);
  });

  it("the same over TLS 1.2, where the client's Finished precedes the server's", async () => {
    const evil = await recordingServer(`spiffe://${TD}/ns/default/evil`, "TLSv1.2");
    await expect(httpsRequest(`https://127.0.0.1:${evil.port}/secret?token=abc`, { identity: client, expect: API, logger, method: "POST", body: "password=hunter2" })).rejects.toMatchObject({
      code: "E_SPIFFE_MISMATCH",
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(evil.received).toEqual([]);
  });

  it("a server revoked after earlier calls gets nothing from the agent that holds its session", async () => {
    const api = await recordingServer(API);
    const agent = await createMtlsAgent({ identity: client, expect: API, logger });
    try {
      expect((await httpsRequest(`https://127.0.0.1:${api.port}/first`, { identity: client, expect: API, logger, agent })).status).toBe(200);
      // The server closes each connection, so the next call is a new connection offering the session.
      expect((await httpsRequest(`https://127.0.0.1:${api.port}/second`, { identity: client, expect: API, logger, agent })).status).toBe(200);
      expect(api.resumed).toEqual([false, true]);
      expect(api.received).toHaveLength(2);

      client.updateBundle(bundleOf([pki], new Set([api.serial])));
      await expect(httpsRequest(`https://127.0.0.1:${api.port}/third?secret=1`, { identity: client, expect: API, logger, agent, method: "POST", body: "password=hunter2" })).rejects.toMatchObject({
        code: "E_CERT_REVOKED",
      });
      expect(api.resumed).toEqual([false, true]); // refused before the server finished the handshake
      expect(api.received).toHaveLength(2);
    } finally {
      agent.destroy();
      client.updateBundle(bundleOf([pki]));
    }
  });
});
