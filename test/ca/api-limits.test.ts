import { connect, type ClientHttp2Session } from "node:http2";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import { BUFFERED_REQUESTS } from "../../src/ca/api/grpc.ts";
import { MAX_CONCURRENT_STREAMS } from "../../src/ca/server.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { startTestCa, type TestCa } from "../helpers/ca-server.ts";
import { exec } from "../helpers/exec.ts";

// Anyone who can reach the CA's port can open TLS without a certificate (first-time workloads
// have none) and start SignCertificate calls. Each call is bounded by maxRequestBytes; this is
// about many calls that never finish. Measured before the bound: 8000 unfinished 60 KB calls on
// 4 connections took the CA from 181 MB to 785 MB RSS, and Node's HTTP/2 server allows 2^32-1
// streams per connection. Go's net/http2 server (under grpc-go, Dapr Sentry's server) advertises
// 250 streams per connection (golang.org/x/net/http2 server.go defaultMaxStreams).
const MAX_REQUEST_BYTES = 1024; // the schema's minimum: a budget of 256 KiB for all calls

// The config layer cannot import the CA's constants (layering), so its text states them and this holds it to them.
it("maxRequestBytes' description (and so docs/configuration.md) states the stream and buffer limits the CA applies", () => {
  const text = caConfigSchema.shape.maxRequestBytes.description ?? "";
  expect(text).toContain(`at most ${BUFFERED_REQUESTS} of these at once`);
  expect(text).toContain(`${MAX_CONCURRENT_STREAMS} concurrent streams per connection`);
  expect(text).not.toMatch(/\b100 concurrent streams/);
});

describe("the CA's API bounds what unfinished calls can make it hold", () => {
  let ca: TestCa;
  const sessions: ClientHttp2Session[] = [];

  beforeAll(async () => {
    // requestTimeout stays at its default (30 s) here: the budget test holds its unfinished calls
    // while it checks the refusal, and with a 1 s deadline a loaded machine let them expire first.
    ca = await startTestCa("api-limits.test", { maxRequestBytes: MAX_REQUEST_BYTES });
  });
  afterAll(async () => {
    for (const session of sessions) session.destroy();
    await ca?.close();
  });

  // http2.connect hands its options to tls.connect, which binds localAddress (not in its types).
  const open = (localAddress = "127.0.0.1", address = ca.server.address) => {
    const session = connect(`https://${address}`, { rejectUnauthorized: false, ...({ localAddress } as object) });
    session.on("error", () => undefined);
    sessions.push(session);
    return session;
  };
  const sign = () => ca.sign();

  it(`advertises at most ${MAX_CONCURRENT_STREAMS} concurrent streams per connection`, async () => {
    const session = open();
    const settings = await new Promise<{ maxConcurrentStreams?: number }>((resolve) => session.once("remoteSettings", resolve));
    expect(settings.maxConcurrentStreams).toBe(MAX_CONCURRENT_STREAMS);
    session.close();
  });

  it("refuses calls past the buffered-bytes budget with RESOURCE_EXHAUSTED / E_CA_BUSY, and signs again once they are gone", async () => {
    // A gRPC frame announcing 1020 bytes, of which 995 arrive: every call stays unfinished.
    const partial = Buffer.alloc(1000, 0x41);
    partial[0] = 0;
    partial.writeUInt32BE(1020, 1);
    let refused = 0;
    const codes = new Set<string>();
    // 300 calls, on as many connections as that takes, from two addresses: the open-stream cap
    // per address (256) is not what refuses them here.
    for (let s = 0, calls = 0; calls < 300; s++) {
      const session = open(s % 2 === 0 ? "127.0.0.1" : "127.0.0.6");
      for (let i = 0; i < MAX_CONCURRENT_STREAMS && calls < 300; i++, calls++) {
        const call = session.request({ ":method": "POST", ":path": "/dapr.proto.sentry.v1.CA/SignCertificate", "content-type": "application/grpc", te: "trailers" });
        call.on("error", () => undefined);
        call.on("trailers", (trailers) => {
          if (trailers["grpc-status"] === "8") refused++;
          codes.add(String(trailers["meshward-error-code"]));
        });
        call.write(partial);
      }
    }
    // 300 calls of 1000 bytes against 256 KiB: the last ~38 are refused, the others held.
    await vi.waitFor(() => expect(refused).toBeGreaterThanOrEqual(300 - Math.floor((MAX_REQUEST_BYTES * 256) / 1000)), { timeout: 20_000, interval: 50 });
    expect(refused).toBeLessThan(300);
    expect([...codes]).toEqual(["E_CA_BUSY"]);
    // While the budget is full, a real request is refused the same way …
    await expect(sign()).rejects.toMatchObject({ code: "E_CA_BUSY" });
    // … and once the unfinished calls go away, the CA signs again.
    for (const session of sessions.splice(0)) session.destroy();
    await vi.waitFor(async () => expect((await sign()).certChainPem).toMatch(/BEGIN CERTIFICATE/), { timeout: 20_000, interval: 100 });
  });

  // Slowloris: a call that sends its request one byte at a time held its stream (and connection)
  // open for good (measured: still open after 200 s with a byte every 10 s; an idle HTTP/2 session
  // closes after 60 s, a plain TCP one after 120 s). Go's net/http2 has no per-stream body deadline
  // either, but grpc-go callers set one; the CA sets its own: requestTimeout.
  it("answers DEADLINE_EXCEEDED / E_REQUEST_TIMEOUT to a call whose request does not arrive in requestTimeout, and resets its stream", async () => {
    const slowCa = await startTestCa("api-limits.test-deadline", { maxRequestBytes: MAX_REQUEST_BYTES, requestTimeout: "1s" });
    onTestFinished(() => slowCa.close());
    const session = open("127.0.0.1", slowCa.server.address);
    const call = session.request({ ":method": "POST", ":path": "/dapr.proto.sentry.v1.CA/SignCertificate", "content-type": "application/grpc", te: "trailers" });
    let trailers: Record<string, unknown> | undefined;
    call.on("trailers", (t) => (trailers = t));
    call.on("error", () => undefined);
    const closed = new Promise<number>((resolve) => call.on("close", () => resolve(call.rstCode ?? -1)));
    call.write(Buffer.of(0, 0, 0, 1, 0)); // announces 256 bytes
    const trickle = setInterval(() => !call.destroyed && call.write(Buffer.of(0x41)), 200);
    try {
      expect(await closed).toBe(0); // RST_STREAM NO_ERROR after the status (RFC 9113 §8.1)
      expect(trailers).toMatchObject({ "grpc-status": "4", "meshward-error-code": "E_REQUEST_TIMEOUT" });
    } finally {
      clearInterval(trickle);
      session.destroy();
    }
    // A call that sends its request at once is not affected (control).
    expect((await slowCa.sign()).certChainPem).toMatch(/BEGIN CERTIFICATE/);
  });

  it("answers a request target that is not a URL with 400, without an error in the log", async () => {
    const before = ca.logged.length;
    const bad = await exec("curl", ["-sk", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}", "--request-target", "http://[::1", `https://${ca.server.address}/`]);
    expect(bad.stdout).toBe("400");
    const good = await exec("curl", ["-sk", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}", `https://${ca.server.address}/healthz`]);
    expect(good.stdout).toBe("200");
    expect(ca.logged.slice(before).join("")).not.toMatch(/"level":50/);
  });
});
