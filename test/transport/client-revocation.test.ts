import { X509Certificate } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { ClientHttp2Session } from "node:http2";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PeerPool } from "../../src/proxy/peers.ts";
import { normalizeSerial } from "../../src/tls/verify.ts";
import { connectHttp2, connectMtls, createHttp2Server, createHttpsServer, createMtlsAgent, createMtlsServer, httpsRequest } from "../../src/transport/index.ts";
import { createTestPki, manualIdentitySource, type TestPki } from "../helpers/test-pki.ts";

// Found by review (stop 32): a client kept an open connection to a server whose certificate was
// revoked after the handshake. New connections were refused, but the pooled HTTPS connection,
// the HTTP/2 session and the sidecar's pooled peer connection went on carrying requests (and
// their credentials) to the revoked server until its certificate expired, up to 24 h. Servers
// already closed connections from revoked callers on a CRL update; clients now do the same.
// The servers here never learn of the revocation, as a thief holding the key would not.

const TD = "client-revocation.test";
const API = `spiffe://${TD}/ns/default/api`;
const logger = { info() {}, warn() {}, error() {} };

let pki: TestPki;
const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});
beforeAll(async () => {
  pki = await createTestPki({ trustDomain: TD });
});
afterAll(() => undefined);

function setUp() {
  const client = manualIdentitySource(pki.snapshot({ spiffeId: `spiffe://${TD}/ns/default/web` }));
  const server = pki.snapshot({ spiffeId: API });
  const serial = normalizeSerial(new X509Certificate(server.svid.certChainPem).serialNumber);
  const revoke = () => client.updateBundle(pki.bundle({ revokedSerials: [serial] }));
  return { client, serverIdentity: manualIdentitySource(server), revoke };
}

const listen = async <S extends { listen(port: number, host: string, cb: () => void): unknown; address(): unknown }>(server: S) => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
};

const closed = (socket: { once(event: "close", cb: () => void): unknown; destroyed: boolean }) =>
  socket.destroyed ? Promise.resolve() : new Promise<void>((resolve) => socket.once("close", () => resolve()));

function h2Get(session: ClientHttp2Session, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":path": path });
    let body = "";
    stream.on("data", (d: Buffer) => (body += d.toString()));
    stream.on("end", () => resolve(body));
    stream.on("error", reject);
  });
}

describe("clients close open connections to a server whose certificate is revoked", () => {
  it("httpsRequest: the pooled connection closes, and the next request is refused E_CERT_REVOKED instead of reaching the server", async () => {
    const { client, serverIdentity, revoke } = setUp();
    const seen: string[] = [];
    const server = await createHttpsServer({ identity: serverIdentity, logger }, (req, res) => (seen.push(req.url ?? ""), res.end("ok")));
    closers.push(() => server.meshward.close());
    const port = await listen(server);
    const agent = await createMtlsAgent({ identity: client, expect: API, logger });
    closers.push(() => agent.destroy());
    const url = (path: string) => `https://127.0.0.1:${port}${path}`;
    expect((await httpsRequest(url("/before"), { identity: client, expect: API, agent, logger })).text()).toBe("ok");
    revoke();
    await expect(httpsRequest(url("/secret"), { identity: client, expect: API, agent, logger, method: "POST", body: "password=hunter2" })).rejects.toMatchObject({ code: "E_CERT_REVOKED" });
    expect(seen).toEqual(["/before"]);
  });

  it("connectHttp2: the session closes; its streams do not reach the server", async () => {
    const { client, serverIdentity, revoke } = setUp();
    const seen: string[] = [];
    const server = await createHttp2Server({ identity: serverIdentity, logger }, (req, res) => (seen.push(req.url), res.end("ok")));
    closers.push(() => server.meshward.close());
    const port = await listen(server);
    const session = await connectHttp2(`https://127.0.0.1:${port}`, { identity: client, expect: API, logger });
    session.on("error", () => undefined);
    closers.push(() => session.destroy());
    expect(await h2Get(session, "/before")).toBe("ok");
    revoke();
    await closed(session);
    await expect(h2Get(session, "/secret")).rejects.toThrow();
    expect(seen).toEqual(["/before"]);
  });

  it("connectMtls: the socket is destroyed with E_CERT_REVOKED", async () => {
    const { client, serverIdentity, revoke } = setUp();
    const server = await createMtlsServer({ identity: serverIdentity, logger }, (socket) => socket.pipe(socket));
    closers.push(() => server.meshward.close());
    const port = await listen(server);
    const socket = await connectMtls({ host: "127.0.0.1", port, identity: client, expect: API, logger });
    const failure = new Promise<unknown>((resolve) => socket.once("error", resolve));
    closers.push(() => socket.destroy());
    revoke();
    expect(await failure).toMatchObject({ code: "E_CERT_REVOKED" });
    expect(socket.destroyed).toBe(true);
  });

  it("the sidecar's outbound pool: the HTTP/2 session to a revoked peer closes, and the next request is refused", async () => {
    const { client, serverIdentity, revoke } = setUp();
    const seen: string[] = [];
    const server = await createHttp2Server({ identity: serverIdentity, logger }, (req, res) => (seen.push(req.url), res.end("ok")));
    closers.push(() => server.meshward.close());
    const port = await listen(server);
    const pool = new PeerPool(client, logger as never);
    closers.push(() => pool.close());
    const target = { appId: "api", namespace: "default", host: "127.0.0.1", port, expectedId: API };
    const first = await pool.h2(target);
    expect(await h2Get(first, "/before")).toBe("ok");
    revoke();
    await closed(first);
    await expect(pool.h2(target).then((session) => h2Get(session, "/secret"))).rejects.toMatchObject({ code: "E_CERT_REVOKED" });
    expect(seen).toEqual(["/before"]);
  });
});
