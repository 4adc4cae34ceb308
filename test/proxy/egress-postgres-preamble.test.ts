import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { TLSSocket } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startEgress, type Egress } from "../../src/proxy/egress.ts";
import { quietTlsLogger } from "../backends/fixtures.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";
import { waitFor } from "../helpers/wait.ts";

// Found by review: a PostgreSQL egress connection whose app never sent its startup message was
// never closed. The connect deadline ended at the backend's verified handshake, the relay waits
// for the app's startup message before piping, its idle timer is set only once piping starts,
// and nothing handled the backend closing its side before then: after 6 s (connectTimeout 1 s,
// idleTimeout 2 s) 5 of 5 relays were open, each holding a verified TLS connection to the
// backend. The app's preamble must now be done within connectTimeoutMs, and the backend closing
// before the relay started closes the app's connection. The backend is a raw stand-in: it
// answers the SSLRequest 'S', completes TLS and records what it then receives.
describe("postgres egress: an app that never finishes its preamble does not hold a backend connection", () => {
  let pki: TestPki;
  let backend: Server;
  let closeAfterHandshake = false;
  /** The backend's verified TLS connections still open, and the bytes each received. */
  const backendTls = new Set<TLSSocket>();
  const backendRaw = new Set<Socket>();
  let backendReceived = "";
  let verified = 0;
  /** The backend's TLS connections that saw the egress end its side (close_notify + FIN). */
  let backendEnded = 0;
  const egresses: Egress[] = [];
  const apps: Socket[] = [];

  beforeAll(async () => {
    pki = createTestPki({ name: "egress-preamble" });
    const leaf = pki.issueLeaf({ dnsNames: ["pg.local"] });
    backend = createServer((socket) => {
      backendRaw.add(socket);
      socket.once("close", () => backendRaw.delete(socket));
      socket.on("error", () => undefined);
      socket.once("data", () => {
        socket.write("S");
        const tls = new TLSSocket(socket, { isServer: true, cert: leaf.chainPem, key: leaf.keyPem });
        tls.on("error", () => undefined);
        tls.on("data", (d: Buffer) => (backendReceived += d.toString("latin1")));
        tls.once("end", () => {
          backendEnded++;
          tls.end();
        });
        tls.once("secure", () => {
          verified++;
          backendTls.add(tls);
          tls.once("close", () => backendTls.delete(tls));
          if (closeAfterHandshake) tls.end();
        });
      });
    });
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
  });
  afterEach(async () => {
    for (const app of apps.splice(0)) app.destroy();
    for (const egress of egresses.splice(0)) await egress.close();
    for (const socket of backendRaw) socket.destroy();
    closeAfterHandshake = false;
    backendReceived = "";
    verified = 0;
    backendEnded = 0;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => (backend ? backend.close(() => resolve()) : resolve()));
    pki?.cleanup();
  });

  const start = async (connectTimeoutMs: number): Promise<Egress> => {
    const egress = await startEgress(
      { listen: "127.0.0.1:0", backend: `127.0.0.1:${(backend.address() as AddressInfo).port}`, serverName: "pg.local", caFile: pki.rootPath, protocol: "postgres", connectTimeoutMs, idleTimeoutMs: 60_000, drainTimeoutMs: 1000 },
      { logger: quietTlsLogger },
    );
    egresses.push(egress);
    return egress;
  };
  /** App connections that send nothing; each resolves `closed` when the egress closes it. */
  const connectApps = (egress: Egress, n: number) =>
    Array.from({ length: n }, () => {
      const socket = netConnect({ host: "127.0.0.1", port: Number(egress.address.split(":").pop()) });
      socket.on("error", () => undefined);
      socket.resume();
      apps.push(socket);
      return new Promise<"closed">((resolve) => socket.once("close", () => resolve("closed")));
    });
  const within = <T>(promise: Promise<T>, ms: number) => Promise.race([promise, new Promise<"open">((resolve) => setTimeout(() => resolve("open"), ms))]);

  it("closes the app's connection and the backend's when the startup message does not come within connectTimeoutMs", async () => {
    // 3 s: the backend must verify all five TLS connections before the deadline, which a machine
    // busy with other test files (two cores) did not always manage in 1 s.
    const egress = await start(3000);
    const closed = connectApps(egress, 5);
    await waitFor("the backend to verify 5 connections", () => verified === 5);
    expect(await within(Promise.all(closed), 15_000)).not.toBe("open");
    await waitFor("the egress to hold no relay", () => egress.stats().active === 0);
    await waitFor("the backend's TLS connections to close", () => backendTls.size === 0);
  }, 30_000);

  it("closes the app's connection when the backend closes its verified connection before the startup message", async () => {
    closeAfterHandshake = true;
    const egress = await start(60_000); // the preamble deadline is not what closes it here
    const closed = connectApps(egress, 3);
    expect(await within(Promise.all(closed), 15_000)).not.toBe("open");
    await waitFor("the egress to hold no relay", () => egress.stats().active === 0);
  }, 30_000);

  // Found by review (egress, MEDIUM-1): a CancelRequest is written with the FIN right behind it
  // (tokio-postgres: write, flush, shutdown), long before the backend's TLS handshake ends. The
  // egress cut the relay at the FIN and the cancel never reached the backend.
  it("a complete preamble followed at once by the app's FIN is still sent to the backend, then the backend's side is ended", async () => {
    const egress = await start(10_000);
    const cancel = Buffer.alloc(16);
    cancel.writeInt32BE(16, 0);
    cancel.writeInt32BE(80877102, 4);
    cancel.writeInt32BE(4242, 8);
    cancel.writeInt32BE(0x01020304, 12);
    const app = netConnect({ host: "127.0.0.1", port: Number(egress.address.split(":").pop()) }, () => app.end(cancel));
    app.on("error", () => undefined);
    app.resume();
    apps.push(app);
    const closed = new Promise<"closed">((resolve) => app.once("close", () => resolve("closed")));
    await waitFor("the backend to see the egress end its side", () => backendEnded === 1);
    expect(Buffer.from(backendReceived, "latin1").equals(cancel)).toBe(true);
    expect(await within(closed, 15_000)).toBe("closed"); // the backend ended its side: so does the app's
    expect(egress.stats()).toMatchObject({ established: 1, failed: {} });
  }, 30_000);

  it("an app that half-closes in the middle of its preamble is still cut, and nothing reaches the backend", async () => {
    const egress = await start(10_000);
    const app = netConnect({ host: "127.0.0.1", port: Number(egress.address.split(":").pop()) }, () => app.end(Buffer.from([0, 0, 0, 16])));
    app.on("error", () => undefined);
    app.resume();
    apps.push(app);
    expect(await within(new Promise<"closed">((resolve) => app.once("close", () => resolve("closed"))), 15_000)).toBe("closed");
    await waitFor("the egress to hold no relay", () => egress.stats().active === 0);
    await waitFor("the backend's TLS connections to close", () => backendTls.size === 0);
    expect(backendReceived).toBe("");
  }, 30_000);

  it("relays an app that sends its startup message in time", async () => {
    const egress = await start(5000);
    const app = netConnect({ host: "127.0.0.1", port: Number(egress.address.split(":").pop()) });
    app.on("error", () => undefined);
    apps.push(app);
    // StartupMessage: length, protocol 3.0, user=app, terminator.
    const params = Buffer.from("user\0app\0\0", "latin1");
    const startup = Buffer.alloc(8 + params.length);
    startup.writeInt32BE(startup.length, 0);
    startup.writeInt32BE(196608, 4);
    params.copy(startup, 8);
    app.write(startup);
    await waitFor("the backend to receive the startup message", () => backendReceived.includes("user\0app\0"));
    expect(app.destroyed).toBe(false);
    expect(egress.stats().established).toBe(1);
  }, 30_000);
});
