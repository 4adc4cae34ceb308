/**
 * The security suite's mesh: a real meshward CA, one inbound sidecar per recording app
 * (namespace "shop", policy "orders may GET /items/** and call gRPC /shop.Items/Get, everything
 * else denied"), one outbound
 * sidecar for the caller `orders`, and the attacker's clients: raw bytes over mTLS (HTTP/1.1),
 * node:http2 over mTLS with ALPN h2, raw bytes and HTTP/2 prior knowledge (h2c) to the outbound
 * port. The attacker holds a valid `orders` workload certificate throughout.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { connect as h2Connect, constants as h2c } from "node:http2";
import type { ClientHttp2Session, OutgoingHttpHeaders } from "node:http2";
import { connect as netConnect } from "node:net";
import type { Socket } from "node:net";
import { join } from "node:path";
import { Duplex } from "node:stream";
import { connect as tlsConnect, createSecureContext, type SecureContext } from "node:tls";
import { startMeshCa, startTestSidecar, TD } from "../../proxy/fixtures.ts";
import type { TestSidecarWithApp } from "../../proxy/fixtures.ts";
import type { MeshCa } from "../../proxy/fixtures.ts";
import { startRecordingApp } from "./apps.ts";
import type { AppName, RecordingApp } from "./apps.ts";

export const NAMESPACE = "shop";
export const CALLER = "orders";
export const CALLER_ID = `spiffe://${TD}/ns/${NAMESPACE}/${CALLER}`;

/**
 * The one gRPC method the policy allows (a rule without httpVerb: gRPC only, src/policy/decide.ts
 * rule 9/10), so that an allowed gRPC request reaches the h2c app and check (c) runs on it. It is
 * outside /items: an HTTP request to it, with any verb, still gets the default deny, and gRPC to
 * /items/** is still not granted (the grpc-type-* cases stay refused).
 */
export const GRPC_METHOD = "/shop.Items/Get";

/**
 * Dapr accessControl: orders (namespace shop) may GET /items/** but not /items/*:delete, POST (and
 * only POST) to FORMS_PATH, and call the gRPC method GRPC_METHOD; everything else denied.
 */
export const POLICY = `kind: Configuration
spec:
  accessControl:
    defaultAction: deny
    trustDomain: ${TD}
    policies:
      - appId: ${CALLER}
        namespace: ${NAMESPACE}
        trustDomain: ${TD}
        defaultAction: deny
        operations:
          - name: /items/**
            httpVerb: ["GET"]
            action: allow
          - name: /items/*:delete
            httpVerb: ["GET"]
            action: deny
          - name: ${GRPC_METHOD}
            action: allow
          - name: /forms/**
            httpVerb: ["POST"]
            action: allow
`;

/**
 * A path the policy lets orders POST to and nothing else: its answer depends on the method, so the
 * sidecar reads a POST body there for a `_method` field (the "method override: body" cases, every
 * one refused: none reaches an app, so checks (a)–(c) stay as they are).
 */
export const FORMS_PATH = "/forms/1";

/**
 * The path the policy allows, as an app resolves it: /items or below (the policy matches segments
 * case-insensitively), except `/items/<x>:delete` (a deny rule inside the allowed tree, in the
 * style of Google API custom methods: escaped reserved characters must not get past it).
 */
export function underItems(route: string): boolean {
  const lower = route.toLowerCase();
  return (lower === "/items" || lower.startsWith("/items/")) && !/^\/items\/[^/]*:delete\/?$/.test(lower);
}

export type TestSidecar = TestSidecarWithApp;

export interface MeshApp {
  readonly app: RecordingApp;
  /** The app id of its sidecar (what `dapr-app-id` names on the outbound port). */
  readonly appId: string;
  readonly sidecar: TestSidecar;
  /** The only x-forwarded-client-cert the app may see. */
  readonly xfcc: string;
  /**
   * The only Dapr caller attribution the app may see, one field each, as Dapr's callee sidecar
   * sets it (dapr/dapr pkg/messaging/grpc_proxy.go setLocalIdentityMetadata): the caller's app
   * id and namespace from its verified SPIFFE ID (the attacker's `orders` in `shop`), the callee's
   * app id the sidecar's own.
   */
  readonly dapr: Readonly<Record<"dapr-caller-app-id" | "dapr-caller-namespace" | "dapr-callee-app-id", string>>;
}

export interface SecurityMesh {
  readonly ca: MeshCa;
  readonly apps: ReadonlyMap<AppName, MeshApp>;
  readonly outbound: TestSidecar;
  readonly caller: { cert: string; key: string; ca: string };
  /**
   * The caller's credentials parsed once: a client given cert/key/ca parses all three for every
   * connection (~30 % of a differential file's test-side CPU, two connections a case).
   */
  readonly callerContext: SecureContext;
  close(): Promise<void>;
}

export function appIdOf(name: AppName): string {
  return `app-${name.replace(/[^a-z0-9]+/gi, "-").toLowerCase()}`;
}

/** Starts the CA, the apps (behind taps), their inbound sidecars and the caller's outbound sidecar. */
export async function startSecurityMesh(names: readonly AppName[]): Promise<SecurityMesh> {
  const started: (() => Promise<void>)[] = [];
  const close = async () => {
    for (const stop of started.splice(0).reverse()) await stop().catch(() => undefined);
  };
  try {
    const ca = await startMeshCa();
    started.push(() => ca.close());
    const policy = join(ca.dir, "policy.yaml");
    writeFileSync(policy, POLICY);
    const apps = new Map<AppName, MeshApp>();
    for (const name of names) {
      const app = await startRecordingApp(name);
      started.push(() => app.close());
      const appId = appIdOf(name);
      const sidecar = (await startTestSidecar(ca, { appId, namespace: NAMESPACE, app: `127.0.0.1:${app.tap.port}`, policy })) as TestSidecar;
      started.push(() => sidecar.close());
      const dapr = { "dapr-caller-app-id": CALLER, "dapr-caller-namespace": NAMESPACE, "dapr-callee-app-id": appId };
      apps.set(name, { app, appId, sidecar, xfcc: `By=${sidecar.addresses.spiffeId};URI=${CALLER_ID}`, dapr });
    }
    const peers = Object.fromEntries([...apps.values()].map((a) => [a.appId, `127.0.0.1:${a.sidecar.addresses.inbound.port}`]));
    // The cases address requests to Host: app.shop (a name, as a gateway would forward it), which
    // the outbound's DNS rebinding guard answers only when allowed.
    const outbound = (await startTestSidecar(ca, { appId: CALLER, namespace: NAMESPACE, app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers, outboundAllowedHosts: ["app.shop"] })) as TestSidecar;
    started.push(() => outbound.close());
    const files = await ca.clientFiles(NAMESPACE, CALLER);
    const caller = { cert: readFileSync(files.cert, "utf8"), key: readFileSync(files.key, "utf8"), ca: ca.bundlePem };
    return { ca, apps, outbound, caller, callerContext: createSecureContext(caller), close };
  } catch (error) {
    await close();
    throw error;
  }
}

// --- HTTP/1.1 responses, parsed from raw bytes ------------------------------------------

export interface Answer {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** Answered by the sidecar itself (its JSON error answers carry x-meshward-error). */
export const bySidecar = (a: Answer): boolean => a.headers["x-meshward-error"] !== undefined;
/** Answered by one of the recording apps (each sets x-app). */
export const byApp = (a: Answer): boolean => a.headers["x-app"] !== undefined;

/** Parses complete HTTP/1.1 responses off the front of `buf` (Content-Length, chunked, or no body). */
export function parseResponses(buf: Buffer, closed: boolean): Answer[] {
  const out: Answer[] = [];
  let at = 0;
  while (at < buf.length) {
    const end = buf.indexOf("\r\n\r\n", at);
    if (end < 0) break;
    const head = buf.subarray(at, end).toString("latin1").split("\r\n");
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? "")?.[1] ?? "0");
    const headers: Record<string, string> = {};
    for (const line of head.slice(1)) {
      const i = line.indexOf(":");
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    let bodyStart = end + 4;
    if (status >= 100 && status < 200 && status !== 101) {
      at = bodyStart;
      continue;
    }
    let body: Buffer;
    if (headers["transfer-encoding"]?.toLowerCase().includes("chunked")) {
      const parts: Buffer[] = [];
      let p = bodyStart;
      let complete = false;
      for (;;) {
        const lineEnd = buf.indexOf("\r\n", p);
        if (lineEnd < 0) break;
        const size = parseInt(buf.subarray(p, lineEnd).toString("latin1"), 16);
        if (Number.isNaN(size)) break;
        if (size === 0) {
          const trailerEnd = buf.indexOf("\r\n\r\n", lineEnd);
          const emptyTrailer = buf.subarray(lineEnd, lineEnd + 4).toString("latin1") === "\r\n\r\n";
          if (emptyTrailer) p = lineEnd + 4;
          else if (trailerEnd >= 0) p = trailerEnd + 4;
          else break;
          complete = true;
          break;
        }
        if (lineEnd + 2 + size + 2 > buf.length) break;
        parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
        p = lineEnd + 2 + size + 2;
      }
      if (!complete) break;
      body = Buffer.concat(parts);
      bodyStart = p;
      at = p;
    } else if (headers["content-length"] !== undefined) {
      const n = Number(headers["content-length"]);
      if (bodyStart + n > buf.length) break;
      body = buf.subarray(bodyStart, bodyStart + n);
      at = bodyStart + n;
    } else if (status === 204 || status === 304 || status === 101) {
      body = Buffer.alloc(0);
      at = bodyStart;
    } else {
      if (!closed) break;
      body = buf.subarray(bodyStart);
      at = buf.length;
    }
    out.push({ status, headers, body: body.toString("utf8") });
  }
  return out;
}

export type Direction = "inbound" | "outbound";

/**
 * Writes `bytes` on a fresh connection (mTLS to the app's inbound sidecar, or plaintext to the
 * outbound port) and collects the answers: until the peer closes, `expect` answers have come
 * and the line stayed quiet for `quietMs`, or `timeoutMs` passed. The connection is then closed.
 */
export async function h1Exchange(
  mesh: SecurityMesh,
  target: MeshApp,
  direction: Direction,
  bytes: Buffer,
  options: { expect?: number; quietMs?: number; timeoutMs?: number } = {},
): Promise<{ answers: Answer[]; closed: boolean; raw: Buffer }> {
  const socket: Socket =
    direction === "inbound"
      ? tlsConnect({ host: "127.0.0.1", port: target.sidecar.addresses.inbound.port, secureContext: mesh.callerContext, ALPNProtocols: ["http/1.1"], checkServerIdentity: () => undefined })
      : netConnect({ host: "127.0.0.1", port: mesh.outbound.addresses.outbound!.port });
  const expect = options.expect ?? 1;
  const chunks: Buffer[] = [];
  let closed = false;
  await new Promise<void>((resolve, reject) => {
    socket.once(direction === "inbound" ? "secureConnect" : "connect", () => resolve());
    socket.once("error", reject);
  });
  socket.on("error", () => undefined);
  return new Promise((resolve) => {
    let quiet: NodeJS.Timeout | undefined;
    const finish = () => {
      clearTimeout(quiet);
      clearTimeout(overall);
      socket.destroy();
      const raw = Buffer.concat(chunks);
      resolve({ answers: parseResponses(raw, closed), closed, raw });
    };
    const overall = setTimeout(finish, options.timeoutMs ?? 5_000);
    const check = () => {
      clearTimeout(quiet);
      if (parseResponses(Buffer.concat(chunks), false).length >= expect) quiet = setTimeout(finish, options.quietMs ?? 300);
    };
    socket.on("data", (d: Buffer) => {
      chunks.push(d);
      check();
    });
    socket.once("close", () => {
      closed = true;
      finish();
    });
    socket.write(bytes);
  });
}

/** The routing header a request to the outbound port needs; none on the inbound port. */
export function routeHeader(target: MeshApp, direction: Direction): string {
  return direction === "outbound" ? `dapr-app-id: ${target.appId}\r\n` : "";
}

// --- HTTP/2 ---------------------------------------------------------------------------

export interface H2Request {
  readonly method: string;
  readonly path: string;
  readonly headers?: OutgoingHttpHeaders;
  readonly body?: string | Buffer;
  readonly trailers?: OutgoingHttpHeaders;
  /**
   * The request's whole header block as raw fields, pseudo-headers included, for what node:http2
   * refuses to send (connection-specific fields, upper-case names, CR/LF in values, a second
   * :path…): written as HPACK literals in place of the block node:http2 encoded (see RawHeaderBlock).
   */
  readonly rawFields?: readonly (readonly [string, string])[];
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1). */
function hpackInteger(value: number, prefixBits: number, first: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

/** Fields as "literal header field without indexing — new name", no Huffman (RFC 7541 §6.2.2). */
export function hpackLiterals(fields: readonly (readonly [string, string])[]): Buffer {
  const bytes: number[] = [];
  for (const [name, value] of fields) {
    const n = Buffer.from(name, "latin1");
    const v = Buffer.from(value, "latin1");
    bytes.push(0x00, ...hpackInteger(n.length, 7, 0), ...n, ...hpackInteger(v.length, 7, 0), ...v);
  }
  return Buffer.from(bytes);
}

/**
 * A stream between node:http2's client session and the real socket that swaps the header block
 * of the first HEADERS frame the client writes for `block` (keeping its flags), and passes every
 * other byte through either way. node:http2 still reads the answer (HPACK, Huffman and all); its
 * own encoder's table is left with entries the server never saw, so the session carries this one
 * request only. A real client could send these bytes: the sidecar behind nghttp2 must judge them.
 */
class RawHeaderBlock extends Duplex {
  #pending = Buffer.alloc(0);
  #prefaceLeft = 24;
  #swapped = false;

  constructor(
    private readonly inner: Socket,
    private readonly block: Buffer,
  ) {
    super();
    inner.on("data", (d: Buffer) => {
      if (!this.push(d)) inner.pause();
    });
    inner.on("end", () => this.push(null));
    inner.on("close", () => this.destroy());
    inner.on("error", (e) => this.destroy(e));
  }

  override _read(): void {
    this.inner.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#swapped) return void this.inner.write(chunk, callback);
    this.#pending = Buffer.concat([this.#pending, chunk]);
    const out: Buffer[] = [];
    if (this.#prefaceLeft > 0) {
      const take = Math.min(this.#prefaceLeft, this.#pending.length);
      out.push(this.#pending.subarray(0, take));
      this.#pending = this.#pending.subarray(take);
      this.#prefaceLeft -= take;
    }
    while (!this.#swapped && this.#pending.length >= 9) {
      const length = this.#pending.readUIntBE(0, 3);
      if (this.#pending.length < 9 + length) break;
      const frame = this.#pending.subarray(0, 9 + length);
      this.#pending = this.#pending.subarray(9 + length);
      if (frame[3] === 0x1) {
        // HEADERS: keep END_STREAM/END_HEADERS, drop PADDED/PRIORITY with the bytes they add.
        const flags = frame[4]! & 0x05;
        const header = Buffer.alloc(9);
        header.writeUIntBE(this.block.length, 0, 3);
        header[3] = 0x1;
        header[4] = flags | 0x04;
        frame.copy(header, 5, 5, 9);
        out.push(header, this.block);
        this.#swapped = true;
      } else {
        out.push(frame);
      }
    }
    if (this.#swapped && this.#pending.length > 0) {
      out.push(this.#pending);
      this.#pending = Buffer.alloc(0);
    }
    if (out.length === 0) return callback();
    this.inner.write(Buffer.concat(out), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.inner.end(callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.inner.destroy();
    callback(error);
  }
}

/**
 * An HTTP/2 session: mTLS + ALPN h2 to the inbound port, or prior knowledge (h2c) to the outbound
 * port. With `rawBlock`, the first request's header block is replaced by it on the wire.
 */
export function h2Session(mesh: SecurityMesh, target: MeshApp, direction: Direction, rawBlock?: Buffer): ClientHttp2Session {
  const tlsOptions = { secureContext: mesh.callerContext, checkServerIdentity: () => undefined };
  const inboundPort = target.sidecar.addresses.inbound.port;
  const outboundPort = mesh.outbound.addresses.outbound!.port;
  const session =
    rawBlock !== undefined
      ? h2Connect(`http://127.0.0.1:${direction === "inbound" ? inboundPort : outboundPort}`, {
          createConnection: () =>
            new RawHeaderBlock(
              direction === "inbound" ? tlsConnect({ host: "127.0.0.1", port: inboundPort, ...tlsOptions, ALPNProtocols: ["h2"] }) : netConnect({ host: "127.0.0.1", port: outboundPort }),
              rawBlock,
            ),
        })
      : direction === "inbound"
        ? h2Connect(`https://127.0.0.1:${inboundPort}`, tlsOptions)
        : h2Connect(`http://127.0.0.1:${outboundPort}`);
  session.on("error", () => undefined);
  return session;
}

/** One HTTP/2 request with any method, body (also on GET/HEAD) and trailers; never throws. */
export async function h2Exchange(mesh: SecurityMesh, target: MeshApp, direction: Direction, request: H2Request, timeoutMs = 5_000): Promise<{ answer?: Answer; error?: string }> {
  const raw = request.rawFields === undefined ? undefined : hpackLiterals([...request.rawFields, ...(direction === "outbound" ? [["dapr-app-id", target.appId] as const] : [])]);
  const session = h2Session(mesh, target, direction, raw);
  try {
    return await new Promise((resolve) => {
      const timer = setTimeout(() => resolve({ error: "timeout" }), timeoutMs);
      const done = (r: { answer?: Answer; error?: string }) => {
        clearTimeout(timer);
        resolve(r);
      };
      let stream;
      try {
        const hasBody = request.body !== undefined || request.trailers !== undefined;
        stream = session.request(
          {
            [h2c.HTTP2_HEADER_METHOD]: request.method,
            [h2c.HTTP2_HEADER_PATH]: request.path,
            ...(direction === "outbound" ? { "dapr-app-id": target.appId } : {}),
            ...request.headers,
          },
          { endStream: !hasBody, ...(request.trailers ? { waitForTrailers: true } : {}) },
        );
        if (request.trailers) stream.once("wantTrailers", () => stream!.sendTrailers(request.trailers!));
        if (hasBody) stream.end(request.body ?? "");
      } catch (error) {
        return done({ error: `client refused to send: ${(error as Error).message}` });
      }
      let status = 0;
      const headers: Record<string, string> = {};
      const body: Buffer[] = [];
      stream.on("response", (h) => {
        status = Number(h[":status"]);
        for (const [k, v] of Object.entries(h)) if (!k.startsWith(":")) headers[k] = String(v);
      });
      stream.on("data", (d: Buffer) => body.push(d));
      stream.on("end", () => done(status === 0 ? { error: "no response" } : { answer: { status, headers, body: Buffer.concat(body).toString("utf8") } }));
      stream.on("error", (error) => done(status === 0 ? { error: error.message } : { answer: { status, headers, body: Buffer.concat(body).toString("utf8") } }));
      stream.on("close", () => done(status === 0 ? { error: `stream closed (code ${stream!.rstCode})` } : { answer: { status, headers, body: Buffer.concat(body).toString("utf8") } }));
    });
  } finally {
    session.destroy();
  }
}
