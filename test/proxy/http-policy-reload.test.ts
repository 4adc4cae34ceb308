import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request as httpRequest } from "node:http";
import type { ClientRequest, IncomingMessage, ServerResponse } from "node:http";
import { connect as http2Connect, constants as h2 } from "node:http2";
import type { ClientHttp2Session, ClientHttp2Stream } from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../helpers/wait.ts";
import { metricValue, startMeshCa, startTestSidecar, TD, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// Found by review: a policy reload judged again open tunnels and WebSockets, but not HTTP requests
// still in flight: a server-sent-events response, a long download, a slow upload, a gRPC server
// stream kept flowing after the reloaded policy denied their caller. A reload now judges each
// forwarded exchange again with the caller, canonical path, method (gRPC: none) it was allowed on,
// and ends the denied ones: 403 / PERMISSION_DENIED while no response has started, the connection
// cut (HTTP/1) or the stream reset (HTTP/2, CANCEL) once one has; the app's side is closed. Those
// still allowed flow on. Every case runs through a real pair: web's outbound ═mTLS═▶ feed's inbound.

const CALLER = `spiffe://${TD}/ns/default/web`;

/**
 * web may GET /events/** and call /test.Feed/Watch always; `revocable` adds GET /live/**, POST
 * /upload/** and the gRPC methods Tail and Wait, which the reload takes away.
 */
const policyText = (revocable: boolean) => `kind: Configuration
spec:
  accessControl:
    defaultAction: deny
    trustDomain: ${TD}
    policies:
      - appId: web
        namespace: default
        trustDomain: ${TD}
        defaultAction: deny
        operations:
          - name: /events/**
            httpVerb: ["GET"]
            action: allow
          - name: /test.Feed/Watch
            action: allow
${
  revocable
    ? `          - name: /live/**
            httpVerb: ["GET"]
            action: allow
          - name: /upload/**
            httpVerb: ["POST"]
            action: allow
          - name: /test.Feed/Tail
            action: allow
          - name: /test.Feed/Wait
            action: allow
`
    : ""
}`;

/**
 * An HTTP/1.1 app: GET /events/… and /live/… stream an event every 20 ms until the request closes;
 * POST /upload/… reads the body and answers once it has all of it. Records which requests
 * arrived and which the sidecar closed before they were answered.
 */
async function startStreamingApp() {
  const arrived = new Map<string, number>();
  const cut = new Set<string>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? "/";
    arrived.set(path, 0);
    res.once("close", () => {
      if (!res.writableFinished) cut.add(path);
    });
    if (path.startsWith("/upload/")) {
      req.on("data", (d: Buffer) => arrived.set(path, arrived.get(path)! + d.length));
      req.on("end", () => res.end(`got ${arrived.get(path)}`));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream" });
    let n = 0;
    const tick = setInterval(() => res.write(`data: ${++n}\n\n`), 20);
    res.once("close", () => clearInterval(tick));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    arrived,
    cut,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A JSON-serialised server-streaming service: Watch and Tail send a message every 20 ms, Wait sends nothing. */
const json = {
  serialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer) => JSON.parse(bytes.toString("utf8")) as unknown,
};
const streaming = (name: string) => ({
  path: `/test.Feed/${name}`,
  requestStream: false,
  responseStream: true,
  requestSerialize: json.serialize,
  requestDeserialize: json.deserialize,
  responseSerialize: json.serialize,
  responseDeserialize: json.deserialize,
});
const FEED_SERVICE = { watch: streaming("Watch"), tail: streaming("Tail"), wait: streaming("Wait") } satisfies grpc.ServiceDefinition;
const FeedClient = grpc.makeGenericClientConstructor(FEED_SERVICE, "Feed");

async function startGrpcFeed() {
  const started = new Set<string>();
  const cancelled = new Set<string>();
  const server = new grpc.Server();
  const handler =
    (name: string, sends: boolean): grpc.handleServerStreamingCall<unknown, unknown> =>
    (call) => {
      started.add(name);
      call.on("cancelled", () => cancelled.add(name));
      if (!sends) return;
      let n = 0;
      const tick = setInterval(() => call.write({ n: ++n }), 20);
      call.on("cancelled", () => clearInterval(tick));
      call.on("close", () => clearInterval(tick));
    };
  server.addService(FEED_SERVICE, { watch: handler("Watch", true), tail: handler("Tail", true), wait: handler("Wait", false) });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));
  return { port, started, cancelled, close: () => server.forceShutdown() };
}

describe("HTTP exchanges in flight follow policy reloads", () => {
  let ca: MeshCa;
  let app: Awaited<ReturnType<typeof startStreamingApp>>;
  let feed: Awaited<ReturnType<typeof startGrpcFeed>>;
  let dir: string;
  const sidecars: TestSidecarWithApp[] = [];
  const requests: ClientRequest[] = [];
  const sessions: ClientHttp2Session[] = [];
  const clients: grpc.Client[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "meshward-http-reload-"));
    ca = await startMeshCa();
    app = await startStreamingApp();
    feed = await startGrpcFeed();
  }, 60_000);
  afterEach(async () => {
    for (const request of requests.splice(0)) request.destroy();
    for (const session of sessions.splice(0)) session.destroy();
    for (const client of clients.splice(0)) client.close();
    for (const sidecar of sidecars.splice(0)) await sidecar.close();
  });
  afterAll(async () => {
    await app?.close();
    feed?.close();
    await ca?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  let pairs = 0;
  /** web's outbound sidecar → mTLS → feed's inbound sidecar (policy: the revocable one) → `appPort`. */
  const startPair = async (appPort: number) => {
    const policy = join(dir, `policy-${++pairs}.yaml`);
    writeFileSync(policy, policyText(true));
    const callee = await startTestSidecar(ca, { appId: "feed", app: `127.0.0.1:${appPort}`, policy });
    sidecars.push(callee);
    const web = await startTestSidecar(ca, { appId: "web", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { feed: `127.0.0.1:${callee.addresses.inbound.port}` } });
    sidecars.push(web);
    const metrics = async () => (await fetch(`http://127.0.0.1:${callee.addresses.status!.port}/metrics`)).text();
    const refusedForPolicy = async () => metricValue(await metrics(), "meshward_sidecar_refused_total", { direction: "inbound", reason: "policy" });
    const denials = async () => metricValue(await metrics(), "meshward_policy_denials_total", { caller: CALLER });
    /** Takes the revocable operations away and waits for the callee to apply it. */
    const revoke = async () => {
      writeFileSync(policy, policyText(false));
      await waitFor("the policy to be reloaded", () => callee.logs.lines.some((line) => String(line.msg).includes("access policy reloaded")));
    };
    const deniedLine = (operation: string) => callee.logs.find((line) => line.event === "policy-denied" && line.operation === operation);
    return { outboundPort: web.addresses.outbound!.port, refusedForPolicy, denials, revoke, deniedLine };
  };

  /** An HTTP/1.1 request through the outbound; what came back so far, and whether the response completed or was cut. */
  const http1 = (port: number, method: string, path: string, headers: Record<string, string> = {}) => {
    const state = { status: 0, headers: {} as IncomingMessage["headers"], body: "", ended: "open" as "open" | "complete" | "cut" };
    const req = httpRequest({ host: "127.0.0.1", port, method, path, headers: { "dapr-app-id": "feed", ...headers } }, (res) => {
      state.status = res.statusCode ?? 0;
      state.headers = res.headers;
      res.on("data", (d: Buffer) => (state.body += d.toString("latin1")));
      res.on("error", () => undefined);
      res.once("close", () => (state.ended = res.complete ? "complete" : "cut"));
    });
    req.on("error", () => (state.ended = state.ended === "open" ? "cut" : state.ended));
    requests.push(req);
    return { req, state };
  };
  const events = (body: string) => body.split("\n\n").filter((event) => event.startsWith("data:")).length;

  it("HTTP/1.1: a streaming response the reloaded policy denies is cut, its app connection closed; an allowed one streams on", async () => {
    const pair = await startPair(app.port);
    const kept = http1(pair.outboundPort, "GET", "/events/room-1");
    kept.req.end();
    const denied = http1(pair.outboundPort, "GET", "/live/feed");
    denied.req.end();
    await waitFor("both streams to carry events", () => events(kept.state.body) > 0 && events(denied.state.body) > 0);
    expect(denied.state.status).toBe(200);
    const refusedBefore = await pair.refusedForPolicy();

    await pair.revoke();
    await waitFor("the denied stream to be cut", () => denied.state.ended !== "open");
    expect(denied.state.ended).toBe("cut");
    await waitFor("the app's side of the denied stream to close", () => app.cut.has("/live/feed"));
    // The allowed stream was judged in the same pass and still carries new events.
    const seen = events(kept.state.body);
    await waitFor("more events on the allowed stream", () => events(kept.state.body) > seen + 2);
    expect(kept.state.ended).toBe("open");
    expect(app.cut.has("/events/room-1")).toBe(false);

    expect(pair.deniedLine("/live/feed")).toMatchObject({ caller: CALLER, verb: "GET" });
    expect(pair.deniedLine("/events/room-1")).toBeUndefined();
    expect(await pair.refusedForPolicy()).toBe(refusedBefore + 1);
    expect(await pair.denials()).toBeGreaterThanOrEqual(1);
  }, 60_000);

  it("HTTP/1.1: an upload still on its way when the reloaded policy denies it gets 403 E_POLICY_DENIED, and the app's connection closes", async () => {
    const pair = await startPair(app.port);
    const upload = http1(pair.outboundPort, "POST", "/upload/big", { "content-length": "1000000" });
    upload.req.write(Buffer.alloc(1000, 97));
    await waitFor("the app to receive the start of the upload", () => (app.arrived.get("/upload/big") ?? 0) >= 1000);
    const refusedBefore = await pair.refusedForPolicy();

    await pair.revoke();
    await waitFor("the answer to the upload", () => upload.state.ended !== "open" && upload.state.status !== 0);
    expect(upload.state.status).toBe(403);
    expect(upload.state.headers["x-meshward-error"]).toBe("E_POLICY_DENIED");
    expect(JSON.parse(upload.state.body)).toMatchObject({ error: "E_POLICY_DENIED", caller: CALLER });
    await waitFor("the app's side of the upload to close", () => app.cut.has("/upload/big"));
    expect(app.arrived.get("/upload/big")).toBeLessThan(1_000_000);

    expect(pair.deniedLine("/upload/big")).toMatchObject({ caller: CALLER, verb: "POST" });
    expect(await pair.refusedForPolicy()).toBe(refusedBefore + 1);
  }, 60_000);

  it("HTTP/2 (h2c from the app, HTTP/1.1 to it): a denied streaming response is reset (CANCEL), a denied upload gets 403, an allowed stream flows on", async () => {
    const pair = await startPair(app.port);
    const session = http2Connect(`http://127.0.0.1:${pair.outboundPort}`);
    session.on("error", () => undefined);
    sessions.push(session);
    const open = (headers: Record<string, string>) => {
      const stream: ClientHttp2Stream = session.request({ "dapr-app-id": "feed", ...headers });
      const state = { status: 0, headers: {} as Record<string, unknown>, body: "", ended: false, closed: false, rstCode: -1 };
      stream.on("error", () => undefined);
      stream.on("response", (h) => {
        state.status = Number(h[":status"]);
        state.headers = { ...h };
      });
      stream.on("data", (d: Buffer) => (state.body += d.toString("latin1")));
      stream.once("end", () => (state.ended = true));
      stream.once("close", () => {
        state.closed = true;
        state.rstCode = stream.rstCode ?? -1;
      });
      return { stream, state };
    };
    const kept = open({ ":path": "/events/room-2" });
    const denied = open({ ":path": "/live/h2" });
    const upload = open({ ":path": "/upload/h2", ":method": "POST", "content-length": "1000000" });
    upload.stream.write(Buffer.alloc(1000, 97));
    await waitFor("both streams to carry events and the upload to arrive", () => events(kept.state.body) > 0 && events(denied.state.body) > 0 && (app.arrived.get("/upload/h2") ?? 0) >= 1000);
    const refusedBefore = await pair.refusedForPolicy();

    await pair.revoke();
    // The upload's answer is whole; the caller still holds its side of the stream open.
    await waitFor("the denied stream to end and the upload to be answered", () => denied.state.closed && upload.state.ended);
    expect(denied.state.status).toBe(200);
    expect(denied.state.rstCode).toBe(h2.NGHTTP2_CANCEL);
    expect(upload.state.status).toBe(403);
    expect(upload.state.headers["x-meshward-error"]).toBe("E_POLICY_DENIED");
    expect(JSON.parse(upload.state.body)).toMatchObject({ error: "E_POLICY_DENIED", caller: CALLER });
    await waitFor("the app's side of both to close", () => app.cut.has("/live/h2") && app.cut.has("/upload/h2"));
    const seen = events(kept.state.body);
    await waitFor("more events on the allowed stream", () => events(kept.state.body) > seen + 2);
    expect(kept.state.closed).toBe(false);

    expect(pair.deniedLine("/live/h2")).toMatchObject({ caller: CALLER, verb: "GET" });
    expect(pair.deniedLine("/upload/h2")).toMatchObject({ caller: CALLER, verb: "POST" });
    expect(await pair.refusedForPolicy()).toBe(refusedBefore + 2);
  }, 60_000);

  it("gRPC: a denied server stream is cancelled, a denied call not yet answered gets PERMISSION_DENIED, an allowed stream flows on; the app's calls are cancelled", async () => {
    const pair = await startPair(feed.port);
    const client = new FeedClient(`127.0.0.1:${pair.outboundPort}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & Record<"watch" | "tail" | "wait", (request: unknown, metadata: grpc.Metadata) => grpc.ClientReadableStream<unknown>>;
    clients.push(client);
    const call = (method: "watch" | "tail" | "wait") => {
      const metadata = new grpc.Metadata();
      metadata.set("dapr-app-id", "feed");
      const stream = client[method]({}, metadata);
      const state = { messages: 0, status: undefined as grpc.StatusObject | undefined };
      stream.on("data", () => state.messages++);
      stream.on("error", () => undefined);
      stream.on("status", (status: grpc.StatusObject) => (state.status = status));
      return { stream, state };
    };
    const watch = call("watch");
    const tail = call("tail");
    const wait = call("wait");
    await waitFor("the streams to carry messages and Wait to reach the app", () => watch.state.messages > 0 && tail.state.messages > 0 && feed.started.has("Wait"));
    const refusedBefore = await pair.refusedForPolicy();

    await pair.revoke();
    await waitFor("the denied calls to end", () => tail.state.status !== undefined && wait.state.status !== undefined);
    expect(tail.state.status!.code).toBe(grpc.status.CANCELLED);
    expect(wait.state.status!.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(wait.state.status!.details).toContain("E_POLICY_DENIED");
    await waitFor("the app's denied calls to be cancelled", () => feed.cancelled.has("Tail") && feed.cancelled.has("Wait"));
    const seen = watch.state.messages;
    await waitFor("more messages on the allowed stream", () => watch.state.messages > seen + 2);
    expect(watch.state.status).toBeUndefined();
    expect(feed.cancelled.has("Watch")).toBe(false);

    // gRPC calls are judged without a verb.
    expect(pair.deniedLine("/test.Feed/Tail")).toMatchObject({ caller: CALLER, verb: "" });
    expect(pair.deniedLine("/test.Feed/Wait")).toMatchObject({ caller: CALLER, verb: "" });
    expect(await pair.refusedForPolicy()).toBe(refusedBefore + 2);
    watch.stream.cancel();
  }, 60_000);
});
