/**
 * Which rules judge a request that an app may run as a gRPC method: the sidecar must judge each
 * request the way the app will dispatch it, or refuse it.
 *
 * Upstream (read, not copied):
 * - grpc-go internal/grpcutil/method.go, ContentSubtype: "application/grpc" compared
 *   case-sensitively ("contentType is assumed to be lowercase already"); the dispatch grpc-go
 *   documents for gRPC and HTTP on one port (Server.ServeHTTP): `r.ProtoMajor == 2 &&
 *   strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")`. grpc-dotnet
 *   (CommonGrpcProtocolHelpers.IsContentType, OrdinalIgnoreCase) and connect-go
 *   (canonicalizeContentType, mime.ParseMediaType) ignore case: `Application/grpc` is gRPC to them
 *   and HTTP to grpc-go, so it is refused.
 * - gRPC-Web (application/grpc-web*, and improbable-eng's grpc-websockets subprotocol) and Connect
 *   (application/connect+*, Connect-Protocol-Version, GET ?connect=v1; connect-go
 *   WithRequireConnectProtocolHeader exists "so that HTTP proxies ... can easily identify valid
 *   Connect requests") are gRPC method calls to servers that speak them and HTTP to others.
 * - dapr/dapr pkg/acl ApplyAccessControlPolicies: Dapr picks gRPC or HTTP rules by the app's
 *   configured protocol, not by the request, so neither set alone covers such a call. meshward
 *   judges them by both: they must pass the gRPC rules and the HTTP rules.
 *
 * Real parts: the sidecar in-process (test PKI identity), callers over mutual TLS (node:http2, raw
 * HTTP/1.1 on node:tls), and an app on one plaintext port serving HTTP/1.1 and h2c that dispatches
 * as grpc-go documents, with a gRPC-Web/Connect handler as connect-go or Envoy's grpc_web filter would.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect as http2Connect } from "node:http2";
import type { Http2ServerResponse } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sidecarConfigSchema } from "../../src/config/sidecar.ts";
import { startSidecar } from "../../src/proxy/sidecar.ts";
import { startH1AndH2cApp } from "../helpers/app-servers.ts";
import { createTestPki, manualIdentitySource } from "../helpers/test-pki.ts";
import type { TestPki } from "../helpers/test-pki.ts";
import { logCapture, withInbound, type SidecarWithApp } from "./fixtures.ts";

const TD = "rpc.test";
// `orders`: the review's policy (HTTP GET /items/** and any gRPC call, nothing else).
// `frontend`: default allow, with gRPC-only rules (no httpVerb) on /shop.Admin/** and an HTTP POST
// deny on a method gRPC may call.
const POLICY = `kind: Configuration
spec:
  accessControl:
    defaultAction: deny
    trustDomain: ${TD}
    policies:
      - appId: orders
        namespace: shop
        trustDomain: ${TD}
        defaultAction: deny
        operations:
          - name: /items/**
            httpVerb: ["GET"]
            action: allow
          - name: /**
            action: allow
      - appId: frontend
        namespace: shop
        trustDomain: ${TD}
        defaultAction: allow
        operations:
          - name: /shop.Admin/**
            action: deny
          - name: /shop.Catalog/Hidden
            action: allow
          - name: /shop.Catalog/Hidden
            httpVerb: ["POST"]
            action: deny
`;

interface Handled {
  readonly handler: "grpc" | "rpc-over-http" | "http";
  readonly httpVersion: string;
  readonly method: string;
  readonly url: string;
}

/**
 * One plaintext port, HTTP/1.1 and h2c. HTTP/2 with a content type starting `application/grpc`
 * (case-sensitive, grpc-go's documented dispatch) goes to the gRPC handler; gRPC-Web, Connect and
 * grpc-websockets requests to an RPC handler (as connect-go or Envoy's grpc_web filter run them);
 * anything else to the HTTP handler.
 */
async function startDispatchingApp(): Promise<{ port: number; handled: Handled[]; close(): Promise<void> }> {
  const handled: Handled[] = [];
  const app = await startH1AndH2cApp((req, res) => {
    const type = String(req.headers["content-type"] ?? "");
    const grpc = req.httpVersionMajor === 2 && type.startsWith("application/grpc");
    const rpc = /^application\/(grpc-web|connect\+)/i.test(type) || req.headers["connect-protocol-version"] !== undefined || /[?&]connect=v1(&|$)/.test(req.url ?? "") || req.headers["sec-websocket-protocol"] === "grpc-websockets";
    const handler = grpc ? "grpc" : rpc ? "rpc-over-http" : "http";
    req.resume();
    req.on("end", () => {
      handled.push({ handler, httpVersion: req.httpVersion, method: req.method ?? "", url: req.url ?? "" });
      if (grpc) {
        (res as Http2ServerResponse).writeHead(200, { "content-type": "application/grpc" });
        res.addTrailers({ "grpc-status": "0" });
        res.end();
        return;
      }
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(`${handler} handler ran ${req.method} ${req.url}`);
    });
  });
  return { ...app, handled };
}

describe("sidecar inbound: gRPC, gRPC-Web and Connect calls are judged as the app dispatches them", () => {
  let pki: TestPki;
  let dir: string;
  let app: Awaited<ReturnType<typeof startDispatchingApp>>;
  let sidecar: SidecarWithApp;

  beforeAll(async () => {
    pki = await createTestPki({ trustDomain: TD });
    dir = mkdtempSync(join(tmpdir(), "meshward-rpc-"));
    writeFileSync(join(dir, "policy.yaml"), POLICY);
    app = await startDispatchingApp();
    const identity = manualIdentitySource(pki.snapshot({ spiffeId: `spiffe://${TD}/ns/shop/catalog` }));
    const config = sidecarConfigSchema.parse({ appId: "catalog", namespace: "shop", ca: "127.0.0.1:1", bundle: "unused.pem", inbound: "127.0.0.1:0", app: `127.0.0.1:${app.port}`, policy: join(dir, "policy.yaml") });
    sidecar = withInbound(await startSidecar(config, { logger: pino({ level: "info" }, logCapture()), identity }));
  });
  afterAll(async () => {
    await sidecar?.close();
    await app?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  const credentials = (appId: string) => {
    const svid = pki.issueSvid({ spiffeId: `spiffe://${TD}/ns/shop/${appId}` });
    return { cert: svid.certChainPem, key: svid.privateKey.export({ format: "pem", type: "pkcs8" }) as string, ca: pki.rootPem };
  };

  /** One HTTP/2 request over mTLS as `appId`: status, grpc-status (headers or trailers), body, and what the app handled for it. */
  const h2 = async (appId: string, headers: Record<string, string>): Promise<{ status: number; grpcStatus: string | undefined; body: string; handled: Handled[] }> => {
    const before = app.handled.length;
    const session = http2Connect(`https://127.0.0.1:${sidecar.addresses.inbound.port}`, { ...credentials(appId), checkServerIdentity: () => undefined });
    try {
      const answer = await new Promise<{ status: number; grpcStatus: string | undefined; body: string }>((resolve, reject) => {
        const stream = session.request({ ":method": "POST", ...headers });
        let status = 0;
        let grpcStatus: string | undefined;
        let body = "";
        stream.on("response", (h) => {
          status = Number(h[":status"]);
          grpcStatus = h["grpc-status"] as string | undefined;
        });
        stream.on("trailers", (t) => (grpcStatus = t["grpc-status"] as string | undefined));
        stream.setEncoding("utf8");
        stream.on("data", (d: string) => (body += d));
        stream.on("error", reject);
        stream.on("end", () => resolve({ status, grpcStatus, body }));
        stream.end("x");
      });
      return { ...answer, handled: app.handled.slice(before) };
    } finally {
      session.close();
    }
  };

  /** One raw HTTP/1.1 request over mTLS as `appId` (`connection: close` added): status line, body, and what the app handled. */
  const h1 = async (appId: string, head: string, body = ""): Promise<{ status: number; body: string; handled: Handled[] }> => {
    const before = app.handled.length;
    const socket = tlsConnect({ host: "127.0.0.1", port: sidecar.addresses.inbound.port, ...credentials(appId), checkServerIdentity: () => undefined, ALPNProtocols: ["http/1.1"] });
    try {
      const text = await new Promise<string>((resolve, reject) => {
        let received = "";
        socket.setEncoding("latin1");
        socket.on("data", (d: string) => (received += d));
        socket.on("error", reject);
        socket.on("close", () => resolve(received));
        socket.write(`${head}\r\nHost: catalog\r\nconnection: close\r\n${body === "" ? "" : `content-length: ${body.length}\r\n`}\r\n${body}`);
      });
      return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), body: text.slice(text.indexOf("\r\n\r\n") + 4), handled: app.handled.slice(before) };
    } finally {
      socket.destroy();
    }
  };

  it("refuses application/grpc in another letter case (HTTP/2 and HTTP/1.1): judged as gRPC, grpc-go's dispatch would run the HTTP handler", async () => {
    for (const type of ["Application/grpc", "APPLICATION/GRPC+proto", "application/gRPC"]) {
      const r = await h2("orders", { ":path": "/admin/reset", "content-type": type });
      expect(r.status, type).toBe(400);
      expect(JSON.parse(r.body), type).toMatchObject({ error: "E_AMBIGUOUS_REQUEST", message: expect.stringMatching(/letter case/) });
      expect(r.handled, type).toEqual([]);
    }
    const overH1 = await h1("orders", "POST /admin/reset HTTP/1.1\r\nContent-Type: Application/grpc", "x");
    expect(overH1.status).toBe(400);
    expect(overH1.body).toMatch(/E_AMBIGUOUS_REQUEST/);
    expect(overH1.handled).toEqual([]);
  });

  it("still judges lower-case application/grpc as gRPC and sends it over HTTP/2; denies the same path as HTTP", async () => {
    const grpc = await h2("orders", { ":path": "/admin/reset", "content-type": "application/grpc", te: "trailers" });
    expect([grpc.status, grpc.grpcStatus]).toEqual([200, "0"]);
    expect(grpc.handled).toEqual([{ handler: "grpc", httpVersion: "2.0", method: "POST", url: "/admin/reset" }]);
    const plus = await h2("orders", { ":path": "/shop.Catalog/List", "content-type": "application/grpc+proto", te: "trailers" });
    expect(plus.handled.map((h) => h.handler)).toEqual(["grpc"]);
    const http = await h2("orders", { ":path": "/admin/reset", "content-type": "text/plain" });
    expect(http.status).toBe(403);
    expect(http.handled).toEqual([]);
  });

  it("denies a gRPC-Web call (HTTP/2 and HTTP/1.1) that the gRPC rules deny, though the HTTP rules allow it", async () => {
    for (const type of ["application/grpc-web+proto", "application/grpc-web-text", "Application/GRPC-Web"]) {
      const r = await h2("frontend", { ":path": "/shop.Admin/Reset", "content-type": type });
      expect(r.status, type).toBe(403);
      expect(JSON.parse(r.body), type).toMatchObject({ error: "E_POLICY_DENIED" });
      expect(r.handled, type).toEqual([]);
    }
    const overH1 = await h1("frontend", "POST /shop.Admin/Reset HTTP/1.1\r\nContent-Type: application/grpc-web+proto", "x");
    expect(overH1.status).toBe(403);
    expect(overH1.handled).toEqual([]);
  });

  it("denies a gRPC-Web call that the HTTP rules deny, though the gRPC rules allow it (both must allow); gRPC itself passes", async () => {
    const web = await h2("frontend", { ":path": "/shop.Catalog/Hidden", "content-type": "application/grpc-web+proto" });
    expect(web.status).toBe(403);
    expect(web.handled).toEqual([]);
    const grpc = await h2("frontend", { ":path": "/shop.Catalog/Hidden", "content-type": "application/grpc", te: "trailers" });
    expect([grpc.status, grpc.grpcStatus]).toEqual([200, "0"]);
    expect(grpc.handled.map((h) => h.handler)).toEqual(["grpc"]);
  });

  it("denies Connect calls the gRPC rules deny: unary POST with Connect-Protocol-Version, streaming, GET ?connect=v1", async () => {
    const unary = await h1("frontend", "POST /shop.Admin/Reset HTTP/1.1\r\nContent-Type: application/json\r\nConnect-Protocol-Version: 1", "{}");
    expect(unary.status).toBe(403);
    const streaming = await h2("frontend", { ":path": "/shop.Admin/Reset", "content-type": "application/connect+json" });
    expect(streaming.status).toBe(403);
    const get = await h1("frontend", "GET /shop.Admin/Reset?connect=v1&encoding=json&message=%7B%7D HTTP/1.1");
    expect(get.status).toBe(403);
    for (const r of [unary, streaming, get]) expect(r.handled).toEqual([]);
  });

  it("denies a grpc-websockets upgrade (improbable-eng gRPC-Web over WebSocket) the gRPC rules deny", async () => {
    const head = "GET /shop.Admin/Reset HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
    const refused = await h1("frontend", `${head}\r\nSec-WebSocket-Protocol: grpc-websockets`);
    expect(refused.status).toBe(403);
    expect(refused.handled).toEqual([]);
  });

  it("allows gRPC-Web and Connect calls both rule sets allow, and leaves plain HTTP to the HTTP rules", async () => {
    const web = await h2("frontend", { ":path": "/shop.Catalog/List", "content-type": "application/grpc-web+proto" });
    expect(web.status).toBe(200);
    expect(web.handled).toEqual([{ handler: "rpc-over-http", httpVersion: "1.1", method: "POST", url: "/shop.Catalog/List" }]);
    const connect = await h1("frontend", "POST /shop.Catalog/List HTTP/1.1\r\nContent-Type: application/json\r\nConnect-Protocol-Version: 1", "{}");
    expect(connect.status).toBe(200);
    expect(connect.handled.map((h) => h.handler)).toEqual(["rpc-over-http"]);
    const http = await h1("frontend", "POST /orders/1 HTTP/1.1\r\nContent-Type: application/json", "{}");
    expect(http.status).toBe(200);
    expect(http.handled.map((h) => h.handler)).toEqual(["http"]);
    // A Connect unary call without its marks is plain HTTP to the sidecar (documented: require the
    // header in connect-go, or give such services HTTP rules too).
    const unmarked = await h1("frontend", "POST /shop.Admin/Reset HTTP/1.1\r\nContent-Type: application/json", "{}");
    expect(unmarked.status).toBe(200);
    expect(unmarked.handled.map((h) => h.handler)).toEqual(["http"]);
  });
});
