/**
 * Found by review: an Upgrade request that was not joined — denied by the policy (403), answered
 * with something other than 101 by the app, or sent to an unknown app on the outbound port (404)
 * — left the caller's connection open with no timer: the HTTP/1 relay had let go of it, the
 * answer's FIN waited for the caller's, and it held a listener slot and a per-address slot
 * until limits.maxConnectionAge (on the outbound listener, for ever). The connection now closes
 * after the answer (sent with `connection: close`) even when the caller keeps its side open, and
 * an app that never answers an upgrade gets the caller a 504 after limits.idleTimeout.
 */
import { createServer, type Server } from "node:http";
import { connect as netConnect, type AddressInfo, type Socket } from "node:net";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { metricValue, startMeshCa, startTestSidecar, TD, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

const WEBSOCKET = (host: string, path = "/chat") =>
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;
const H2C = "GET /chat HTTP/1.1\r\nHost: server\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";

/** Waiting longer than this is a failure (the connection used to stay open for limits.maxConnectionAge). */
const GIVE_UP_MS = 20_000;

interface Outcome {
  /** The status line of the answer. */
  readonly status: string;
  readonly text: string;
  /** Whether the sidecar ended its side (FIN) after the answer. */
  readonly ended: boolean;
  /** The caller's socket, still open on its side: destroy it once done. */
  readonly socket: Socket;
}

/**
 * Sends `bytes` on a fresh connection and reads the answer until the sidecar ends its side. The
 * caller never ends its own (allowHalfOpen: no FIN in reply), as a client that keeps its
 * connection would: whether the sidecar lets go of the connection is seen on its listener.
 */
function exchange(open: () => Socket, bytes: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = open();
    let text = "";
    socket.on("error", () => undefined);
    socket.once("secureConnect", () => socket.write(bytes));
    socket.once("connect", () => {
      if (!("encrypted" in socket)) socket.write(bytes);
    });
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    const settle = (ended: boolean) => {
      clearTimeout(giveUp);
      resolve({ status: text.split("\r\n")[0]!, text, ended, socket });
    };
    const giveUp = setTimeout(() => settle(false), GIVE_UP_MS);
    socket.once("end", () => settle(true));
    socket.once("close", () => settle(true));
  });
}

/** Open connections of a sidecar's listener, as limits.maxConnections counts them. */
async function openOn(sidecar: TestSidecarWithApp, listener: string): Promise<number> {
  const text = await sidecar.metrics.text();
  // A listener the metrics do not name would read as 0 open connections: fail instead.
  if (!text.includes(`meshward_sidecar_listener_connections_active{listener="${listener}"}`)) throw new Error(`no listener ${listener} in the metrics`);
  return metricValue(text, "meshward_sidecar_listener_connections_active", { listener });
}

/** Waits until the listener holds no more than `count` connections: true, or false after GIVE_UP_MS. */
async function releasedTo(sidecar: TestSidecarWithApp, listener: string, count: number): Promise<boolean> {
  const deadline = Date.now() + GIVE_UP_MS;
  while (Date.now() < deadline) {
    if ((await openOn(sidecar, listener)) <= count) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

describe("an Upgrade request that is not joined closes its connection", () => {
  let ca: MeshCa;
  let app: Server;
  let server: TestSidecarWithApp;
  let client: TestSidecarWithApp;
  let caller: { cert: string; key: string };
  let evil: { cert: string; key: string };
  const seen: string[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    // Not a WebSocket server: 400 to everything, except /hang, never answered.
    app = createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers["x-forwarded-client-cert"] ?? "unverified"}`);
      if (req.url === "/hang") return;
      res.writeHead(400, { "content-type": "text/plain" });
      res.end("not a websocket endpoint\n");
    });
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    const policy = join(ca.dir, "upgrade-policy.yaml");
    writeFileSync(
      policy,
      `kind: Configuration\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: ${TD}\n    policies:\n      - appId: caller\n        namespace: default\n        trustDomain: ${TD}\n        defaultAction: allow\n`,
    );
    // maxConnectionAge stays at its default (1 h): what closes these connections is the fix.
    const limits = { idleTimeout: "1s", headersTimeout: "1s" };
    server = await startTestSidecar(ca, { appId: "server", app: `127.0.0.1:${(app.address() as AddressInfo).port}`, mode: "permissive", policy, outbound: "127.0.0.1:0", limits });
    client = await startTestSidecar(ca, { appId: "caller", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { server: `127.0.0.1:${server.addresses.inbound.port}` }, limits });
    caller = await ca.clientFiles("default", "caller");
    evil = await ca.clientFiles("default", "evil");
  }, 60_000);

  afterAll(async () => {
    for (const s of [client, server]) await s?.close();
    await new Promise<void>((resolve) => (app ? app.close(() => resolve()) : resolve()));
    await ca?.close();
  });

  // Honoured by tls.connect (the TLSSocket's own option), missing from its types.
  const HALF_OPEN = { allowHalfOpen: true } as object;
  const mtls = (who: { cert: string; key: string }) => () =>
    tlsConnect({ host: "127.0.0.1", port: server.addresses.inbound.port, cert: readFileSync(who.cert), key: readFileSync(who.key), ca: ca.bundlePem, checkServerIdentity: () => undefined, ALPNProtocols: ["http/1.1"], ...HALF_OPEN });
  const plain = (port: () => number) => () => netConnect({ host: "127.0.0.1", port: port(), allowHalfOpen: true });

  /**
   * The exchange on `open`, then: the sidecar ended its side after the answer, and let go of the
   * connection on `listener` (none left open there) while the caller still holds its own side.
   */
  const notJoined = async (sidecar: TestSidecarWithApp, listener: string, open: () => Socket, bytes: string): Promise<Outcome> => {
    const outcome = await exchange(open, bytes);
    try {
      expect(outcome.ended).toBe(true);
      expect(await releasedTo(sidecar, listener, 0)).toBe(true);
    } finally {
      outcome.socket.destroy();
    }
    return outcome;
  };

  it("inbound, mTLS caller allowed, WebSocket upgrade answered 400 by the app", async () => {
    const outcome = await notJoined(server, "inbound", mtls(caller), WEBSOCKET("server"));
    expect(outcome.status).toBe("HTTP/1.1 400 Bad Request");
    expect(outcome.text.toLowerCase()).toContain("connection: close");
  }, 60_000);

  it("inbound, mTLS caller allowed, h2c upgrade answered 400 by the app", async () => {
    const outcome = await notJoined(server, "inbound", mtls(caller), H2C);
    expect(outcome.status).toBe("HTTP/1.1 400 Bad Request");
  }, 60_000);

  it("inbound, mTLS caller denied by the policy: 403, the app never sees it", async () => {
    const before = seen.length;
    const outcome = await notJoined(server, "inbound", mtls(evil), WEBSOCKET("server"));
    expect(outcome.status).toBe("HTTP/1.1 403 Forbidden");
    expect(outcome.text).toContain("E_POLICY_DENIED");
    expect(seen.length).toBe(before);
  }, 60_000);

  it("inbound, PERMISSIVE plaintext caller denied by the default: 403, the app never sees it", async () => {
    const before = seen.length;
    const outcome = await notJoined(server, "inbound", plain(() => server.addresses.inbound.port), WEBSOCKET("server"));
    expect(outcome.status).toBe("HTTP/1.1 403 Forbidden");
    expect(seen.length).toBe(before);
  }, 60_000);

  it("inbound, an app that never answers the upgrade: 504 after idleTimeout", async () => {
    const outcome = await notJoined(server, "inbound", mtls(caller), WEBSOCKET("server", "/hang"));
    expect(outcome.status).toBe("HTTP/1.1 504 Gateway Timeout");
    expect(outcome.text).toContain("E_UPSTREAM_TIMEOUT");
  }, 60_000);

  it("outbound, an upgrade to an unknown app: 404", async () => {
    const outcome = await notJoined(server, "outbound", plain(() => server.addresses.outbound!.port), WEBSOCKET("127.0.0.1"));
    expect(outcome.status).toBe("HTTP/1.1 404 Not Found");
    expect(outcome.text).toContain("E_UNKNOWN_APP");
  }, 60_000);

  it("outbound to a peer, the app answers 400 through both sidecars: both let go", async () => {
    const outcome = await notJoined(client, "outbound", plain(() => client.addresses.outbound!.port), WEBSOCKET("server"));
    expect(outcome.status).toBe("HTTP/1.1 400 Bad Request");
    expect(seen.at(-1)).toContain(`URI=spiffe://${TD}/ns/default/caller`);
    expect(await releasedTo(server, "inbound", 0)).toBe(true);
  }, 60_000);
});
