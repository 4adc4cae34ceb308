import { createServer as createTlsServer } from "node:tls";
import type { Server as TlsServer, TLSSocket } from "node:tls";
import type { IdentityHealth } from "../tls/context.ts";
import { loadOnce } from "../tls/policy.ts";
import type { PeerIdentity } from "../tls/verify.ts";
import { admitConnection, capServerHandshakes, ConnectionRegistry, endTunnel, logHandshakeFailures, peerOf, prepareServer, sweepRefusals } from "./common.ts";
import type { ClientCommonOptions, ServerCommonOptions } from "./common.ts";
import { dialTls, prepareClient, retireTunnelWhenStale, SessionCache } from "./client-common.ts";
import type { ClientRuntime, ResumableSession } from "./client-common.ts";

/** What meshward adds to every server it creates. */
export interface MeshwardServerControl {
  /** Health of the server's identity (unhealthy once the SVID expired). */
  health(): IdentityHealth;
  /** Bumps on every secure-context rebuild. */
  readonly generation: () => number;
  /** Open verified connections. */
  openConnections(): number;
  /** Closes the server and releases the identity subscription. */
  close(): Promise<void>;
}

export type MtlsServer = TlsServer & { readonly meshward: MeshwardServerControl };
export type MtlsSocket = TLSSocket & { readonly peer: PeerIdentity };

export type MtlsServerOptions = ServerCommonOptions;

/**
 * Raw TLS server: client certificates required and verified, the caller's SPIFFE ID checked
 * against `authorize` (default: same trust domain) before `onConnection` sees the socket.
 * At the age cap, when the caller's certificate expires and when a root leaves the bundle, the
 * connection is ended, and destroyed 5 s later if the caller holds it open (the protocol above
 * decides how to reconnect).
 */
export async function createMtlsServer(options: MtlsServerOptions, onConnection: (socket: MtlsSocket, peer: PeerIdentity) => void): Promise<MtlsServer> {
  const runtime = await prepareServer(options, "createMtlsServer");
  const server = loadOnce(runtime.holder.options(), (secrets) => createTlsServer({ ...secrets, ...(runtime.insecure ? { rejectUnauthorized: false } : {}) }));
  return secureServer(server, runtime, "mTLS server", (socket) => {
    Object.defineProperty(socket, "peer", { value: peerOf(socket), enumerable: true });
    onConnection(socket as MtlsSocket, peerOf(socket)!);
  }, (socket) => endTunnel(socket));
}

/** Wires verification, hot swap, the age cap and clean shutdown into any tls.Server subclass. */
export function secureServer<S extends TlsServer>(
  server: S,
  runtime: Awaited<ReturnType<typeof prepareServer>>,
  what: string,
  onVerified: ((socket: TLSSocket) => void) | undefined,
  onAged: (socket: TLSSocket) => void,
): S & { readonly meshward: MeshwardServerControl } {
  const detach = runtime.holder.attachServer(server);
  const registry = new ConnectionRegistry(runtime, onAged);
  server.prependListener("secureConnection", (socket: TLSSocket) => {
    const peer = admitConnection(runtime, socket, what);
    if (peer === undefined && !runtime.insecure) return;
    registry.add(socket);
  });
  if (onVerified) {
    server.on("secureConnection", (socket: TLSSocket) => {
      if (!socket.destroyed) onVerified(socket);
    });
  }
  // Anyone who can reach the port can fail handshakes at will: logged through the refusal limiter.
  logHandshakeFailures(server, runtime, what);
  capServerHandshakes(server, runtime, what);
  const stopSweeping = sweepRefusals(runtime, what);
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    stopSweeping();
    detach();
    registry.close();
    runtime.holder.close();
  };
  server.once("close", release);
  const control: MeshwardServerControl = {
    health: () => runtime.holder.health(),
    generation: () => runtime.holder.generation,
    openConnections: () => registry.size,
    close: () =>
      new Promise<void>((resolve) => {
        release();
        if (!server.listening) return resolve();
        server.close(() => resolve());
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
      }),
  };
  Object.defineProperty(server, "meshward", { value: control, enumerable: false });
  return server as S & { readonly meshward: MeshwardServerControl };
}

export interface ConnectMtlsOptions extends ClientCommonOptions {
  readonly host?: string;
  readonly port: number;
  /** SNI; only host names are sent. */
  readonly servername?: string;
  /** Resume this session explicitly (from `resumableSession(socket)`); it is re-verified against `expect`. */
  readonly session?: ResumableSession;
  /** Reuse session tickets per expected identity (default true). */
  readonly resumeSessions?: boolean;
}

const sessionCaches = new WeakMap<ClientRuntime["holder"], SessionCache>();

/**
 * Opens a mutual-TLS connection and resolves once the server's SPIFFE ID is verified. The
 * connection is ended (and destroyed 5 s later if the server holds it open) when a root leaves
 * the bundle since the server was verified, and when the server's certificate expires or, 2 s
 * before, our own on it; closed at once if the server's certificate is revoked.
 */
export async function connectMtls(options: ConnectMtlsOptions): Promise<MtlsSocket> {
  const runtime = await prepareClient(options, "connectMtls");
  let cache: SessionCache | undefined;
  if (options.resumeSessions !== false) {
    cache = sessionCaches.get(runtime.holder);
    if (cache === undefined) sessionCaches.set(runtime.holder, (cache = new SessionCache()));
  }
  const socket = dialTls(
    runtime,
    {
      host: options.host ?? "127.0.0.1",
      port: options.port,
      ...(options.servername !== undefined ? { servername: options.servername } : {}),
      ...(options.session !== undefined ? { session: options.session } : {}),
    },
    cache,
  );
  return new Promise<MtlsSocket>((resolve, reject) => {
    socket.once("error", reject);
    socket.once("secureConnect", () => {
      // dialTls's secureConnect listener ran first and destroyed the socket on refusal.
      setImmediate(() => {
        if (socket.destroyed) return;
        socket.removeListener("error", reject);
        retireTunnelWhenStale(socket, runtime);
        Object.defineProperty(socket, "peer", { value: peerOf(socket), enumerable: true });
        resolve(socket as MtlsSocket);
      });
    });
    socket.once("close", () => reject(new Error("connection closed before it was verified")));
  });
}
