import { Agent as HttpsAgent, createServer as createHttpsNodeServer, request as httpsNodeRequest } from "node:https";
import type { AgentOptions, RequestOptions, Server as HttpsServer } from "node:https";
import type { ClientRequest, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import type { IdentitySource } from "../identity/source.ts";
import type { PeerIdentity } from "../tls/verify.ts";
import { loadOnce } from "../tls/policy.ts";
import { MeshwardError } from "../errors.ts";
import { IDEMPOTENT_METHODS, idleLimitForHint, keepAliveTimeoutMs, MAX_REQUEST_ATTEMPTS } from "../util/keep-alive.ts";
import { peerOf, prepareServer } from "./common.ts";
import type { ClientCommonOptions, ServerCommonOptions } from "./common.ts";
import { afterHandshakeError, dialTls, prepareClient, retireAtCertificateExpiry, serverStillTrusted, SessionCache } from "./client-common.ts";
import type { ClientRuntime } from "./client-common.ts";
import { secureServer } from "./tls.ts";
import type { MeshwardServerControl } from "./tls.ts";

export type MtlsRequest = IncomingMessage & { readonly peer: PeerIdentity };
export type MtlsHttpsServer = HttpsServer & { readonly meshward: MeshwardServerControl };
export type HttpsServerOptions = ServerCommonOptions & { readonly keepAliveTimeoutMs?: number };

const kAged = Symbol("meshward.aged");
const kInFlight = Symbol("meshward.inflight");
type Tracked = TLSSocket & { [kAged]?: boolean; [kInFlight]?: number };

/**
 * HTTPS server with mutual TLS; `req.peer` holds the caller's verified identity. At the age
 * cap an idle keep-alive connection is closed, a busy one answers with `Connection: close`.
 */
export async function createHttpsServer(
  options: HttpsServerOptions,
  handler: (req: MtlsRequest, res: ServerResponse) => void,
): Promise<MtlsHttpsServer> {
  const runtime = await prepareServer(options, "createHttpsServer");
  const server = loadOnce(runtime.holder.options(), (secrets) =>
    createHttpsNodeServer({
      ...secrets,
      ...(runtime.insecure ? { rejectUnauthorized: false } : {}),
      ...(options.keepAliveTimeoutMs !== undefined ? { keepAliveTimeout: options.keepAliveTimeoutMs } : {}),
    }),
  );
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket as Tracked;
    const peer = peerOf(socket);
    if (peer === undefined && !runtime.insecure) {
      res.writeHead(403, { "content-type": "text/plain", connection: "close" }).end("E_PEER_UNTRUSTED: the caller was not verified\n");
      return;
    }
    socket[kInFlight] = (socket[kInFlight] ?? 0) + 1;
    if (socket[kAged]) res.setHeader("connection", "close");
    res.once("close", () => {
      socket[kInFlight] = (socket[kInFlight] ?? 1) - 1;
    });
    Object.defineProperty(req, "peer", { value: peer, enumerable: true });
    handler(req as MtlsRequest, res);
  });
  return secureServer(server, runtime, "HTTPS server", undefined, (socket) => {
    const tracked = socket as Tracked;
    tracked[kAged] = true;
    if ((tracked[kInFlight] ?? 0) === 0) socket.end();
  });
}

export type MtlsAgentOptions = ClientCommonOptions & Omit<AgentOptions, "ca" | "cert" | "key" | "rejectUnauthorized" | "checkServerIdentity"> & {
  /** Close pooled connections older than this (default 1 h; 0 = no cap). */
  readonly maxConnectionAgeMs?: number;
};

/** A node:https Agent for ONE expected server identity: its pool and session cache never serve another. */
export class MtlsAgent extends HttpsAgent {
  readonly #runtime: ClientRuntime;
  readonly #sessions = new SessionCache();
  readonly #maxAgeMs: number;

  /** Open connections, so a root leaving the bundle can retire the ones verified before. */
  readonly #open = new Set<TLSSocket & { [kAged]?: boolean }>();
  readonly #offRoots: () => void;
  #retired = false;

  constructor(runtime: ClientRuntime, options: AgentOptions & { maxConnectionAgeMs?: number }) {
    super({ keepAlive: true, ...options, maxCachedSessions: 0 });
    this.#runtime = runtime;
    this.#maxAgeMs = options.maxConnectionAgeMs ?? 60 * 60 * 1000;
    this.on("free", (socket: Duplex & { [kAged]?: boolean }) => {
      if (socket[kAged]) socket.destroy();
    });
    // A root left the bundle: no request goes out on a connection whose server's chain rested
    // on it (serverStillTrusted). Idle ones close now, busy ones after their response (the next
    // request dials anew); connections to servers under a root that stayed are kept.
    let epoch = runtime.holder.rootsEpoch();
    this.#offRoots = runtime.holder.onUpdate(() => {
      if (runtime.holder.rootsEpoch() === epoch) return;
      epoch = runtime.holder.rootsEpoch();
      for (const socket of this.#open) if (!serverStillTrusted(socket, runtime)) retire(socket);
    });
  }

  override destroy(): void {
    this.#offRoots();
    super.destroy();
  }

  /** Stops pooling without cutting a response short: idle connections close now, busy ones once their response is read. */
  retire(): void {
    this.#retired = true;
    this.#offRoots();
    for (const sockets of Object.values(this.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
  }

  /**
   * A pooled connection is closed once it has been idle a little less than the server said it
   * would keep it (`Keep-Alive: timeout=N`). Node's agent applies that hint only when the agent
   * has its own `timeout` option; without it an idle connection outlived the server's timeout
   * (5 s on a Node server) and a request could be written on it as the server closed it.
   */
  override keepSocketAlive(socket: Duplex): boolean {
    if (this.#retired) return false;
    const kept: unknown = super.keepSocketAlive(socket);
    if (kept === false) return false;
    const hintMs = keepAliveHintMs(socket);
    if (hintMs === undefined) return true;
    const idleMs = idleLimitForHint(hintMs);
    const agentTimeout = this.#agentTimeoutMs();
    (socket as TLSSocket).setTimeout(agentTimeout > 0 ? Math.min(agentTimeout, idleMs) : idleMs);
    return true;
  }

  /** The idle limit set above is not a limit on a request: a reused connection gets the agent's own timeout back. */
  override reuseSocket(socket: Duplex, request: ClientRequest): void {
    super.reuseSocket(socket, request);
    (socket as TLSSocket).setTimeout(this.#agentTimeoutMs());
  }

  /** The agent's own `timeout` option (0: none); @types/node does not declare `Agent.options`. */
  #agentTimeoutMs(): number {
    return (this as unknown as { options: AgentOptions }).options.timeout ?? 0;
  }

  get runtime(): ClientRuntime {
    return this.#runtime;
  }

  override createConnection(options: RequestOptions, callback?: (error: Error | null, socket: Duplex) => void): Duplex {
    const socket = dialTls(
      this.#runtime,
      { host: options.host ?? "127.0.0.1", port: Number(options.port ?? 443), ...(options.servername ? { servername: options.servername } : {}) },
      this.#sessions,
    ) as TLSSocket & { [kAged]?: boolean };
    this.#open.add(socket);
    socket.once("close", () => this.#open.delete(socket));
    // dialTls verifies on its own secureConnect listener, which runs before this one.
    socket.once("secureConnect", () => retireAtCertificateExpiry(socket, () => retire(socket)));
    if (this.#maxAgeMs > 0) {
      const timer = setTimeout(() => retire(socket), this.#maxAgeMs);
      timer.unref();
      socket.once("close", () => clearTimeout(timer));
    }
    void callback;
    return socket;
  }
}

/** The server's `Keep-Alive: timeout=N` on the response just read on `socket`, in ms. */
function keepAliveHintMs(socket: Duplex): number | undefined {
  const raw = (socket as Duplex & { _httpMessage?: { res?: IncomingMessage } })._httpMessage?.res?.headers["keep-alive"];
  return keepAliveTimeoutMs(Array.isArray(raw) ? raw.join(",") : raw);
}

/** Marks a pooled connection as done: closed now when idle, else when its response has been read. */
function retire(socket: TLSSocket & { [kAged]?: boolean }): void {
  socket[kAged] = true;
  if (!(socket as unknown as { _httpMessage?: unknown })._httpMessage) socket.destroy();
}

export async function createMtlsAgent(options: MtlsAgentOptions): Promise<MtlsAgent> {
  const runtime = await prepareClient(options, "createMtlsAgent");
  const { identity: _i, expect: _e, logger: _l, insecure: _x, ...agentOptions } = options;
  return new MtlsAgent(runtime, agentOptions);
}

const sharedAgents = new WeakMap<IdentitySource, Map<string, Promise<MtlsAgent>>>();

/**
 * Agents for predicate `expect`s kept per identity source. A predicate's key is its function
 * object, so an inline `(id) => …` made one agent (and one open connection) per call and kept it
 * for ever; the least recently used beyond this many are retired (their connections closed).
 */
export const PREDICATE_AGENTS_PER_IDENTITY = 16;

/** The shared agent for (identity source, expected identity). */
export async function agentFor(options: ClientCommonOptions): Promise<MtlsAgent> {
  const runtime = await prepareClient(options, "mtlsFetch");
  let byKey = sharedAgents.get(options.identity);
  if (byKey === undefined) sharedAgents.set(options.identity, (byKey = new Map()));
  let agent = byKey.get(runtime.key);
  const predicate = runtime.key.startsWith("fn#");
  if (agent === undefined) {
    agent = Promise.resolve(new MtlsAgent(runtime, {}));
    byKey.set(runtime.key, agent);
    if (predicate) retireLeastRecentPredicateAgents(byKey);
  } else if (predicate) {
    byKey.delete(runtime.key); // most recently used last
    byKey.set(runtime.key, agent);
  }
  return agent;
}

function retireLeastRecentPredicateAgents(byKey: Map<string, Promise<MtlsAgent>>): void {
  const predicateKeys = [...byKey.keys()].filter((key) => key.startsWith("fn#"));
  for (const key of predicateKeys.slice(0, Math.max(0, predicateKeys.length - PREDICATE_AGENTS_PER_IDENTITY))) {
    const agent = byKey.get(key)!;
    byKey.delete(key);
    void agent.then((a) => a.retire());
  }
}

/**
 * An agent given by the caller serves only the request its options describe: the same identity
 * and the same expected server (its pool and sessions were verified for that one). Before, a
 * given agent skipped every check of the options: a shared agent made for another `expect`, or a
 * plain https.Agent, sent the request to whatever server answered.
 */
async function checkedAgent(agent: unknown, options: ClientCommonOptions): Promise<MtlsAgent> {
  const runtime = await prepareClient(options, "mtlsFetch");
  if (!(agent instanceof MtlsAgent)) {
    throw new MeshwardError("E_INSECURE_CONFIG", "mtlsFetch: `agent` must be a MtlsAgent (from agentFor with the same identity and expect); a plain https.Agent does not verify the server's SPIFFE ID");
  }
  if (agent.runtime.holder !== runtime.holder || agent.runtime.key !== runtime.key) {
    throw new MeshwardError("E_INSECURE_CONFIG", `mtlsFetch: the agent was made for another identity or expected server than this request's (${runtime.policy.expected}); use agentFor with this request's options`);
  }
  return agent;
}

export interface MtlsRequestOptions extends ClientCommonOptions {
  readonly method?: string;
  readonly headers?: OutgoingHttpHeaders;
  readonly body?: string | Uint8Array;
  /** Use this agent instead of the shared one for (identity, expect). */
  readonly agent?: MtlsAgent;
  readonly timeoutMs?: number;
}

export interface MtlsResponse {
  readonly status: number;
  readonly headers: IncomingMessage["headers"];
  readonly body: Buffer;
  /** The verified server identity. */
  readonly peer: PeerIdentity | undefined;
  text(): string;
  json<T = unknown>(): T;
}

/** One HTTPS request over mutual TLS; resolves with the whole response body. */
export async function httpsRequest(url: string | URL, options: MtlsRequestOptions): Promise<MtlsResponse> {
  const agent = options.agent === undefined ? await agentFor(options) : await checkedAgent(options.agent, options);
  const target = new URL(url);
  if (target.protocol !== "https:") {
    throw new MeshwardError("E_INSECURE_CONFIG", `${target.protocol} URLs are not allowed; meshward clients speak https only`);
  }
  const method = (options.method ?? "GET").toUpperCase();
  // A kept-alive connection the server closes (idle timeout, age cap, a root leaving the bundle)
  // can take a request that was being written as it closed: the request failed before any of
  // it was read, so an idempotent one is sent again (as Go's net/http and undici do; Node's
  // request.reusedSocket documents the race). The server may have closed several idle
  // connections at once, and the pool hands out the next before their close is read: each
  // failed attempt's connection has left the pool, so the attempts end at the first new
  // connection at the latest (Go's net/http loops the same way; once only, as before, failed
  // when two pooled connections had been closed together).
  for (let attempt = 1; ; attempt++) {
    try {
      return await requestOnce(target, agent, method, options);
    } catch (error) {
      if (!(error instanceof StaleSocketError)) throw error;
      if (!IDEMPOTENT_METHODS.has(method) || attempt >= MAX_REQUEST_ATTEMPTS) throw error.original;
    }
  }
}

/** A request that failed on a reused keep-alive socket before any response byte arrived. */
class StaleSocketError extends Error {
  constructor(readonly original: Error) {
    super(original.message);
  }
}

function requestOnce(target: URL, agent: HttpsAgent, method: string, options: MtlsRequestOptions): Promise<MtlsResponse> {
  return new Promise<MtlsResponse>((resolve, reject) => {
    let responded = false;
    const fail = (error: Error) => reject(afterHandshakeError(error, `the server at ${target.host}`));
    const req = httpsNodeRequest(
      target,
      { agent, method, headers: options.headers ?? {}, ...(options.timeoutMs ? { timeout: options.timeoutMs } : {}) },
      (res) => {
        responded = true;
        const peer = peerOf(res.socket);
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", fail);
        res.on("end", () => {
          const body = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            peer,
            text: () => body.toString("utf8"),
            json: <T>() => JSON.parse(body.toString("utf8")) as T,
          });
        });
      },
    );
    req.on("error", (error: NodeJS.ErrnoException) => {
      if (req.reusedSocket && !responded && (error.code === "ECONNRESET" || error.code === "EPIPE")) return reject(new StaleSocketError(error));
      fail(error);
    });
    if (options.timeoutMs) req.on("timeout", () => req.destroy(new Error(`request timed out after ${options.timeoutMs} ms`)));
    req.end(options.body);
  });
}

/** fetch-shaped helper over node:https (no undici): returns a standard Response plus `peer`. */
export async function mtlsFetch(url: string | URL, options: MtlsRequestOptions): Promise<Response & { readonly peer: PeerIdentity | undefined }> {
  const res = await httpsRequest(url, options);
  const headers = new Headers();
  for (const [k, v] of Object.entries(res.headers)) {
    if (Array.isArray(v)) for (const item of v) headers.append(k, item);
    else if (v !== undefined) headers.set(k, v);
  }
  const nullBody = res.status === 204 || res.status === 304 || (options.method ?? "GET").toUpperCase() === "HEAD";
  const response = new Response(nullBody ? null : res.body, { status: res.status, headers });
  return Object.assign(response, { peer: res.peer });
}
