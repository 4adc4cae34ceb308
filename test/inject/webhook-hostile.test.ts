import { connect, type Socket } from "node:net";
import { request } from "node:https";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { staticIdentity, type IdentitySnapshot } from "../../src/identity/source.ts";
import { startWebhookServer, type WebhookServer } from "../../src/inject/webhook-server.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";

/** Resolves when the socket is closed by the other side (or errors, e.g. a reset). */
function closed(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    socket.on("error", () => undefined);
    socket.once("close", () => resolve());
  });
}

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => resolve(socket));
    socket.once("error", reject);
  });
}

describe("admission webhook against hostile peers", () => {
  let pki: TestPki;
  const servers: WebhookServer[] = [];

  beforeAll(() => {
    pki = createTestPki();
  });

  afterAll(async () => {
    for (const server of servers) await server.close();
    pki?.cleanup();
  });

  const start = async (limits: { handshakeTimeoutMs?: number; maxConnections?: number; maxConnectionsPerAddress?: number }) => {
    const leaf = pki.issueLeaf({ spiffeId: `spiffe://${pki.trustDomain}/ns/meshward-system/sa/meshward-injector`, dnsNames: ["localhost"] });
    const snapshot = {
      svid: { spiffeId: leaf.spiffeId ?? "", certChainPem: leaf.chainPem, privateKey: leaf.key, notBefore: leaf.notBefore, notAfter: leaf.notAfter, serial: leaf.serial },
      bundle: { trustDomain: pki.trustDomain, rootsPem: pki.root.certPem, revokedSerials: new Set<string>() },
    } as unknown as IdentitySnapshot;
    const server = await startWebhookServer({
      listen: { host: "127.0.0.1", port: 0 },
      identity: staticIdentity(snapshot),
      inject: { image: "meshward:test", caAddress: "ca:8443", audience: "meshward" } as never,
      ownNamespace: "meshward-system",
      logger: pino({ level: "silent" }),
      ...limits,
    });
    servers.push(server);
    return { server, port: Number(server.address.split(":").pop()) };
  };

  const get = (port: number, path: string, body?: string): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const req = request(
        { host: "127.0.0.1", port, path, method: body === undefined ? "GET" : "POST", ca: pki.root.certPem, servername: "localhost", headers: body === undefined ? {} : { "content-type": "application/json" } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
        },
      );
      req.on("error", reject);
      req.end(body);
    });

  it("closes a connection that never sends a ClientHello once the handshake timeout passes", async () => {
    const { port } = await start({ handshakeTimeoutMs: 300 });
    const socket = await open(port);
    // Nothing is ever written: the server must close it (the test's own timeout is the only bound).
    await closed(socket);
    expect(socket.destroyed).toBe(true);
    // The server still serves real callers.
    expect((await get(port, "/healthz")).status).toBe(200);
  }, 30_000);

  it("resets connections over maxConnections on accept, before any TLS work", async () => {
    const { port } = await start({ handshakeTimeoutMs: 600_000, maxConnections: 1 });
    const holder = await open(port);
    const holderClosed = closed(holder);
    // Reset on accept (possibly before the client sees the connection as established).
    const extra = connect(port, "127.0.0.1");
    // The handshake timeout is 10 minutes: only the cap can close this one.
    await closed(extra);
    expect(extra.destroyed).toBe(true);
    holder.destroy();
    await holderClosed;
  }, 30_000);

  it("answers 400 to an AdmissionReview nested deeper than the guard allows, and keeps serving", async () => {
    const { port } = await start({});
    const deep = await get(port, "/mutate", "[".repeat(100_000));
    expect(deep.status).toBe(400);
    expect(JSON.parse(deep.body)).toMatchObject({ code: "E_ADMISSION_INVALID" });
    expect((await get(port, "/healthz")).status).toBe(200);
  }, 30_000);
});
