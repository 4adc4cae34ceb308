/**
 * Found by review: TCP tunnels (protocol: tcp inbound, tcpUpstreams outbound) did not pass a
 * half-close on. A client that writes its request and shuts down its sending side (FIN) and then
 * reads the reply (`nc -N`, whois, an HTTP/1.0 client reading to EOF) got nothing: the tunnel tore
 * down both directions when the FIN arrived. Now the FIN is passed on and the other direction
 * keeps flowing until it ends too, both ways (the caller's FIN first, or the app's), through the
 * inbound alone and through tcpUpstreams → mTLS → inbound; a half-closed tunnel still ends at
 * limits.idleTimeout.
 */
import { readFileSync } from "node:fs";
import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

/** Waiting longer than this for an event is a failure. */
const GIVE_UP_MS = 20_000;
// Honoured by tls.connect (the TLSSocket's own option), missing from its types.
const HALF_OPEN = { allowHalfOpen: true } as object;

/**
 * The app, chosen by the caller's first bytes:
 * - "REPLY…": reads to EOF, then answers `got N bytes` and ends (a reply after the request's end);
 * - "BANNER": answers "banner" and ends its sending side at once, then reads on to EOF and
 *   records what came after its FIN;
 * - "SILENT": reads to EOF and then neither answers nor ends.
 */
function startApp(): Promise<{ server: Server; port: number; afterFin: string[]; connections: Set<Socket> }> {
  const afterFin: string[] = [];
  const connections = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (socket: Socket) => {
    connections.add(socket);
    socket.once("close", () => connections.delete(socket));
    socket.on("error", () => undefined);
    let received = "";
    let mode: string | undefined;
    let sinceFin = "";
    socket.on("data", (d: Buffer) => {
      received += d.toString("latin1");
      if (mode === "BANNER") sinceFin += d.toString("latin1");
      if (mode === undefined && received.length >= 6) {
        mode = received.slice(0, 6);
        if (mode === "BANNER") {
          sinceFin = received.slice(6);
          socket.end("banner\n");
        }
      }
    });
    socket.on("end", () => {
      if (mode === "REPLY:") socket.end(`got ${received.length} bytes\n`);
      else if (mode === "BANNER") afterFin.push(sinceFin);
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as AddressInfo).port, afterFin, connections })));
}

/** Everything the caller reads until the tunnel closes; "open" if it did not within GIVE_UP_MS. */
function readToClose(socket: Socket): Promise<{ text: string; end: "closed" | "open" }> {
  return new Promise((resolve) => {
    let text = "";
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    const giveUp = setTimeout(() => resolve({ text, end: "open" }), GIVE_UP_MS);
    socket.once("close", () => {
      clearTimeout(giveUp);
      resolve({ text, end: "closed" });
    });
  });
}

describe("TCP tunnels pass a half-close on", () => {
  let ca: MeshCa;
  let app: Awaited<ReturnType<typeof startApp>>;
  let server: TestSidecarWithApp;
  let client: TestSidecarWithApp;
  let caller: { cert: string; key: string };
  const sockets: Socket[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startApp();
    const limits = { idleTimeout: "1s" };
    server = await startTestSidecar(ca, { appId: "server", app: `127.0.0.1:${app.port}`, protocol: "tcp", limits });
    client = await startTestSidecar(ca, { appId: "caller", app: "127.0.0.1:1", peers: { server: `127.0.0.1:${server.addresses.inbound.port}` }, tcpUpstreams: { server: "127.0.0.1:0" }, limits });
    caller = await ca.clientFiles("default", "caller");
  }, 60_000);

  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    for (const s of [client, server]) await s?.close();
    for (const socket of app?.connections ?? []) socket.destroy();
    await new Promise<void>((resolve) => (app ? app.server.close(() => resolve()) : resolve()));
    await ca?.close();
  });

  /** A caller through the inbound (mTLS) or through the outbound's tcpUpstreams port (plaintext). */
  const paths: Record<string, () => Promise<Socket>> = {
    "inbound (mTLS caller)": () =>
      new Promise((resolve) => {
        const socket = tlsConnect({ host: "127.0.0.1", port: server.addresses.inbound.port, cert: readFileSync(caller.cert), key: readFileSync(caller.key), ca: ca.bundlePem, checkServerIdentity: () => undefined, ...HALF_OPEN }, () => resolve(socket));
        socket.on("error", () => undefined);
        sockets.push(socket);
      }),
    "tcpUpstreams → mTLS → inbound": () =>
      new Promise((resolve) => {
        const socket = netConnect({ host: "127.0.0.1", port: client.addresses.tcp.server!.port, allowHalfOpen: true }, () => resolve(socket));
        socket.on("error", () => undefined);
        sockets.push(socket);
      }),
  };

  for (const [path, open] of Object.entries(paths)) {
    it(`${path}: the caller's FIN reaches the app, and the app's reply the caller`, async () => {
      const socket = await open();
      const read = readToClose(socket);
      socket.write("REPLY:hello");
      socket.end();
      const outcome = await read;
      expect(outcome.text).toBe("got 11 bytes\n");
      expect(outcome.end).toBe("closed");
    }, 60_000);

    it(`${path}: the app's FIN reaches the caller, and what the caller sends after it the app`, async () => {
      const socket = await open();
      const before = app.afterFin.length;
      let text = "";
      socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
      const ended = new Promise<boolean>((resolve) => {
        const giveUp = setTimeout(() => resolve(false), GIVE_UP_MS);
        socket.once("end", () => {
          clearTimeout(giveUp);
          resolve(true);
        });
      });
      const closed = readToClose(socket);
      socket.write("BANNER");
      expect(await ended).toBe(true);
      expect(text).toBe("banner\n");
      // Half-closed by the app: the caller's way is still open.
      socket.write("after the app's FIN");
      socket.end();
      expect((await closed).end).toBe("closed");
      const deadline = Date.now() + GIVE_UP_MS;
      while (app.afterFin.length === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(app.afterFin.at(-1)).toBe("after the app's FIN");
    }, 60_000);

    it(`${path}: a half-closed tunnel the app never answers still ends at idleTimeout`, async () => {
      const socket = await open();
      const read = readToClose(socket);
      socket.write("SILENT");
      socket.end();
      const outcome = await read;
      expect(outcome.text).toBe("");
      expect(outcome.end).toBe("closed");
    }, 60_000);
  }

  it("no tunnel is left open on either sidecar", async () => {
    const open = async (sidecar: TestSidecarWithApp, listener: string) => metricValue(await sidecar.metrics.text(), "meshward_sidecar_listener_connections_active", { listener });
    const deadline = Date.now() + GIVE_UP_MS;
    while (Date.now() < deadline && (await open(server, "inbound")) + (await open(client, "tcp/server")) > 0) await new Promise((r) => setTimeout(r, 100));
    expect(await open(server, "inbound")).toBe(0);
    expect(await open(client, "tcp/server")).toBe(0);
  }, 30_000);
});
