import { connect as netConnect, type Socket } from "node:net";
import { connect as http2Connect } from "node:http2";
import { connect as tlsConnect } from "node:tls";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { MAX_CONCURRENT_STREAMS } from "../../src/ca/server.ts";
import { startTestCa, type TestCa } from "../helpers/ca-server.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { exec } from "../helpers/exec.ts";

// The CA's API port takes callers without a certificate (first-time workloads have none), so a
// peer could open connections and hold each in the TLS handshake: Node's default handshake
// timeout is 120 s, and there was no cap on connections. For comparison upstream: grpc-go (under
// Dapr Sentry, dapr/dapr pkg/sentry/server/server.go builds grpc.NewServer with TLS creds only)
// waits 120 s for a handshake (grpc/grpc-go server.go defaultServerOptions.connectionTimeout) and
// caps nothing; step-ca (smallstep/certificates server/server.go) sets 15 s Read/ReadHeader/Write
// timeouts on its http.Server, which Go's net/http also applies to the TLS handshake (server.go
// tlsHandshakeTimeout: the smallest of the three), and caps nothing either;
// golang.org/x/net/netutil LimitListener caps connections overall (it blocks in Accept where the
// CA resets the surplus connection, so the backlog never fills with them).
// Real sockets on loopback here; 127.0.0.2 and 127.0.0.3 are other loopback addresses (Linux
// routes all of 127.0.0.0/8 to lo), so per-address caps are checked against a real peer address.

const REFUSED = "meshward_ca_connections_refused_total";
const ACTIVE = "meshward_connections_active";

const held: { destroy(): void }[] = [];
afterEach(() => {
  for (const socket of held.splice(0)) socket.destroy();
});

interface Held {
  /** Open, as far as this side knows. */
  readonly open: boolean;
  /** Resolves when the CA closes (or resets) the connection; rejects when the test closed it. */
  readonly closedByCa: Promise<void>;
  write(bytes: Buffer): void;
  close(): void;
}

/**
 * A raw TCP connection from `from` that sends nothing: it holds a slot while the CA waits for a
 * ClientHello. Resolves once connected, or once the CA has reset it (a reset can come before
 * the client sees its connect complete).
 */
async function open(ca: TestCa | number, from = "127.0.0.1"): Promise<Held> {
  const socket = netConnect({ host: "127.0.0.1", port: typeof ca === "number" ? ca : ca.server.port, localAddress: from });
  held.push(socket);
  socket.on("error", () => undefined);
  let closedHere = false;
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  const closedByCa = closed.then(() => {
    if (closedHere) throw new Error("closed by the test");
  });
  closedByCa.catch(() => undefined);
  await Promise.race([new Promise((resolve) => socket.once("connect", resolve)), closed]);
  return {
    get open() {
      return !socket.destroyed;
    },
    closedByCa,
    write: (bytes) => void socket.write(bytes),
    close: () => {
      closedHere = true;
      socket.destroy();
    },
  };
}

// Found by review (stop 33): the streams on an admitted connection had no bound but the session's
// 60 s idle timeout. A caller without any credential filled each connection with 100 streams it
// never ended, GETs the CA had answered or gRPC calls without a body (~11 KB each): 500
// connections from two addresses took the CA from 161 to 729 MiB, past its 512 Mi limit.
describe("the CA bounds the HTTP/2 streams callers hold open", () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await startTestCa("stream-limits.test", { handshakeTimeout: "5m", requestTimeout: "5m" });
  });
  afterAll(async () => {
    await ca?.close();
  });
  const sessions: ReturnType<typeof http2Connect>[] = [];
  afterEach(() => {
    for (const session of sessions.splice(0)) session.destroy();
  });
  const connectFrom = async (localAddress: string) => {
    // http2.connect hands its options to tls.connect, which binds localAddress (not in its types).
    const session = http2Connect(`https://${ca.server.address}`, { ca: ca.bundlePem, rejectUnauthorized: false, ...({ localAddress } as object) });
    sessions.push(session);
    session.on("error", () => undefined);
    await new Promise<void>((resolve, reject) => {
      session.once("remoteSettings", () => resolve());
      session.once("error", reject);
    });
    return session;
  };
  /** A SignCertificate call that sends its headers and never a body (nor END_STREAM). */
  const heldCall = (session: ReturnType<typeof http2Connect>) => {
    const stream = session.request({ ":method": "POST", ":path": "/dapr.proto.sentry.v1.CA/SignCertificate", "content-type": "application/grpc", te: "trailers" }, { endStream: false });
    stream.on("error", () => undefined);
    const closed = new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? -1)));
    return { stream, closed };
  };

  // Node's HTTP/2 server does this itself (RST_STREAM NO_ERROR once the response is out, RFC 9113
  // §8.1); kept as a guard, since a held answered stream would keep its slot under the caps below.
  it("resets an answered GET whose caller never ends its request (NO_ERROR), instead of keeping it", async () => {
    const session = await connectFrom("127.0.0.1");
    const stream = session.request({ ":path": "/v1/bundle" }, { endStream: false });
    stream.on("error", () => undefined);
    const status = new Promise<number>((resolve) => stream.once("response", (headers) => resolve(Number(headers[":status"]))));
    stream.resume();
    const rstCode = await new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? -1)));
    expect(await status).toBe(200);
    expect(rstCode).toBe(0); // NGHTTP2_NO_ERROR, sent by the CA: this side never ended the stream
  });

  it("refuses streams past 256 per source address with REFUSED_STREAM, counts them, and serves again once they close; another address is not affected", async () => {
    const held: ReturnType<typeof heldCall>[] = [];
    // 17 connections of MAX_CONCURRENT_STREAMS (16): room for 272 streams, past the cap of 256.
    const fromOne: ReturnType<typeof http2Connect>[] = [];
    for (let i = 0; i < Math.ceil(257 / MAX_CONCURRENT_STREAMS); i++) fromOne.push(await connectFrom("127.0.0.4"));
    for (let i = 0; i < 256; i++) held.push(heldCall(fromOne[i % fromOne.length]!));
    // Held, not answered: the CA waits for their bodies.
    const early = await Promise.race([Promise.all(held.map((h) => h.closed)).then(() => "closed"), new Promise((r) => setTimeout(() => r("open"), 300))]);
    expect(early).toBe("open");
    const over = heldCall(fromOne.at(-1)!);
    expect(await over.closed).toBe(7); // NGHTTP2_REFUSED_STREAM
    expect(await ca.metric(REFUSED, { reason: "max_streams_per_address" })).toBe(1);
    expect(ca.logged.join("")).toMatch(/"event":"stream-refused"[^\n]*"reason":"max_streams_per_address"/);

    // Another address is served meanwhile.
    const other = await connectFrom("127.0.0.5");
    const answered = await new Promise<number>((resolve, reject) => {
      const request = other.request({ ":path": "/healthz" });
      request.on("response", (headers) => resolve(Number(headers[":status"])));
      request.on("error", reject);
      request.resume();
    });
    expect(answered).toBe(200);

    // Once the held streams close, the address gets streams again.
    for (const h of held.splice(0, 10)) h.stream.close();
    await vi.waitFor(async () => {
      const next = fromOne[0]!.request({ ":path": "/healthz" });
      next.on("error", () => undefined);
      next.resume();
      expect(await new Promise<number>((resolve) => next.once("response", (headers) => resolve(Number(headers[":status"]))).once("close", () => resolve(-1)))).toBe(200);
    }, { timeout: 10_000, interval: 50 });
    for (const h of held) h.stream.close();
  });
});

describe("the CA caps API connections, overall and per source address, before any TLS work", () => {
  let ca: TestCa;
  beforeAll(async () => {
    // A long handshake timeout: the held connections must stay until the test closes them.
    ca = await startTestCa("connection-limits.test", { maxConnections: 6, maxConnectionsPerAddress: 3, handshakeTimeout: "5m" });
  });
  afterAll(async () => {
    await ca?.close();
  });
  const active = () => ca.metric(ACTIVE, { direction: "inbound" });
  const untilActive = (n: number) => vi.waitFor(async () => expect(await active()).toBe(n), { timeout: 20_000, interval: 20 });
  // The previous test's connections (closed in afterEach) are gone on the CA's side too.
  beforeEach(() => untilActive(0));

  it("holds maxConnectionsPerAddress from one address, closes the next, serves another address, frees a slot on close", async () => {
    const first = [await open(ca), await open(ca), await open(ca)];
    await untilActive(3);

    const fourth = await open(ca);
    await fourth.closedByCa; // reset by the CA, not by us
    expect(await ca.metric(REFUSED, { reason: "max_connections_per_address" })).toBe(1);
    expect(first.every((s) => s.open)).toBe(true);
    expect(await active()).toBe(3);

    // Another address has its own allowance.
    const other = [await open(ca, "127.0.0.2"), await open(ca, "127.0.0.2"), await open(ca, "127.0.0.2")];
    await untilActive(6);
    expect(other.every((s) => s.open)).toBe(true);

    // Six open: maxConnections refuses a third address too.
    const third = await open(ca, "127.0.0.3");
    await third.closedByCa;
    expect(await ca.metric(REFUSED, { reason: "max_connections" })).toBe(1);

    // Closing one of 127.0.0.1's frees a slot for 127.0.0.1.
    first[0]!.close();
    await untilActive(5);
    const again = await open(ca);
    await untilActive(6);
    expect(again.open).toBe(true);

    // Nothing else was refused meanwhile (the counters prove every refusal above, and only those).
    expect(await ca.metric(REFUSED, { reason: "max_connections_per_address" })).toBe(1);
    expect(await ca.metric(REFUSED, { reason: "max_connections" })).toBe(1);
  });

  it("counts every refusal but logs them rate-limited, never one line per connection", async () => {
    const mine = [await open(ca), await open(ca), await open(ca)];
    await untilActive(3);
    const before = await ca.metric(REFUSED, { reason: "max_connections_per_address" });
    const linesBefore = ca.logged.filter((l) => l.includes('"connection-refused"')).length;
    const refused = await Promise.all(Array.from({ length: 30 }, () => open(ca)));
    await Promise.all(refused.map((s) => s.closedByCa));
    expect(await ca.metric(REFUSED, { reason: "max_connections_per_address" })).toBe(before + 30);
    const lines = ca.logged.filter((l) => l.includes('"connection-refused"')).slice(linesBefore);
    // LimitedWarnings: 5 lines per (reason, address) per 10 s window; two windows at the most here.
    expect(lines.length).toBeGreaterThanOrEqual(1);
    expect(lines.length).toBeLessThanOrEqual(10);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 40, event: "connection-refused", reason: "max_connections_per_address", peer: "127.0.0.1", limit: 3 });
    expect(mine.every((s) => s.open)).toBe(true);
  });

  it("issues a certificate to a real client once the held connections are gone", async () => {
    const blockers = [await open(ca), await open(ca), await open(ca)];
    await untilActive(3);
    // While 127.0.0.1 is at its cap, the real client (from 127.0.0.1) is refused …
    await expect(ca.sign()).rejects.toMatchObject({ code: "E_CA_UNAVAILABLE" });
    for (const socket of blockers) socket.close();
    await untilActive(0);
    // … and once they are closed it gets its certificate.
    expect((await ca.sign()).certChainPem).toMatch(/BEGIN CERTIFICATE/);
  });
});

describe("the CA closes connections that do not finish the TLS handshake in handshakeTimeout", () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await startTestCa("handshake-timeout.test", { handshakeTimeout: "1s" });
  });
  afterAll(async () => {
    await ca?.close();
  });

  it("closes a silent connection and one that sent half a ClientHello, counts them, and keeps serving", async () => {
    // A session that finished its handshake at the same time is not cut by the timer (control).
    const session = http2Connect(`https://${ca.server.address}`, { ca: ca.bundlePem, rejectUnauthorized: false });
    session.on("error", () => undefined);
    await new Promise<void>((resolve, reject) => {
      session.once("connect", () => resolve());
      session.once("error", reject);
    });

    const silent = await open(ca);
    const half = await open(ca);
    // A TLS handshake record announcing 512 bytes, of which the first 5 arrive: a ClientHello that never ends.
    half.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03]));
    await Promise.all([silent.closedByCa, half.closedByCa]);
    expect(await ca.metric(REFUSED, { reason: "handshake_timeout" })).toBe(2);
    expect(await ca.metric("meshward_tls_handshake_failures_total", { direction: "inbound", reason: "other" })).toBe(2);
    expect(ca.logged.join("")).toMatch(/"event":"tls-handshake-failed"[^\n]*"reason":"ERR_TLS_HANDSHAKE_TIMEOUT"/);

    const status = await new Promise<number>((resolve, reject) => {
      const request = session.request({ ":path": "/healthz" });
      request.on("response", (headers) => resolve(Number(headers[":status"])));
      request.on("error", reject);
      request.resume();
      request.end();
    });
    expect(status).toBe(200);
    session.close();

    expect((await ca.sign()).certChainPem).toMatch(/BEGIN CERTIFICATE/);
    expect(await ca.metric(REFUSED, { reason: "handshake_timeout" })).toBe(2);
  });
});

// Found by review (stop 35, the injector had the same hole): HTTP/1.1 callers reach the API through
// the gated listener, and Node checks headersTimeout only on a server that listens itself. The
// socket's 60 s idle timeout restarts on every byte: a caller without a certificate dripping a
// header line every few seconds held its connection (and a maxConnections slot) for ever.
describe("the CA gives an HTTP/1.1 request head requestTimeout to arrive", () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await startTestCa("request-deadline.test", { requestTimeout: "400ms", handshakeTimeout: "5m" });
  });
  afterAll(async () => {
    await ca?.close();
  });

  const http1 = async () => {
    const socket = tlsConnect({ host: "127.0.0.1", port: ca.server.port, ca: ca.bundlePem, rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] });
    held.push(socket);
    socket.on("error", () => undefined);
    await new Promise<void>((resolve) => socket.once("secureConnect", () => resolve()));
    expect(socket.alpnProtocol).toBe("http/1.1");
    let received = "";
    socket.on("data", (chunk: Buffer) => (received += chunk.toString("latin1")));
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    return { socket, closed, received: () => received };
  };
  const dripUntilClosed = async (connection: Awaited<ReturnType<typeof http1>>) => {
    const drip = setInterval(() => connection.socket.write("X-Slow: 1\r\n"), 50);
    const outcome = await Promise.race([connection.closed.then(() => "closed"), new Promise((r) => setTimeout(() => r("still open after 5 s"), 5_000))]);
    clearInterval(drip);
    return outcome;
  };

  it("closes a connection whose head is still dripping in after requestTimeout, the first request or a kept-alive one's", async () => {
    const first = await http1();
    first.socket.write("GET /healthz HTTP/1.1\r\nHost: ca\r\n");
    expect(await dripUntilClosed(first)).toBe("closed");

    const kept = await http1();
    kept.socket.write("GET /healthz HTTP/1.1\r\nHost: ca\r\n\r\n");
    for (let i = 0; i < 100 && !kept.received().includes("\r\n\r\n"); i++) await new Promise((r) => setTimeout(r, 20));
    expect(kept.received()).toMatch(/^HTTP\/1\.1 200/);
    kept.socket.write("GET /healthz HTTP/1.1\r\n");
    expect(await dripUntilClosed(kept)).toBe("closed");
    expect(kept.received().match(/HTTP\/1\.1 200/g)).toHaveLength(1);
  }, 30_000);

  it("leaves HTTP/2 sessions to their own idle timeout: one quiet for longer than requestTimeout still serves", async () => {
    const session = http2Connect(`https://${ca.server.address}`, { ca: ca.bundlePem, rejectUnauthorized: false });
    session.on("error", () => undefined);
    const get = () =>
      new Promise<number>((resolve, reject) => {
        const request = session.request({ ":path": "/healthz" });
        request.on("response", (headers) => resolve(Number(headers[":status"])));
        request.on("error", reject);
        request.resume();
        request.end();
      });
    expect(await get()).toBe(200);
    await new Promise((r) => setTimeout(r, 1_200));
    expect(session.closed || session.destroyed).toBe(false);
    expect(await get()).toBe(200);
    session.close();
    // And a whole HTTP/1.1 request in time is answered.
    const prompt = await http1();
    prompt.socket.write("GET /healthz HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n");
    await prompt.closed;
    expect(prompt.received()).toMatch(/^HTTP\/1\.1 200/);
  }, 30_000);
});

describe("close(): the CA's connections end with it", () => {
  it("sends GOAWAY to an idle HTTP/2 session and cuts a connection still in the handshake after the grace period", async () => {
    const ca = await startTestCa("close.test", { handshakeTimeout: "5m" });
    let closed = false;
    try {
      const session = http2Connect(`https://${ca.server.address}`, { rejectUnauthorized: false });
      session.on("error", () => undefined);
      const goaway = new Promise<void>((resolve) => session.once("goaway", () => resolve()));
      const sessionClosed = new Promise<void>((resolve) => session.once("close", () => resolve()));
      await new Promise<void>((resolve, reject) => {
        session.once("connect", () => resolve());
        session.once("error", reject);
      });
      const silent = await open(ca);
      await vi.waitFor(async () => expect(await ca.metric(ACTIVE, { direction: "inbound" })).toBe(2), { timeout: 20_000, interval: 20 });
      await ca.close();
      closed = true;
      await Promise.all([goaway, sessionClosed, silent.closedByCa]);
    } finally {
      if (!closed) await ca.close();
    }
  }, 60_000);
});

describe("meshward ca serve --handshake-timeout --max-connections --max-connections-per-address (real processes)", () => {
  let work: string;
  let caDir: string;
  let server: LongRunning | undefined;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-ca-connections-"));
    caDir = join(work, "ca");
    const init = await runCli(["ca", "init", "--trust-domain", "connections.test", "--dir", caDir]);
    expect(init.code, init.stderr).toBe(0);
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("refuses bad values with E_USAGE or E_CONFIG_INVALID naming the setting, before listening", async () => {
    const cases: [string[], string, RegExp][] = [
      [["--max-connections", "lots"], "E_USAGE", /--max-connections takes a whole number, got "lots"/],
      [["--max-connections-per-address", "-1"], "E_USAGE", /--max-connections-per-address takes a whole number, got "-1"/],
      [["--max-connections", "0"], "E_CONFIG_INVALID", /maxConnections: /],
      [["--max-connections-per-address", "0"], "E_CONFIG_INVALID", /maxConnectionsPerAddress: /],
      [["--handshake-timeout", "0s"], "E_CONFIG_INVALID", /handshakeTimeout: handshake timeout must be at least 1ms \(got "0s"\)/],
      [["--handshake-timeout", "soon"], "E_CONFIG_INVALID", /handshakeTimeout: invalid handshake timeout "soon"/],
    ];
    for (const [flags, code, expected] of cases) {
      const r = await runCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", ...flags]);
      // Every value here is a flag's: a usage error, exit 2, whatever its code (README).
      expect(r.code, flags.join(" ")).toBe(2);
      expect(r.stderr, flags.join(" ")).toMatch(expected);
      expect(r.stderr, flags.join(" ")).toContain(`[${code}]`);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(r.stdout).not.toMatch(/listening/);
    }
  }, 120_000);

  it("applies the flags: the third connection from one address is closed, counted on /metrics; cert issue works once they are gone", async () => {
    const started = await startCli(
      ["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--status", "127.0.0.1:0", "--handshake-timeout", "5m", "--max-connections", "4", "--max-connections-per-address", "2"],
      /listening on (\S+) as \S+\nstatus page: (\S+)\//,
    );
    server = started;
    const address = started.match[1]!;
    const metricsUrl = `${started.match[2]}/metrics`;
    const metrics = async () => (await exec("curl", ["-sS", metricsUrl])).stdout;
    const port = Number(address.split(":").pop());

    const held = [await open(port), await open(port)];
    await vi.waitFor(async () => expect(await metrics()).toMatch(/^meshward_connections_active\{direction="inbound"\} 2$/m), { timeout: 20_000, interval: 50 });
    const third = await open(port);
    await third.closedByCa;
    const text = await metrics();
    expect(text).toMatch(/^meshward_ca_connections_refused_total\{reason="max_connections_per_address"\} 1$/m);
    expect(text).toMatch(/^meshward_ca_connections_refused_total\{reason="max_connections"\} 0$/m);
    expect(held.every((s) => s.open)).toBe(true);
    expect(started.stderr()).toMatch(/"event":"connection-refused"/);
    expect(started.stderr()).not.toMatch(/open-file-limit-low/); // 4 connections, far below this machine's limit

    for (const socket of held) socket.close();
    await vi.waitFor(async () => expect(await metrics()).toMatch(/^meshward_connections_active\{direction="inbound"\} 0$/m), { timeout: 20_000, interval: 50 });
    const token = (await runCli(["token", "create", "--dir", caDir, "--namespace", "orders", "--app-id", "api"])).stdout.trim().split("\n").pop()!;
    const issued = await runCli(["cert", "issue", "--ca", address, "--bundle", join(caDir, "bundle.pem"), "--token", token, "--out", join(work, "orders-api")]);
    expect(issued.code, issued.stderr).toBe(0);
    expect(issued.stdout).toMatch(/issued spiffe:\/\/connections\.test\/ns\/orders\/api/);
  }, 120_000);

  it("warns at start when the open-file limit is below maxConnections (ulimit -n 512, default cap 4096), and still serves", async () => {
    // sh's ulimit -n sets the soft and hard limits, so Node cannot raise its soft limit past 512.
    const limited = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0"], /listening on (\S+)/, { via: ["sh", "-c", 'ulimit -n 512 && exec "$0" "$@"'] });
    try {
      // stderr and stdout are separate pipes: the warning (logged before listening) may arrive after the ready line.
      await vi.waitFor(() => expect(limited.stderr()).toContain('"open-file-limit-low"'), { timeout: 20_000, interval: 50 });
      const line = limited.stderr().split("\n").find((l) => l.includes('"open-file-limit-low"'));
      expect(line, limited.stderr()).toBeDefined();
      expect(JSON.parse(line!)).toMatchObject({ level: "warn", openFileLimit: 512, maxConnections: 4096 });
      expect(JSON.parse(line!).msg).toMatch(/lower maxConnections to 448/);
      const health = await exec("curl", ["-sk", "-o", "/dev/null", "-w", "%{http_code}", `https://${limited.match[1]}/healthz`]);
      expect(health.stdout).toBe("200");
    } finally {
      await limited.stop();
    }
  }, 60_000);
});
