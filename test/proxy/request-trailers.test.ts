/**
 * Request trailers on the way to the app: a method-override field in an HTTP/1.1 chunked trailer
 * section is refused as it is in the head (X-HTTP-Method-Override and the other spellings
 * requestFieldsProblem reads: a framework that merges trailers into the headers, such as Apache
 * httpd with `MergeTrailers On`, would run another method than the one the policy judged);
 * ordinary trailers still reach the app. HTTP/2 request trailers are not passed on at all, to an
 * HTTP/1.1 app (the h2→h1 bridge) or to an h2c app (gRPC).
 *
 * Real parts: the sidecar in-process (test PKI identity, no access control: every request is
 * allowed, so only the trailer check can refuse one), callers over mutual TLS (raw HTTP/1.1 bytes
 * on node:tls, node:http2), and a node:http / node:http2 app recording `rawTrailers`.
 */
import { connect as http2Connect } from "node:http2";
import type { Http2ServerResponse } from "node:http2";
import { connect as tlsConnect } from "node:tls";
import type { TLSSocket } from "node:tls";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { sidecarConfigSchema } from "../../src/config/sidecar.ts";
import { startSidecar } from "../../src/proxy/sidecar.ts";
import { startH1AndH2cApp } from "../helpers/app-servers.ts";
import { createTestPki, manualIdentitySource } from "../helpers/test-pki.ts";
import type { TestPki } from "../helpers/test-pki.ts";
import { waitFor } from "../helpers/wait.ts";
import { logCapture, withInbound, type SidecarWithApp } from "./fixtures.ts";

const TD = "trailers.test";

/** What the app got of one request: its body bytes, whether it ended, its trailers as received. */
interface Received {
  readonly httpVersion: string;
  readonly url: string;
  bodyBytes: number;
  ended: boolean;
  closed: boolean;
  rawTrailers: string[];
}

describe("sidecar inbound: request trailers", () => {
  let pki: TestPki;
  let app: Awaited<ReturnType<typeof startH1AndH2cApp>>;
  let sidecar: SidecarWithApp;
  const received: Received[] = [];
  const clients: { destroy(): void }[] = [];

  beforeAll(async () => {
    pki = await createTestPki({ trustDomain: TD });
    app = await startH1AndH2cApp((req, res) => {
      const record: Received = { httpVersion: req.httpVersion, url: req.url ?? "", bodyBytes: 0, ended: false, closed: false, rawTrailers: [] };
      received.push(record);
      req.on("data", (chunk: Buffer) => (record.bodyBytes += chunk.length));
      req.once("close", () => (record.closed = true));
      req.on("error", () => undefined);
      req.on("end", () => {
        record.ended = true;
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
    const identity = manualIdentitySource(pki.snapshot({ spiffeId: `spiffe://${TD}/ns/shop/catalog` }));
    const config = sidecarConfigSchema.parse({ appId: "catalog", namespace: "shop", ca: "127.0.0.1:1", bundle: "unused.pem", inbound: "127.0.0.1:0", app: `127.0.0.1:${app.port}` });
    sidecar = withInbound(await startSidecar(config, { logger: pino({ level: "info" }, logCapture()), identity }));
  });
  afterEach(() => {
    for (const client of clients.splice(0)) client.destroy();
  });
  afterAll(async () => {
    await sidecar?.close();
    await app?.close();
  });

  const credentials = () => {
    const svid = pki.issueSvid({ spiffeId: `spiffe://${TD}/ns/shop/orders` });
    return { cert: svid.certChainPem, key: svid.privateKey.export({ format: "pem", type: "pkcs8" }) as string, ca: pki.rootPem, checkServerIdentity: () => undefined };
  };

  /** An HTTP/1.1 connection over mTLS, with everything it was answered. */
  const h1Client = async (): Promise<{ socket: TLSSocket; answer: () => string; closed: Promise<void> }> => {
    const socket = tlsConnect({ host: "127.0.0.1", port: sidecar.addresses.inbound.port, ...credentials(), ALPNProtocols: ["http/1.1"] });
    clients.push(socket);
    let answer = "";
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => (answer += d));
    socket.on("error", () => undefined);
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    await new Promise<void>((resolve) => socket.once("secureConnect", () => resolve()));
    return { socket, answer: () => answer, closed };
  };

  const HEAD = "POST /upload HTTP/1.1\r\nHost: catalog\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n";

  it("passes ordinary trailers on to the app (HTTP/1.1 chunked)", async () => {
    const before = received.length;
    const client = await h1Client();
    client.socket.write(`${HEAD}0\r\nX-Checksum: abc\r\nX-Part-Count: 1\r\n\r\n`);
    await client.closed;
    expect(client.answer()).toMatch(/^HTTP\/1\.1 200 /);
    expect(received.slice(before)).toEqual([expect.objectContaining({ httpVersion: "1.1", url: "/upload", bodyBytes: 5, ended: true, rawTrailers: ["X-Checksum", "abc", "X-Part-Count", "1"] })]);
  });

  it("refuses a method-override field in the trailer section, in every spelling the head check reads: 400, and the app, which has the body, never gets its end", async () => {
    for (const name of ["X-HTTP-Method-Override", "X_HTTP_METHOD_OVERRIDE", "x-http-method", "X-Method-Override", "x+http+method+override", "X.HTTP.Method"]) {
      const before = received.length;
      const client = await h1Client();
      client.socket.write(HEAD);
      // The head and the first chunk are forwarded at once: the app is reading the body.
      await waitFor(`the body to reach the app (${name})`, () => received.length === before + 1 && received[before]!.bodyBytes === 5, 10_000, 20);
      client.socket.write(`0\r\nX-Checksum: abc\r\n${name}: DELETE\r\n\r\n`);
      await client.closed;
      expect(client.answer(), name).toMatch(/^HTTP\/1\.1 400 /);
      expect(client.answer(), name).toMatch(/E_AMBIGUOUS_REQUEST/);
      expect(client.answer(), name).toContain(name.toLowerCase());
      await waitFor(`the app's connection to close (${name})`, () => received[before]!.closed, 10_000, 20);
      expect(received.slice(before), name).toEqual([expect.objectContaining({ url: "/upload", bodyBytes: 5, ended: false, rawTrailers: [] })]);
    }
  });

  /** An HTTP/2 POST over mTLS with a body and then `trailers`: the status, grpc-status, and what the app got. */
  const h2WithTrailers = async (headers: Record<string, string>, trailers: Record<string, string>) => {
    const before = received.length;
    const session = http2Connect(`https://127.0.0.1:${sidecar.addresses.inbound.port}`, credentials());
    clients.push(session);
    const answer = await new Promise<{ status: number; grpcStatus: string | undefined }>((resolve, reject) => {
      const stream = session.request({ ":method": "POST", ":path": "/upload", ...headers }, { waitForTrailers: true });
      let status = 0;
      let grpcStatus: string | undefined;
      stream.on("response", (h) => {
        status = Number(h[":status"]);
        grpcStatus = h["grpc-status"] as string | undefined;
      });
      stream.on("trailers", (t) => (grpcStatus = t["grpc-status"] as string | undefined));
      stream.on("wantTrailers", () => stream.sendTrailers(trailers));
      stream.on("error", reject);
      stream.resume();
      stream.on("end", () => resolve({ status, grpcStatus }));
      stream.end("hello");
    });
    session.close();
    return { ...answer, received: received.slice(before) };
  };
  const OVERRIDES = { "x-http-method-override": "DELETE", x_http_method_override: "DELETE", "x-checksum": "abc" };

  it("does not pass HTTP/2 request trailers on to an HTTP/1.1 app (h2→h1 bridge), override fields or not", async () => {
    const r = await h2WithTrailers({ "content-type": "text/plain" }, OVERRIDES);
    expect(r.status).toBe(200);
    expect(r.received).toEqual([expect.objectContaining({ httpVersion: "1.1", url: "/upload", bodyBytes: 5, ended: true, rawTrailers: [] })]);
  });

  it("does not pass HTTP/2 request trailers on to an h2c app (gRPC), override fields or not", async () => {
    const r = await h2WithTrailers({ "content-type": "application/grpc", te: "trailers" }, OVERRIDES);
    expect([r.status, r.grpcStatus]).toEqual([200, "0"]);
    expect(r.received).toEqual([expect.objectContaining({ httpVersion: "2.0", url: "/upload", bodyBytes: 5, ended: true, rawTrailers: [] })]);
  });
});
