import { connect as http2Connect, createSecureServer } from "node:http2";
import type { ClientHttp2Session, Http2SecureServer, Http2ServerRequest, Http2ServerResponse, ServerHttp2Session } from "node:http2";
import type { TLSSocket } from "node:tls";
import { MeshwardError } from "../errors.ts";
import type { PeerIdentity } from "../tls/verify.ts";
import { loadOnce } from "../tls/policy.ts";
import { peerOf, prepareServer } from "./common.ts";
import type { ClientCommonOptions, ServerCommonOptions } from "./common.ts";
import { dialTls, prepareClient, retireAtCertificateExpiry, serverStillTrusted } from "./client-common.ts";
import { secureServer } from "./tls.ts";
import type { MeshwardServerControl } from "./tls.ts";

export type MtlsHttp2Request = Http2ServerRequest & { readonly peer: PeerIdentity };
export type MtlsHttp2Server = Http2SecureServer & { readonly meshward: MeshwardServerControl };
export type Http2ServerOptions = ServerCommonOptions & {
  /** Grace period after GOAWAY before the session is destroyed (default 30 s). */
  readonly goawayGraceMs?: number;
};

/** The verified caller of a server-side HTTP/2 session or stream. */
export function peerOfSession(session: ServerHttp2Session | ClientHttp2Session | undefined): PeerIdentity | undefined {
  return session === undefined ? undefined : peerOf(session.socket);
}

/**
 * HTTP/2 over mutual TLS (h2 only, no HTTP/1 fallback). The compat handler gets `req.peer`;
 * for the stream API use `peerOfSession(stream.session)`. At the age cap the session
 * receives GOAWAY (in-flight streams finish) and is destroyed after the grace period.
 */
export async function createHttp2Server(
  options: Http2ServerOptions,
  handler?: (req: MtlsHttp2Request, res: Http2ServerResponse) => void,
): Promise<MtlsHttp2Server> {
  const runtime = await prepareServer(options, "createHttp2Server");
  const server = loadOnce(runtime.holder.options(), (secrets) => createSecureServer({ ...secrets, allowHTTP1: false, ...(runtime.insecure ? { rejectUnauthorized: false } : {}) }));
  const sessions = new WeakMap<TLSSocket, ServerHttp2Session>();
  // Runs after secureServer's verification (prepended later) and before http2 creates the session.
  let accepting: TLSSocket | undefined;
  server.prependListener("secureConnection", (socket: TLSSocket) => {
    accepting = socket;
  });
  server.on("session", (session: ServerHttp2Session) => {
    const socket = accepting;
    accepting = undefined;
    if (socket === undefined) return;
    sessions.set(socket, session);
    if (peerOf(socket) === undefined && !runtime.insecure) session.destroy();
  });
  if (handler) {
    server.on("request", (req: Http2ServerRequest, res: Http2ServerResponse) => {
      Object.defineProperty(req, "peer", { value: peerOfSession(req.stream.session as ServerHttp2Session), enumerable: true });
      handler(req as MtlsHttp2Request, res);
    });
  }
  const grace = options.goawayGraceMs ?? 30_000;
  return secureServer(server, runtime, "HTTP/2 server", undefined, (socket) => {
    const session = sessions.get(socket);
    if (session === undefined) return void socket.end();
    session.close(); // sends GOAWAY; existing streams complete
    const timer = setTimeout(() => session.destroy(), grace);
    timer.unref();
  });
}

export interface ConnectHttp2Options extends ClientCommonOptions {
  /** Close the session after this long (default: no cap on the client side). */
  readonly maxSessionAgeMs?: number;
}

/** An HTTP/2 client session whose server SPIFFE ID was verified; resolves once connected. */
export async function connectHttp2(authority: string | URL, options: ConnectHttp2Options): Promise<ClientHttp2Session & { readonly peer: PeerIdentity | undefined }> {
  const runtime = await prepareClient(options, "connectHttp2");
  const url = new URL(authority);
  if (url.protocol !== "https:") throw new MeshwardError("E_INSECURE_CONFIG", `${url.protocol} is not allowed; HTTP/2 clients speak https only`);
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(url.port || 443);
  let socket: TLSSocket | undefined;
  const session = http2Connect(url, {
    createConnection: () => (socket = dialTls(runtime, { host, port, servername: host, ALPNProtocols: ["h2"] })),
  });
  await new Promise<void>((resolve, reject) => {
    session.once("connect", () => resolve());
    session.once("error", reject);
    session.once("close", () => reject(new MeshwardError("E_PEER_UNTRUSTED", "the HTTP/2 session closed before it was verified")));
  });
  if (session.destroyed || (!runtime.insecure && peerOfSession(session) === undefined)) {
    session.destroy();
    throw new MeshwardError("E_PEER_UNTRUSTED", "the HTTP/2 server was not verified");
  }
  // Open streams finish; new ones are refused once the server's certificate (or ours on it) expires.
  if (socket !== undefined) retireAtCertificateExpiry(socket, () => session.close());
  if (options.maxSessionAgeMs && options.maxSessionAgeMs > 0) {
    const timer = setTimeout(() => session.close(), options.maxSessionAgeMs);
    timer.unref();
    session.once("close", () => clearTimeout(timer));
  }
  // A root has left the bundle and the server's chain rests on no root still held: streams
  // already open finish, new ones are refused (ERR_HTTP2_GOAWAY_SESSION); the caller connects
  // anew. A server under a root that stayed keeps its session.
  let checked = runtime.holder.rootsEpoch();
  const offRoots = runtime.holder.onUpdate(() => {
    if (runtime.holder.rootsEpoch() === checked) return;
    checked = runtime.holder.rootsEpoch();
    if (socket === undefined || !serverStillTrusted(socket, runtime)) session.close();
  });
  session.once("close", offRoots);
  return Object.assign(session, { peer: peerOfSession(session) }) as ClientHttp2Session & { readonly peer: PeerIdentity | undefined };
}
