import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { ClientHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inboundH2Session, outboundH2Session, startMeshCa, startTestSidecar, TD, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// An HTTP/2 caller that sends `expect: 100-continue` and waits for the 100 before its body
// (node:http2's 'continue' event, Java's expectContinue) never got it: the h2 → HTTP/1 bridge
// dropped every interim response and forwardH2 (h2 → h2: outbound → peer, gRPC) had no 1xx
// handling, so the caller stalled until idleTimeout, then 408. Now the app's 100 reaches an
// allowed caller, directly (bridge) and through the outbound (forwardH2 → the peer's bridge);
// a caller the policy denies gets its 403 and no 100, and the app nothing. The app is node:http,
// which answers 100 itself when a request asks for it. In-process sidecars on real sockets.

const POLICY = `kind: Configuration
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
          - name: /up/**
            httpVerb: ["POST"]
            action: allow
`;

describe("HTTP/2: 100 Continue", () => {
  let ca: MeshCa;
  let app: Server;
  let dir: string;
  /** What reached the app: path and body. */
  const reached: string[] = [];
  let callee: TestSidecarWithApp;
  let caller: TestSidecarWithApp;
  let client: { cert: string; key: string };
  const sessions: ClientHttp2Session[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    dir = mkdtempSync(join(tmpdir(), "meshward-h2-continue-"));
    const policy = join(dir, "policy.yaml");
    writeFileSync(policy, POLICY);
    app = createServer((req, res) => {
      let body = "";
      req.on("data", (d: Buffer) => (body += d.toString()));
      req.on("end", () => {
        reached.push(`${req.url} ${body}`);
        res.end(`got ${body}`);
      });
    });
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    const appAddress = `127.0.0.1:${(app.address() as AddressInfo).port}`;
    // idleTimeout 3 s: a caller that never gets its 100 ends with a 408 rather than hanging.
    callee = await startTestSidecar(ca, { appId: "callee", app: appAddress, policy, limits: { idleTimeout: "3s" } });
    caller = await startTestSidecar(ca, { appId: "web", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { callee: `127.0.0.1:${callee.addresses.inbound.port}` }, limits: { idleTimeout: "3s" } });
    client = await ca.clientFiles("default", "web");
  }, 60_000);
  afterAll(async () => {
    for (const session of sessions) session.destroy();
    await caller?.close();
    await callee?.close();
    app?.closeAllConnections();
    await new Promise<void>((resolve) => (app ? app.close(() => resolve()) : resolve()));
    await ca?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const inbound = () => inboundH2Session(callee.addresses.inbound.port, client, ca.bundlePem, sessions);
  const outbound = () => outboundH2Session(caller.addresses.outbound!.port, sessions);
  /**
   * POST with `expect: 100-continue`, the body sent only on 'continue': the events in order
   * ("continue", "response <status>") and the body of the answer.
   */
  const waitingPost = (session: ClientHttp2Session, headers: Record<string, string>) =>
    new Promise<{ events: string[]; body: string }>((resolve, reject) => {
      const stream = session.request({ ":method": "POST", expect: "100-continue", ...headers }, { endStream: false });
      const events: string[] = [];
      let body = "";
      stream.on("continue", () => {
        events.push("continue");
        stream.end("the body");
      });
      stream.on("response", (h) => events.push(`response ${h[":status"]}`));
      stream.on("data", (d: Buffer) => (body += d.toString()));
      stream.on("end", () => resolve({ events, body }));
      stream.on("error", reject);
    });

  it("inbound (h2 → HTTP/1.1 app): the app's 100 reaches an allowed caller, which then sends its body", async () => {
    const answer = await waitingPost(inbound(), { ":path": "/up/one" });
    expect(answer).toEqual({ events: ["continue", "response 200"], body: "got the body" });
    expect(reached).toContain("/up/one the body");
  });

  it("outbound (h2 → peer sidecar → HTTP/1.1 app): the 100 is passed along the whole way", async () => {
    const answer = await waitingPost(outbound(), { ":path": "/up/two", "dapr-app-id": "callee" });
    expect(answer).toEqual({ events: ["continue", "response 200"], body: "got the body" });
    expect(reached).toContain("/up/two the body");
  });

  it("a caller the policy denies gets 403 and no 100; the app gets nothing", async () => {
    const before = reached.length;
    const answer = await waitingPost(inbound(), { ":path": "/admin" });
    expect(answer.events).toEqual(["response 403"]);
    expect(reached.length).toBe(before);
  });
});
