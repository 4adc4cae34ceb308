import { connect, type Socket } from "node:net";
import { request } from "node:https";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_REVIEW_BYTES, type WebhookServer } from "../../src/inject/webhook-server.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";
import { startTestWebhook, type WebhookLimits } from "../helpers/webhook.ts";

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

  const start = (limits: WebhookLimits) => startTestWebhook(pki, servers, limits);

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

  /** A POST /mutate that declares `declared` bytes and sends `sent` of them, unfinished; resolves with the status once one arrives. */
  const unfinished = (port: number, declared: number, sent: number) => {
    const req = request({ host: "127.0.0.1", port, path: "/mutate", method: "POST", ca: pki.root.certPem, servername: "localhost", headers: { "content-type": "application/json", "content-length": String(declared) } });
    const answered = new Promise<{ status: number; body: string; retryAfter: string | undefined }>((resolve) => {
      req.on("response", (res) => {
        let body = "";
        res.on("data", (chunk: Buffer) => (body += chunk.toString("utf8")));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body, retryAfter: res.headers["retry-after"] as string | undefined }));
      });
    });
    req.on("error", () => undefined);
    if (sent > 0) req.write(Buffer.alloc(sent, 0x20));
    else req.flushHeaders();
    return { req, answered };
  };

  it("holds at most maxBufferedBytes of unfinished reviews together: past it 503 E_INJECTOR_BUSY, and room again once they go", async () => {
    // Found by review (stop 32): 40 unfinished 4 MiB reviews took the injector from 110 to 279 MB RSS.
    const { port } = await start({ maxBufferedBytes: 1024 * 1024 });
    const first = unfinished(port, 900_000, 700_000);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const second = unfinished(port, 900_000, 700_000);
    const refused = await second.answered;
    expect(refused.status).toBe(503);
    expect(JSON.parse(refused.body)).toMatchObject({ code: "E_INJECTOR_BUSY" });
    expect(refused.retryAfter).toBe("1");
    first.req.destroy();
    await new Promise((resolve) => setTimeout(resolve, 300));
    // The budget is free again: a real (if empty) review is read and answered on its merits.
    const answered = await get(port, "/mutate", "{}");
    expect(answered.status).toBe(400);
    expect(answered.body).not.toMatch(/E_INJECTOR_BUSY/);
  }, 30_000);

  // Found by review (stop 35): connections come through the gated listener, and Node checks its
  // headersTimeout and requestTimeout only on a server that listens itself; a request never
  // finished held its connection and its share of the body budget for as long as the caller liked.
  it("closes a connection whose request head is still dripping in after the headers deadline, and keeps serving", async () => {
    const { port } = await start({ headersTimeoutMs: 300 });
    const socket = tlsConnect({ host: "127.0.0.1", port, ca: pki.root.certPem, servername: "localhost" });
    socket.on("error", () => undefined);
    await new Promise<void>((resolve) => socket.once("secureConnect", () => resolve()));
    socket.write("POST /mutate HTTP/1.1\r\nHost: localhost\r\n");
    const drip = setInterval(() => socket.write("X-Slow: 1\r\n"), 50);
    const started = Date.now();
    await new Promise<void>((resolve) => socket.once("close", () => resolve()));
    clearInterval(drip);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect((await get(port, "/healthz")).status).toBe(200);
  }, 30_000);

  it("gives the next request on a kept-alive connection the same deadline for its head", async () => {
    const { port } = await start({ headersTimeoutMs: 300 });
    const socket = tlsConnect({ host: "127.0.0.1", port, ca: pki.root.certPem, servername: "localhost" });
    socket.on("error", () => undefined);
    await new Promise<void>((resolve) => socket.once("secureConnect", () => resolve()));
    let received = "";
    socket.on("data", (chunk: Buffer) => (received += chunk.toString("latin1")));
    socket.write("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    for (let i = 0; i < 100 && !received.includes("\r\n\r\n"); i++) await new Promise((r) => setTimeout(r, 20));
    expect(received).toMatch(/^HTTP\/1\.1 200/);
    socket.write("GET /healthz HTTP/1.1\r\n");
    const drip = setInterval(() => socket.write("X-Slow: 1\r\n"), 50);
    await new Promise<void>((resolve) => socket.once("close", () => resolve()));
    clearInterval(drip);
    expect(received.match(/HTTP\/1\.1 200/g)).toHaveLength(1);
  }, 30_000);

  it("closes a request whose body does not arrive within the body deadline, and frees its share of the budget", async () => {
    const { port } = await start({ bodyTimeoutMs: 300, maxBufferedBytes: 1024 * 1024 });
    const stalled = unfinished(port, 1_000_001, 1_000_000);
    await new Promise<void>((resolve) => stalled.req.once("close", () => resolve()));
    // 200 kB would not fit beside the 1 MB the stalled request held: it is read and judged.
    const answered = await get(port, "/mutate", `${" ".repeat(200_000)}{}`);
    expect(answered.status).toBe(400);
    expect(answered.body).not.toMatch(/E_INJECTOR_BUSY/);
  }, 30_000);

  /** A valid Pod review of about `argBytes` (one init container argument): its answer is about 4/3 of that (the init containers, base64'd). */
  const bigReview = (argBytes: number) =>
    JSON.stringify({
      apiVersion: "admission.k8s.io/v1",
      kind: "AdmissionReview",
      request: {
        uid: "0f0f0f0f-0000-0000-0000-000000000004",
        kind: { group: "", version: "v1", kind: "Pod" },
        resource: { group: "", version: "v1", resource: "pods" },
        namespace: "shop",
        operation: "CREATE",
        object: {
          apiVersion: "v1",
          kind: "Pod",
          metadata: { name: "p", namespace: "shop", annotations: { "meshward.io/inject": "true", "meshward.io/app-id": "a", "meshward.io/app-port": "8080" } },
          spec: { initContainers: [{ name: "x", image: "busybox", args: ["A".repeat(argBytes)] }], containers: [{ name: "app", image: "app" }] },
        },
      },
    });

  /** Sends `body` as a POST /mutate and reads at most the first bytes of the answer, then nothing more. */
  const nonReader = async (port: number, body: string) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, ca: pki.root.certPem, servername: "localhost" });
    socket.on("error", () => undefined);
    await new Promise<void>((resolve) => socket.once("secureConnect", () => resolve()));
    const answered = new Promise<string>((resolve) =>
      socket.once("data", (chunk: Buffer) => {
        socket.pause();
        resolve(chunk.toString("latin1"));
      }),
    );
    socket.write(`POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    return { socket, answered };
  };

  // Found by review (dash-inject): a caller that sends a ~4 MiB Pod review and never reads its
  // ~5 MiB answer kept the connection and the answer in memory for as long as it stayed
  // connected; 40 of them held 758 MB (the injector's limit is 256 Mi).
  it("closes a connection whose answer is not wholly sent within the response deadline", async () => {
    // One connection per address: the next one is accepted only once the server has closed the non-reader's.
    const { port } = await start({ responseTimeoutMs: 300, maxConnectionsPerAddress: 1 });
    const { answered } = await nonReader(port, bigReview(3_500_000));
    expect(await answered).toMatch(/^HTTP\/1\.1 200/);
    // The answer stays unread (a paused client does not see the close itself): only the response
    // deadline can free the slot (the test's own timeout is the bound).
    let health: number | undefined;
    while (health === undefined) {
      health = await get(port, "/healthz").then(
        (answer) => answer.status,
        () => undefined,
      );
      if (health === undefined) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(health).toBe(200);
  }, 30_000);

  it("counts answers not yet sent against maxBufferedBytes: past it 503 E_INJECTOR_BUSY, and room again once they go", async () => {
    const { port } = await start({ maxBufferedBytes: 6 * 1024 * 1024, responseTimeoutMs: 600_000 });
    // Its answer (~4.0 MB) is held unsent. A 2.0 MB review still fits beside it, its ~2.7 MB answer does not.
    const first = await nonReader(port, bigReview(3_000_000));
    expect(await first.answered).toMatch(/^HTTP\/1\.1 200/);
    const refused = await get(port, "/mutate", bigReview(2_000_000));
    expect(refused.status).toBe(503);
    expect(JSON.parse(refused.body)).toMatchObject({ code: "E_INJECTOR_BUSY" });
    first.socket.destroy();
    // Room again once the server has seen the close (the test's own timeout is the bound).
    let answered = await get(port, "/mutate", bigReview(2_000_000));
    while (answered.status === 503) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      answered = await get(port, "/mutate", bigReview(2_000_000));
    }
    expect(answered.status).toBe(200);
    expect(JSON.parse(answered.body).response).toMatchObject({ allowed: true, patchType: "JSONPatch" });
  }, 30_000);

  it("answers 413 to a declared length over the cap before reading any of it", async () => {
    const { port } = await start({});
    const big = unfinished(port, MAX_REVIEW_BYTES + 1, 0);
    expect((await big.answered).status).toBe(413);
    big.req.destroy();
  }, 30_000);
});
