/**
 * Request fields that servers and frameworks read as the request's target (review sidecar-4,
 * HIGH-1 and HIGH-2), and field names holding '_' (headersWithUnderscores, Envoy's
 * headers_with_underscores_action):
 *   - `X-Original-URL` / `X-Rewrite-URL` (Yii 1/2, ZF1/Magento 1, Symfony before CVE-2018-14773),
 *     `SCRIPT_NAME` (gunicorn cuts it out of PATH_INFO) and the other CGI meta-variables are
 *     refused (400 E_AMBIGUOUS_REQUEST) in every spelling, in HTTP/1.1 heads, trailers and
 *     upgrades and over HTTP/2, whatever headersWithUnderscores says;
 *   - any other name with '_' is refused by default, removed with `drop` (counted in
 *     meshward_sidecar_dropped_fields_total), forwarded with `allow`; gRPC metadata keys over
 *     HTTP/2 keep theirs.
 *
 * Real parts: three sidecars in-process (reject, drop, allow; test PKI identity, no access
 * control: every request is allowed, so only these checks can refuse one), callers over mutual
 * TLS (raw HTTP/1.1 bytes on node:tls, node:http2), a node:http / node:http2 app recording the
 * fields it got; and the CLI as a process for a bad value.
 */
import { execFile } from "node:child_process";
import { connect as http2Connect } from "node:http2";
import type { Http2ServerResponse } from "node:http2";
import { connect as tlsConnect } from "node:tls";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { sidecarConfigSchema } from "../../src/config/sidecar.ts";
import type { UnderscoreAction } from "../../src/proxy/canonical.ts";
import { startSidecar } from "../../src/proxy/sidecar.ts";
import { startH1AndH2cApp } from "../helpers/app-servers.ts";
import { createTestPki, manualIdentitySource } from "../helpers/test-pki.ts";
import type { TestPki } from "../helpers/test-pki.ts";
import { createServer as createHttpServer } from "node:http";
import type { Server } from "node:http";
import type { ClientHttp2Session } from "node:http2";
import { connect as netConnect } from "node:net";
import type { AddressInfo } from "node:net";
import { logCapture, metricValue, outboundH2Session, startMeshCa, startTestSidecar, withInbound, type LogCapture, type MeshCa, type SidecarWithApp, type TestSidecarWithApp } from "./fixtures.ts";

const TD = "target-override.test";
const REPO = fileURLToPath(new URL("../..", import.meta.url));

interface Received {
  readonly httpVersion: string;
  readonly url: string;
  readonly rawHeaders: string[];
  rawTrailers: string[];
}

describe("sidecar inbound: target-override fields and headersWithUnderscores", () => {
  let pki: TestPki;
  let app: Awaited<ReturnType<typeof startH1AndH2cApp>>;
  const sidecars = new Map<UnderscoreAction, { sidecar: SidecarWithApp; logs: LogCapture }>();
  const received: Received[] = [];
  const clients: { destroy(): void }[] = [];

  beforeAll(async () => {
    pki = await createTestPki({ trustDomain: TD });
    app = await startH1AndH2cApp((req, res) => {
      const record: Received = { httpVersion: req.httpVersion, url: req.url ?? "", rawHeaders: [...req.rawHeaders], rawTrailers: [] };
      received.push(record);
      req.resume();
      req.on("error", () => undefined);
      req.on("end", () => {
        record.rawTrailers = [...req.rawTrailers];
        if (req.httpVersionMajor === 2 && String(req.headers["content-type"]).startsWith("application/grpc")) {
          (res as Http2ServerResponse).writeHead(200, { "content-type": "application/grpc" });
          res.addTrailers({ "grpc-status": "0" });
          res.end();
          return;
        }
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("ok");
      });
    });
    for (const action of ["reject", "drop", "allow"] as const) {
      const identity = manualIdentitySource(pki.snapshot({ spiffeId: `spiffe://${TD}/ns/shop/catalog` }));
      const logs = logCapture();
      const config = sidecarConfigSchema.parse({ appId: "catalog", namespace: "shop", ca: "127.0.0.1:1", bundle: "unused.pem", inbound: "127.0.0.1:0", app: `127.0.0.1:${app.port}`, ...(action === "reject" ? {} : { headersWithUnderscores: action }) });
      sidecars.set(action, { sidecar: withInbound(await startSidecar(config, { logger: pino({ level: "info" }, logs), identity })), logs });
    }
  });
  afterEach(() => {
    for (const client of clients.splice(0)) client.destroy();
  });
  afterAll(async () => {
    for (const { sidecar } of sidecars.values()) await sidecar.close();
    await app?.close();
  });

  const credentials = () => {
    const svid = pki.issueSvid({ spiffeId: `spiffe://${TD}/ns/shop/orders` });
    return { cert: svid.certChainPem, key: svid.privateKey.export({ format: "pem", type: "pkcs8" }) as string, ca: pki.rootPem, checkServerIdentity: () => undefined };
  };
  const port = (action: UnderscoreAction) => sidecars.get(action)!.sidecar.addresses.inbound.port;

  /** Raw HTTP/1.1 bytes over mTLS (the request closes the connection); what was answered, and what the app got. */
  const h1 = async (action: UnderscoreAction, bytes: string): Promise<{ answer: string; received: Received[] }> => {
    const before = received.length;
    const socket = tlsConnect({ host: "127.0.0.1", port: port(action), ...credentials(), ALPNProtocols: ["http/1.1"] });
    clients.push(socket);
    let answer = "";
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => (answer += d));
    socket.on("error", () => undefined);
    await new Promise<void>((resolve) => socket.once("secureConnect", () => resolve()));
    socket.write(bytes);
    await new Promise<void>((resolve) => socket.once("close", () => resolve()));
    return { answer, received: received.slice(before) };
  };
  const get = (fields: string) => `GET /items/x/admin HTTP/1.1\r\nHost: catalog\r\n${fields}Connection: close\r\n\r\n`;

  /** An HTTP/2 request over mTLS; its status and what the app got. */
  const h2 = async (action: UnderscoreAction, headers: Record<string, string>, body?: string): Promise<{ status: number; grpcStatus: string | undefined; received: Received[] }> => {
    const before = received.length;
    const session = http2Connect(`https://127.0.0.1:${port(action)}`, credentials());
    clients.push(session);
    const answer = await new Promise<{ status: number; grpcStatus: string | undefined }>((resolve, reject) => {
      const stream = session.request({ ":method": "GET", ":path": "/items/x/admin", ...headers }, { endStream: body === undefined });
      let status = 0;
      let grpcStatus: string | undefined;
      stream.on("response", (h) => {
        status = Number(h[":status"]);
        grpcStatus = h["grpc-status"] as string | undefined;
      });
      stream.on("trailers", (t) => (grpcStatus = t["grpc-status"] as string | undefined));
      stream.on("error", reject);
      stream.resume();
      stream.on("end", () => resolve({ status, grpcStatus }));
      if (body !== undefined) stream.end(body);
    });
    session.close();
    return { ...answer, received: received.slice(before) };
  };
  const names = (r: Received) => r.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());

  it("refuses X-Original-URL, X-Rewrite-Url and SCRIPT_NAME in every spelling over HTTP/1.1, whatever headersWithUnderscores says: 400 E_AMBIGUOUS_REQUEST, nothing reaches the app", async () => {
    for (const action of ["reject", "drop", "allow"] as const) {
      for (const name of ["X-Original-URL", "X-Rewrite-Url", "X_Rewrite_Url", "SCRIPT_NAME", "script_name", "Script-Name", "PATH_INFO"]) {
        const r = await h1(action, get(`${name}: /items/x\r\n`));
        expect(r.answer, `${action} ${name}`).toMatch(/^HTTP\/1\.1 400 [^]*E_AMBIGUOUS_REQUEST/);
        expect(r.answer, `${action} ${name}`).toContain(name.toLowerCase());
        expect(r.received, `${action} ${name}`).toEqual([]);
      }
    }
  });

  it("refuses them in a chunked trailer section and on an Upgrade request", async () => {
    for (const action of ["reject", "allow"] as const) {
      const trailer = await h1(action, `POST /upload HTTP/1.1\r\nHost: catalog\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Rewrite-Url: /admin\r\n\r\n`);
      expect(trailer.answer, action).toMatch(/^HTTP\/1\.1 400 [^]*E_AMBIGUOUS_REQUEST[^]*trailer section[^]*x-rewrite-url/);
      expect(trailer.received.map((r) => r.rawTrailers), action).not.toContainEqual(expect.arrayContaining(["X-Rewrite-Url"]));
      const upgrade = await h1(action, `GET /items/ws HTTP/1.1\r\nHost: catalog\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Original-URL: /admin\r\n\r\n`);
      expect(upgrade.answer, action).toMatch(/^HTTP\/1\.1 400 [^]*E_AMBIGUOUS_REQUEST[^]*x-original-url/);
      expect(upgrade.received, action).toEqual([]);
    }
  });

  it("refuses them over HTTP/2, to the HTTP/1.1 app and for gRPC", async () => {
    for (const action of ["reject", "allow"] as const) {
      for (const name of ["x-rewrite-url", "x-original-url", "script_name", "x_original_url"]) {
        const r = await h2(action, { [name]: "/items/x" });
        expect(r.status, `${action} ${name}`).toBe(400);
        expect(r.received, `${action} ${name}`).toEqual([]);
        const grpc = await h2(action, { ":method": "POST", "content-type": "application/grpc", te: "trailers", [name]: "/admin" }, "x");
        expect(grpc.status, `gRPC ${action} ${name}`).toBe(400);
        expect(grpc.received, `gRPC ${action} ${name}`).toEqual([]);
      }
    }
  });

  it("headersWithUnderscores reject (the default): 400 over HTTP/1.1 heads, trailers and HTTP/2; gRPC metadata keys with '_' go on", async () => {
    const head = await h1("reject", get("X_Trace: 1\r\n"));
    expect(head.answer).toMatch(/^HTTP\/1\.1 400 [^]*E_AMBIGUOUS_REQUEST[^]*X_Trace/);
    expect(head.received).toEqual([]);
    const trailer = await h1("reject", `POST /upload HTTP/1.1\r\nHost: catalog\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nx_checksum: abc\r\n\r\n`);
    expect(trailer.answer).toMatch(/^HTTP\/1\.1 400 [^]*trailer section/);
    expect((await h2("reject", { x_trace: "1" })).status).toBe(400);
    const grpc = await h2("reject", { ":method": "POST", "content-type": "application/grpc", te: "trailers", x_trace: "1" }, "x");
    expect([grpc.status, grpc.grpcStatus]).toEqual([200, "0"]);
    expect(grpc.received.map(names)).toEqual([expect.arrayContaining(["x_trace"])]);
  });

  it("headersWithUnderscores drop: the request goes on without them (head, trailers, HTTP/2), counted and logged", async () => {
    const { sidecar, logs } = sidecars.get("drop")!;
    const head = await h1("drop", get("X_Trace: 1\r\nX-Keep: 2\r\n"));
    expect(head.answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(head.received.map(names)).toEqual([expect.arrayContaining(["x-keep"])]);
    expect(head.received.flatMap(names).filter((n) => n.includes("_"))).toEqual([]);
    const trailer = await h1("drop", `POST /upload HTTP/1.1\r\nHost: catalog\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nx_checksum: abc\r\nX-Part: 1\r\n\r\n`);
    expect(trailer.answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(trailer.received.map((r) => r.rawTrailers)).toEqual([["X-Part", "1"]]);
    const bridged = await h2("drop", { x_trace: "1", "x-keep": "2" });
    expect(bridged.status).toBe(200);
    expect(bridged.received.map(names)).toEqual([expect.arrayContaining(["x-keep"])]);
    expect(bridged.received.flatMap(names).filter((n) => n.includes("_"))).toEqual([]);
    expect(metricValue(await sidecar.metrics.text(), "meshward_sidecar_dropped_fields_total", { direction: "inbound" })).toBe(3);
    expect(logs.find((line) => line.event === "dropped-fields")).toMatchObject({ fields: ["X_Trace"] });
  });

  it("headersWithUnderscores allow: forwarded as they are", async () => {
    const head = await h1("allow", get("X_Trace: 1\r\n"));
    expect(head.answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(head.received.map(names)).toEqual([expect.arrayContaining(["x_trace"])]);
  });

  it("a bad --headers-with-underscores value is E_CONFIG_INVALID naming the flag and the values (CLI process)", async () => {
    const failed = await promisify(execFile)(process.execPath, ["--import", "tsx", "src/cli/main.ts", "sidecar", "--app-id", "catalog", "--ca", "127.0.0.1:1", "--headers-with-underscores", "bogus"], { cwd: REPO, timeout: 60_000 }).then(
      () => undefined,
      (error: { code?: number; stderr?: string }) => error,
    );
    expect(failed?.code).not.toBe(0);
    expect(failed?.stderr).toMatch(/--headers-with-underscores: headersWithUnderscores:.*reject.*drop.*allow.*E_CONFIG_INVALID/);
  }, 60_000);
});

describe("sidecar outbound: headersWithUnderscores drop and target-override fields (HTTP/1.1 relay, h2 → peer sidecar)", () => {
  let ca: MeshCa;
  let app: Server;
  let callee: TestSidecarWithApp;
  let caller: TestSidecarWithApp;
  const seen: string[][] = [];
  const sessions: ClientHttp2Session[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    app = createHttpServer((req, res) => {
      seen.push(req.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase()));
      req.resume();
      req.on("end", () => res.end("ok"));
    });
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    // The callee allows '_' names: only the caller's outbound can have removed them.
    callee = await startTestSidecar(ca, { appId: "callee", app: `127.0.0.1:${(app.address() as AddressInfo).port}`, headersWithUnderscores: "allow" });
    caller = await startTestSidecar(ca, { appId: "web", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { callee: `127.0.0.1:${callee.addresses.inbound.port}` }, headersWithUnderscores: "drop" });
  }, 60_000);
  afterAll(async () => {
    for (const session of sessions) session.destroy();
    await caller?.close();
    await callee?.close();
    app?.closeAllConnections();
    await new Promise<void>((resolve) => (app ? app.close(() => resolve()) : resolve()));
    await ca?.close();
  });

  const h1 = (fields: string) =>
    new Promise<string>((resolve, reject) => {
      const socket = netConnect({ host: "127.0.0.1", port: caller.addresses.outbound!.port });
      let answer = "";
      socket.setEncoding("latin1");
      socket.on("data", (d: string) => (answer += d));
      socket.on("error", reject);
      socket.on("close", () => resolve(answer));
      socket.write(`GET /items/1 HTTP/1.1\r\nHost: 127.0.0.1\r\ndapr-app-id: callee\r\n${fields}Connection: close\r\n\r\n`);
    });
  const h2 = (headers: Record<string, string>) =>
    new Promise<number>((resolve, reject) => {
      const stream = outboundH2Session(caller.addresses.outbound!.port, sessions).request({ ":path": "/items/2", "dapr-app-id": "callee", ...headers });
      let status = 0;
      stream.on("response", (h) => (status = Number(h[":status"])));
      stream.on("error", reject);
      stream.resume();
      stream.on("end", () => resolve(status));
    });

  it("drops '_' names on the outbound over HTTP/1.1 and HTTP/2 (forwardH2 to the peer), counted with direction outbound", async () => {
    const before = seen.length;
    expect(await h1("X_Trace: 1\r\nX-Keep: 1\r\n")).toMatch(/^HTTP\/1\.1 200 /);
    expect(await h2({ x_trace: "1", "x-keep": "1" })).toBe(200);
    expect(seen.slice(before)).toHaveLength(2);
    for (const names of seen.slice(before)) {
      expect(names).toContain("x-keep");
      expect(names.filter((n) => n.includes("_"))).toEqual([]);
    }
    expect(metricValue(await caller.metrics.text(), "meshward_sidecar_dropped_fields_total", { direction: "outbound" })).toBe(2);
  });

  it("refuses X-Rewrite-Url and SCRIPT_NAME on the outbound too, drop or not", async () => {
    const before = seen.length;
    expect(await h1("X-Rewrite-Url: /admin\r\n")).toMatch(/^HTTP\/1\.1 400 [^]*E_AMBIGUOUS_REQUEST/);
    expect(await h2({ script_name: "/items" })).toBe(400);
    expect(seen.length).toBe(before);
  });
});
