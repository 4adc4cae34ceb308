import { connect as netConnect } from "node:net";
import type { Socket } from "node:net";
import { readFileSync } from "node:fs";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import type { CaIdentitySource } from "../../src/identity/ca-source.ts";
import { startEgress, type Egress, type EgressEntry } from "../../src/proxy/egress.ts";
import { createMetrics, type Metrics } from "../../src/telemetry/metrics.ts";
import { createMtlsServer, type MtlsServer } from "../../src/transport/index.ts";
import { foreignIdentity, quietTlsLogger, startMeshCa, type ForeignIdentity, type IdentityFiles, type MeshCa } from "../backends/fixtures.ts";
import { plainPing } from "../backends/resp.ts";
import { opensslServerRenegotiating } from "../helpers/openssl-renegotiate.ts";
import { freePort, startRedisTls, type RunningRedis } from "../helpers/redis.ts";
import { manualIdentitySource } from "../helpers/test-pki.ts";
import { waitFor } from "../helpers/wait.ts";
import { metricValue } from "./fixtures.ts";

// Egress (TLS origination) against a real redis-server (tls-auth-clients yes) and an SDK mTLS
// server that reports which client certificate it saw; all certificates from a real meshward CA.
const TD = "egress.test";
let ca: MeshCa | undefined;
let redis: RunningRedis | undefined;
let app: CaIdentitySource;
let redisFiles: IdentityFiles;
let foreign: ForeignIdentity;
let echo: MtlsServer | undefined;
let echoPort: number;
let echoSerial: string;
const egresses: Egress[] = [];

beforeAll(async () => {
  ca = await startMeshCa(TD);
  redisFiles = await ca.sink("redis", await ca.identity("redis", { dnsNames: ["localhost"] }));
  redis = await startRedisTls({ certFile: redisFiles.cert, keyFile: redisFiles.key, caFile: redisFiles.bundle });
  app = await ca.identity("app");
  foreign = await foreignIdentity(ca.dir, TD, "redis", ["localhost"]);
  // Answers "<caller SPIFFE ID> <caller serial>\n", upper-cases what it gets, says BYE when the caller half-closes.
  const echoIdentity = await ca.identity("echo", { dnsNames: ["localhost"] });
  echoSerial = echoIdentity.current()!.svid.serial;
  echo = await createMtlsServer({ identity: echoIdentity, logger: quietTlsLogger }, (socket, peer) => {
    socket.setEncoding("utf8");
    socket.write(`${peer.spiffeId} ${peer.serial}\n`);
    socket.on("data", (text: string) => socket.write(text.toUpperCase()));
    socket.on("end", () => socket.end("BYE\n"));
    socket.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => echo!.listen(0, "127.0.0.1", resolve));
  echoPort = (echo.address() as { port: number }).port;
});

afterAll(async () => {
  for (const egress of egresses) await egress.close().catch(() => undefined);
  await echo?.meshward.close();
  await redis?.stop();
  await ca?.close();
});

async function egress(entry: Omit<EgressEntry, "listen"> & { listen?: string }, identity: CaIdentitySource | ReturnType<typeof manualIdentitySource> | undefined = app, metrics?: Metrics): Promise<Egress> {
  const started = await startEgress(
    { listen: "127.0.0.1:0", ...entry },
    { ...(identity !== undefined ? { identity } : {}), logger: quietTlsLogger, ...(metrics ? { metrics } : {}) },
  );
  egresses.push(started);
  return started;
}

function port(e: Egress): number {
  return Number(e.address.split(":").pop());
}

/** Connects in plaintext, sends `send`, half-closes if asked, collects everything until close. */
function converse(p: number, send: string, halfClose = true): Promise<string> {
  return new Promise((resolve) => {
    const socket: Socket = netConnect({ host: "127.0.0.1", port: p });
    let text = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => (text += chunk));
    socket.on("error", () => undefined);
    socket.on("close", () => resolve(text));
    socket.write(send);
    if (halfClose) socket.end();
  });
}

describe("egress to Redis over TLS (real redis-server)", () => {
  it("turns a plaintext PING into mTLS with the workload identity: +PONG, counted", async () => {
    const metrics = createMetrics();
    const e = await egress({ backend: `127.0.0.1:${redis!.port}`, serverName: "localhost", mtls: true }, app, metrics);
    expect(await plainPing("127.0.0.1", port(e))).toEqual({ reply: "+PONG", error: undefined });
    expect(e.stats().established).toBe(1);
    const text = await metrics.text();
    expect(text).toContain(`meshward_egress_connections_total{backend="127.0.0.1:${redis!.port}",result="ok"} 1`);
  });

  it("verifies Redis by SPIFFE ID when expectSpiffeId is set, and refuses the wrong one", async () => {
    const right = await egress({ backend: `127.0.0.1:${redis!.port}`, mtls: true, expectSpiffeId: `spiffe://${TD}/ns/backends/redis` });
    expect(await plainPing("127.0.0.1", port(right))).toEqual({ reply: "+PONG", error: undefined });
    const metrics = createMetrics();
    const wrong = await egress({ backend: `127.0.0.1:${redis!.port}`, mtls: true, expectSpiffeId: `spiffe://${TD}/ns/backends/cache` }, app, metrics);
    const result = await plainPing("127.0.0.1", port(wrong));
    expect(result.reply).toBeUndefined();
    expect(wrong.stats()).toMatchObject({ established: 0, failed: { tls_failed: 1 } });
    expect(await metrics.text()).toContain('meshward_tls_handshake_failures_total{direction="outbound",reason="spiffe_mismatch"} 1');
  });

  it("refuses Redis when its certificate does not carry serverName", async () => {
    const e = await egress({ backend: `127.0.0.1:${redis!.port}`, serverName: "cache.example.org", mtls: true });
    expect((await plainPing("127.0.0.1", port(e))).reply).toBeUndefined();
    expect(e.stats().failed).toEqual({ tls_failed: 1 });
  });

  it("refuses Redis when its certificate does not chain to caFile (another CA's roots)", async () => {
    const e = await egress({ backend: `127.0.0.1:${redis!.port}`, serverName: "localhost", mtls: true, caFile: foreign.files.bundle });
    expect((await plainPing("127.0.0.1", port(e))).reply).toBeUndefined();
    expect(e.stats().failed).toEqual({ tls_failed: 1 });
  });

  it("without mtls Redis refuses the connection (tls-auth-clients yes): the app gets no PONG", async () => {
    const e = await egress({ backend: `127.0.0.1:${redis!.port}`, serverName: "localhost", caFile: redisFiles.bundle }, undefined);
    expect((await plainPing("127.0.0.1", port(e))).reply).toBeUndefined();
  });

  it("counts an unreachable backend as connect_failed and closes the app connection", async () => {
    const closedPort = await freePort(); // bound and released: nothing listens there
    const e = await egress({ backend: `127.0.0.1:${closedPort}`, serverName: "localhost", mtls: true });
    expect(await converse(port(e), "hello")).toBe("");
    expect(e.stats().failed).toEqual({ connect_failed: 1 });
  });
});

// A backend that renegotiates mid-connection (TLS 1.2 HelloRequest, here with a client-certificate
// request: s_server's "R") could present or ask for other certificates than the ones checked at
// the handshake. Egress refuses it like Envoy's upstream default: UpstreamTlsContext's
// `allow_renegotiation` ("If true, server-initiated TLS renegotiation will be allowed", default
// false) in envoyproxy/envoy api/envoy/extensions/transport_sockets/tls/v3/tls.proto.
describe("egress refuses a backend that renegotiates (real openssl s_server, TLS 1.2)", () => {
  for (const mtls of [false, true]) {
    it(`${mtls ? "mTLS" : "server-authenticated TLS"}: the backend's renegotiation is refused and the app connection closes without the backend's reply`, async () => {
      const backend = await opensslServerRenegotiating(redisFiles.cert, redisFiles.key, ["-cert_chain", redisFiles.cert]);
      let appSocket: Socket | undefined;
      try {
        const warnings: string[] = [];
        const e = await startEgress(
          { listen: "127.0.0.1:0", backend: `127.0.0.1:${backend.port}`, serverName: "localhost", mtls, caFile: redisFiles.bundle },
          { ...(mtls ? { identity: app } : {}), logger: { ...quietTlsLogger, warn: (message: string) => warnings.push(message) } },
        );
        egresses.push(e);
        appSocket = netConnect({ host: "127.0.0.1", port: port(e) });
        let text = "";
        let closed = false;
        appSocket.setEncoding("utf8");
        appSocket.on("data", (chunk: string) => (text += chunk));
        appSocket.on("error", () => undefined);
        appSocket.on("close", () => (closed = true));
        appSocket.write("hello-before\n");
        const { refusedByClient } = await backend.renegotiateThenReply("hello-before", "reply-after-renegotiation\n");
        // Stops at whichever comes first, so that a client that renegotiated fails here, not by a timeout.
        await waitFor("the app connection to close (or to get the reply)", () => closed || text.includes("reply-after-renegotiation"), 10_000, 20);
        expect(text).toBe("");
        expect(closed).toBe(true);
        expect(refusedByClient).toBe(true);
        expect(backend.output()).toContain("SSL3 alert read:warning:no renegotiation");
        expect(e.stats().established).toBe(1); // refused mid-connection, after a verified handshake
        expect(e.stats().failed).toEqual({});
        // The one line that says why the connection closed.
        expect(warnings).toEqual([expect.stringMatching(/backend connection closed: the server's TLS connection failed after the handshake \(.*alert handshake failure.*\); meshward refuses TLS renegotiation, which the server may have asked for/)]);
      } finally {
        appSocket?.destroy();
        await backend.stop();
      }
    });
  }

  it("control: the same s_server flow against a node:tls client without SSL_OP_NO_RENEGOTIATION renegotiates and gets the reply", async () => {
    const backend = await opensslServerRenegotiating(redisFiles.cert, redisFiles.key, ["-cert_chain", redisFiles.cert]);
    const socket = tlsConnect({ host: "127.0.0.1", port: backend.port, servername: "localhost", ca: readFileSync(redisFiles.bundle), minVersion: "TLSv1.2" });
    try {
      let text = "";
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => (text += chunk));
      socket.on("error", () => undefined);
      await new Promise<void>((resolve, reject) => {
        socket.once("secureConnect", resolve);
        socket.once("error", reject);
      });
      socket.write("hello-before\n");
      const { refusedByClient } = await backend.renegotiateThenReply("hello-before", "reply-after-renegotiation\n");
      expect(refusedByClient).toBe(false);
      await waitFor("the reply after the renegotiation", () => text.includes("reply-after-renegotiation"), 10_000, 20);
      expect(backend.output()).not.toContain("no renegotiation");
    } finally {
      socket.destroy();
      await backend.stop();
    }
  });
});

describe("egress to an SDK mTLS server (sees the client certificate)", () => {
  it("presents the workload identity; half-close travels both ways", async () => {
    const e = await egress({ backend: `127.0.0.1:${echoPort}`, serverName: "localhost", mtls: true });
    const text = await converse(port(e), "hello");
    const [first, ...rest] = text.split("\n");
    expect(first).toBe(`${app.current()!.svid.spiffeId} ${app.current()!.svid.serial.replace(/^0+/, "")}`);
    // Our FIN reached the server as close_notify/FIN after the data; its reply and BYE came back.
    expect(rest.join("\n")).toBe("HELLOBYE\n");
  });

  it("verified by host name against the mesh bundle, a backend whose certificate is on the mesh CRL is refused (found by review, stop 32)", async () => {
    const snapshot = app.current()!;
    const knowsRevocation = manualIdentitySource({ svid: snapshot.svid, bundle: { ...snapshot.bundle, revokedSerials: new Set([echoSerial]) } });
    for (const mtls of [true, false]) {
      const refused = await egress({ backend: `127.0.0.1:${echoPort}`, serverName: "localhost", mtls }, knowsRevocation);
      expect(await converse(port(refused), "hello"), `mtls ${mtls}`).toBe("");
      expect(refused.stats().failed).toEqual({ tls_failed: 1 });
    }
    // Control: the same backend and name with a bundle that does not revoke it.
    const control = await egress({ backend: `127.0.0.1:${echoPort}`, serverName: "localhost", mtls: true });
    expect(await converse(port(control), "hello")).toContain("HELLO");
  });

  it("closes an open connection when the backend's certificate is revoked after it was made", async () => {
    const snapshot = app.current()!;
    const identity = manualIdentitySource(snapshot);
    const e = await egress({ backend: `127.0.0.1:${echoPort}`, serverName: "localhost", mtls: true }, identity);
    const open = netConnect({ host: "127.0.0.1", port: port(e) });
    open.setEncoding("utf8");
    open.on("error", () => undefined);
    let text = "";
    open.on("data", (chunk: string) => (text += chunk));
    const closed = new Promise<void>((resolve) => open.once("close", () => resolve()));
    open.write("one");
    for (const deadline = Date.now() + 5_000; !text.includes("ONE"); ) {
      if (Date.now() > deadline) throw new Error(`no echo through the egress: ${JSON.stringify(text)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    identity.updateBundle({ ...snapshot.bundle, revokedSerials: new Set(["1234"]) }); // another serial: stays open
    await new Promise((r) => setTimeout(r, 200));
    expect(open.destroyed).toBe(false);
    identity.updateBundle({ ...snapshot.bundle, revokedSerials: new Set([echoSerial]) });
    await closed;
    expect(text).not.toContain("BYE"); // cut, not a half-close the backend answered
  });

  it("after a rotation new connections present the new certificate; an open one keeps working", async () => {
    const e = await egress({ backend: `127.0.0.1:${echoPort}`, serverName: "localhost", mtls: true });
    const before = app.current()!.svid.serial.replace(/^0+/, "");
    const open = netConnect({ host: "127.0.0.1", port: port(e) });
    open.setEncoding("utf8");
    let openText = "";
    open.on("data", (chunk: string) => (openText += chunk));
    await new Promise<void>((resolve) => open.once("data", () => resolve()));
    expect(openText).toContain(before);

    await app.renewNow();
    const after = app.current()!.svid.serial.replace(/^0+/, "");
    expect(after).not.toBe(before);
    expect(await converse(port(e), "x")).toContain(` ${after}\n`);

    const closed = new Promise<void>((resolve) => open.once("close", () => resolve()));
    open.end("still here");
    await closed;
    expect(openText).toContain("STILL HEREBYE");
  });

  it("refuses new connections while the identity is expired, and resumes when a new one arrives", async () => {
    const manual = manualIdentitySource(app.current()!);
    const e = await egress({ backend: `127.0.0.1:${echoPort}`, serverName: "localhost", mtls: true }, manual);
    manual.expire();
    expect(await converse(port(e), "x")).toBe("");
    expect(e.stats().failed).toEqual({ identity_unavailable: 1 });
    await app.renewNow();
    manual.rotate(app.current()!);
    expect(await converse(port(e), "x")).toContain(app.current()!.svid.spiffeId);
  });

  it("close() stops accepting and cuts connections still open after the drain deadline", async () => {
    const e = await startEgress({ listen: "127.0.0.1:0", backend: `127.0.0.1:${echoPort}`, serverName: "localhost", mtls: true, drainTimeoutMs: 100 }, { identity: app, logger: quietTlsLogger });
    const open = netConnect({ host: "127.0.0.1", port: port(e) });
    open.on("error", () => undefined);
    await new Promise<void>((resolve) => open.once("data", () => resolve()));
    const closedByUs = new Promise<void>((resolve) => open.once("close", () => resolve()));
    await e.close();
    await closedByUs;
    const refused = await new Promise<string>((resolve) => {
      const s = netConnect({ host: "127.0.0.1", port: port(e) });
      s.on("error", (error: Error & { code?: string }) => resolve(error.code ?? "error"));
      s.on("connect", () => resolve("connected"));
    });
    expect(refused).toBe("ECONNREFUSED");
  });

  // The sidecar's limits.maxConnections, per egress listener (test/proxy/max-connections.test.ts
  // has the inbound and outbound ones, and Envoy's listener limit they follow).
  it("maxConnections: an app connection past the cap is closed before the backend is dialled, counted; one closing frees its slot", async () => {
    const metrics = createMetrics();
    const e = await egress({ backend: `127.0.0.1:${echoPort}`, serverName: "localhost", mtls: true, maxConnections: 1 }, app, metrics);
    const listener = `egress/127.0.0.1:${echoPort}`;
    const held = netConnect({ host: "127.0.0.1", port: port(e) });
    held.on("error", () => undefined);
    try {
      // The echo server's greeting: the held connection reached the backend.
      await new Promise<void>((resolve) => held.once("data", () => resolve()));
      expect(await converse(port(e), "over the cap")).toBe("");
      const text = await metrics.text();
      expect(metricValue(text, "meshward_sidecar_listener_connections_overflow_total", { listener })).toBe(1);
      expect(metricValue(text, "meshward_sidecar_listener_connections_active", { listener })).toBe(1);
      expect(metricValue(text, "meshward_sidecar_listener_connections_max", { listener })).toBe(1);
      // Refused at accept: no relay was started, so no backend connection was tried or failed.
      expect(e.stats()).toEqual({ active: 1, established: 1, failed: {} });
    } finally {
      held.destroy();
    }
    await waitFor("the held connection's slot to be freed", () => e.stats().active === 0);
    expect(await converse(port(e), "after")).toContain(`${app.current()!.svid.spiffeId}`);
  });
});

describe("egress configuration fails closed", () => {
  it.each([
    ["a non-loopback listen address", { listen: "0.0.0.0:0", backend: "127.0.0.1:1", mtls: true }, true],
    ["mtls without an identity", { listen: "127.0.0.1:0", backend: "127.0.0.1:1", mtls: true, caFile: "/nonexistent" }, false],
    ["nothing to verify the backend with", { listen: "127.0.0.1:0", backend: "127.0.0.1:1" }, false],
  ] as const)("refuses %s", async (_what, entry, withIdentity) => {
    const error = await startEgress(entry as EgressEntry, { ...(withIdentity ? { identity: app } : {}), logger: quietTlsLogger }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isMeshwardError(error, "E_INSECURE_CONFIG"), String(error)).toBe(true);
  });
});
