import { createHash } from "node:crypto";
import { chmodSync, chownSync, linkSync, lstatSync, mkdtempSync, renameSync, rmdirSync, unlinkSync } from "node:fs";
import type { Settings as Http2Settings } from "node:http2";
import { connect, createServer as createNetServer } from "node:net";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { describeError, MeshwardError } from "../../errors.ts";
import { groupChangeRefusal, groupLabel } from "../../util/file-owner.ts";
import { checkSocketDir } from "../local-paths.ts";
import type { IdentityEvent, IdentitySnapshot, IdentitySource, TrustBundle } from "../source.ts";
import { pemToConcatenatedDer } from "./material.ts";
import { SECURITY_HEADER, SECURITY_HEADER_VALUE, workloadApiDefinition } from "./proto.ts";
import type { X509BundlesResponseMessage, X509SvidResponseMessage } from "./proto.ts";

export interface WorkloadApiServerOptions {
  /** Absolute path of the unix socket (a `unix://` URI is accepted too). */
  readonly socketPath: string;
  readonly source: IdentitySource;
  /**
   * Mode of the socket file (default 0o600). meshward does not attest callers: every process
   * that can open the socket receives the identity and its private key, so the file mode is
   * the access control. 0o660 lets a group in.
   */
  readonly socketMode?: number;
  /** Group of the socket file (a gid; default: this process's group), for `socketMode` 0o660. */
  readonly socketGroup?: number;
  readonly logger?: Logger;
  /**
   * Open FetchX509SVID and FetchX509Bundles streams at most (default 1024): each holds memory
   * and is written on every rotation, and any process that can open the socket can open
   * streams. A stream over the cap ends at once with RESOURCE_EXHAUSTED.
   */
  readonly maxStreams?: number;
  /**
   * Open connections at most (default 256, and never more than maxStreams: a connection holds at
   * least one stream); one over it is closed on accept. Each may hold 16 requests not yet complete,
   * which no handler has seen and the stream cap does not count: measured ≈ 0.35 MiB of RSS for a
   * connection whose 16 requests carry header lists just under the 8 KiB limit, so the default
   * bounds that to ≈ 90 MiB. A workload needs one connection (go-spiffe's X509Source: one).
   */
  readonly maxConnections?: number;
  /**
   * @internal Tests only: called while a stale socket at the path is being replaced, after it was
   * probed ("probed") and after it was moved aside ("moved"), so that a test can change the path
   * inside those windows.
   */
  readonly staleSocketHook?: StaleSocketHook;
}

type StaleSocketHook = (step: "probed" | "moved", path: string) => void | Promise<void>;

export const DEFAULT_WORKLOAD_API_MAX_STREAMS = 1024;
export const DEFAULT_WORKLOAD_API_MAX_CONNECTIONS = 256;
/** Every request meshward answers is empty (the JWT calls are not implemented); 4 KiB leaves room for a JWT call's audiences. */
const MAX_REQUEST_BYTES = 4 * 1024;
/**
 * Header list (names, values and 32 bytes an entry, RFC 9113 §6.5.2) a request may carry: this
 * API's requests carry well under 1 KiB (pseudo-headers, content-type, te, user-agent,
 * workload.spiffe.io, maybe grpc-timeout or a trace id). Node's HTTP/2 accepts 64 KiB by default and
 * grpc-js sets no limit of its own, holding the metadata as long as the request is not complete.
 */
const MAX_HEADER_LIST_BYTES = 8 * 1024;
/** A workload holds one or two streams (go-spiffe's X509Source: one); 16 leaves room for several clients sharing a connection. */
const MAX_STREAMS_PER_CONNECTION = 16;

export interface WorkloadApiServer {
  readonly socketPath: string;
  /** Number of open FetchX509SVID / FetchX509Bundles streams. */
  openStreams(): number;
  /** Ends every stream, stops the server and removes the socket file. */
  close(): Promise<void>;
}

/** A Workload API socket bound before its identity source exists (listenWorkloadApi). */
export interface WorkloadApiListener extends WorkloadApiServer {
  /** Starts answering from `source`; until then every call gets UNAVAILABLE (still initializing). Once only. */
  serve(source: IdentitySource): void;
}

/** Sockets are `struct sockaddr_un.sun_path`, 108 bytes with its NUL on Linux; Node cuts longer paths short without a word. */
const MAX_SOCKET_PATH_BYTES = 107;
/** mkdtemp's pattern for the private directory the socket is bound in before it is linked into place. */
const PRIVATE_DIR_PREFIX = ".mw-";
/** Attempts at linking the socket into place when the path is taken again each time (EEXIST). */
const LINK_ATTEMPTS = 5;

type SvidCall = grpc.ServerWritableStream<unknown, X509SvidResponseMessage>;
type BundlesCall = grpc.ServerWritableStream<unknown, X509BundlesResponseMessage>;

/**
 * Serves the SPIFFE Workload API (X.509-SVID profile) for `source` on a unix socket. Streams
 * send the full identity at once and again after every `rotated` / `bundle-updated` event (to a
 * client still reading an earlier one, only the newest).
 * Calls without the `workload.spiffe.io: true` metadata get INVALID_ARGUMENT; before the
 * source has an identity, UNAVAILABLE (still initializing); after it expired, the SVID
 * stream ends with PERMISSION_DENIED, which tells clients to stop using the SVID.
 */
export async function startWorkloadApiServer(options: WorkloadApiServerOptions): Promise<WorkloadApiServer> {
  const listener = await listenWorkloadApi(options);
  listener.serve(options.source);
  return listener;
}

/**
 * Binds the Workload API socket with no identity yet: every call gets UNAVAILABLE, which tells
 * clients to retry, until serve(source). `meshward identity` binds first, so that what only
 * binding finds (a live or stale socket, a file in the way, a path too long) fails before a
 * single-use token is spent.
 */
export async function listenWorkloadApi(options: Omit<WorkloadApiServerOptions, "source">): Promise<WorkloadApiListener> {
  // Bound under the directory's real path: a link on the way is not followed again.
  const socketPath = checkSocketDir(socketPathFrom(options.socketPath), "Workload API socket");
  checkSocketPathLength(socketPath);
  const mode = options.socketMode ?? 0o600;
  const { logger } = options;
  let source: IdentitySource | undefined;
  let unsubscribe = (): void => undefined;
  const svidCalls = new Set<SvidCall>();
  const bundleCalls = new Map<BundlesCall, string>();
  let lastBundle: TrustBundle | undefined;
  let hadIdentity = false;
  let closing = false;
  const maxStreams = options.maxStreams ?? DEFAULT_WORKLOAD_API_MAX_STREAMS;
  const maxConnections = Math.min(options.maxConnections ?? DEFAULT_WORKLOAD_API_MAX_CONNECTIONS, maxStreams);
  let refusedWarned = false;
  /** False (and the stream ended with RESOURCE_EXHAUSTED) when the cap is reached. */
  const admit = (call: grpc.ServerWritableStream<unknown, unknown>): boolean => {
    if (svidCalls.size + bundleCalls.size < maxStreams) return true;
    if (!refusedWarned) {
      refusedWarned = true;
      logger?.warn({ event: "workload-api-streams-exhausted", maxStreams }, "the Workload API refused a stream: the open-stream cap is reached (logged once)");
    }
    call.emit("error", grpcError(grpc.status.RESOURCE_EXHAUSTED, `the Workload API serves at most ${maxStreams} open streams; close unused ones`));
    return false;
  };

  const sendSvid = (call: SvidCall, snapshot: IdentitySnapshot) => {
    try {
      writeLatest(call, x509SvidResponse(snapshot));
    } catch (error) {
      logger?.error({ event: "workload-api-encode-failed", error: describeError(error) }, "cannot encode the X509-SVID response");
      call.emit("error", grpcError(grpc.status.INTERNAL, "the server could not encode its identity"));
    }
  };
  const sendBundle = (call: BundlesCall, bundle: TrustBundle) => {
    const key = bundleKey(bundle);
    if (bundleCalls.get(call) === key) return;
    bundleCalls.set(call, key);
    try {
      writeLatest(call, x509BundlesResponse(bundle));
    } catch (error) {
      logger?.error({ event: "workload-api-encode-failed", error: describeError(error) }, "cannot encode the X.509 bundles response");
      call.emit("error", grpcError(grpc.status.INTERNAL, "the server could not encode its trust bundle"));
    }
  };

  const onEvent = (event: IdentityEvent) => {
    if (event.type === "rotated" || event.type === "bundle-updated") {
      hadIdentity = true;
      lastBundle = event.snapshot.bundle;
      for (const call of svidCalls) sendSvid(call, event.snapshot);
      for (const call of bundleCalls.keys()) sendBundle(call, event.snapshot.bundle);
    } else if (event.type === "expired") {
      // Spec 5.2.1: PERMISSION_DENIED on the stream redacts every SVID the client holds.
      for (const call of svidCalls) call.emit("error", grpcError(grpc.status.PERMISSION_DENIED, `the SVID ${event.spiffeId} expired and was not renewed`));
      svidCalls.clear();
    }
  };

  const fetchX509Svid = (call: SvidCall) => {
    if (!hasSecurityHeader(call)) return;
    const snapshot = source?.current();
    if (snapshot === undefined || snapshot.svid.notAfter.getTime() <= Date.now()) {
      call.emit(
        "error",
        hadIdentity || snapshot !== undefined
          ? grpcError(grpc.status.PERMISSION_DENIED, "the workload identity expired and has not been renewed yet")
          : grpcError(grpc.status.UNAVAILABLE, "the workload identity is not available yet; retry with backoff"),
      );
      return;
    }
    lastBundle = snapshot.bundle;
    if (!admit(call)) return;
    svidCalls.add(call);
    call.on("cancelled", () => svidCalls.delete(call));
    call.on("close", () => svidCalls.delete(call));
    sendSvid(call, snapshot);
  };

  const fetchX509Bundles = (call: BundlesCall) => {
    if (!hasSecurityHeader(call)) return;
    const bundle = source?.current()?.bundle ?? lastBundle;
    if (bundle === undefined) {
      call.emit("error", grpcError(grpc.status.UNAVAILABLE, "the trust bundle is not available yet; retry with backoff"));
      return;
    }
    if (!admit(call)) return;
    bundleCalls.set(call, "");
    call.on("cancelled", () => bundleCalls.delete(call));
    call.on("close", () => bundleCalls.delete(call));
    sendBundle(call, bundle);
  };

  // Spec (Workload Endpoint §3, §6): a request without the security header is rejected with
  // INVALID_ARGUMENT whatever the method, as SPIRE's handler does before dispatch; only then
  // does a JWT call learn that it is not implemented.
  const unimplemented = (call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>, callback?: grpc.sendUnaryData<unknown>) => {
    const error = securityHeaderError(call) ?? grpcError(grpc.status.UNIMPLEMENTED, "meshward serves the X.509-SVID profile only; JWT-SVIDs are not issued");
    if (callback) callback(error);
    else (call as grpc.ServerWritableStream<unknown, unknown>).emit("error", error);
  };

  // A stream's request is buffered before its handler runs (and before the stream cap counts it):
  // few streams per connection, a small request and a small header list bound what an unfinished
  // request holds.
  const server = new grpc.Server({ "grpc.max_receive_message_length": MAX_REQUEST_BYTES, "grpc.max_concurrent_streams": MAX_STREAMS_PER_CONNECTION });
  limitHeaderList(server, MAX_HEADER_LIST_BYTES);
  server.addService(workloadApiDefinition().service, {
    FetchX509SVID: fetchX509Svid,
    FetchX509Bundles: fetchX509Bundles,
    FetchJWTSVID: unimplemented,
    FetchJWTBundles: unimplemented,
    ValidateJWTSVID: unimplemented,
  } as grpc.UntypedServiceImplementation);

  // Connections are accepted here and handed to grpc-js, so that their number is bounded: each
  // holds up to MAX_STREAMS_PER_CONNECTION requests that grpc-js buffers before a handler runs
  // (their headers included, up to MAX_HEADER_LIST_BYTES each).
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const listener = createNetServer((socket) => injector.injectConnection(socket));
  listener.maxConnections = maxConnections;
  let connectionsWarned = false;
  listener.on("drop", () => {
    if (connectionsWarned) return;
    connectionsWarned = true;
    logger?.warn({ event: "workload-api-connections-exhausted", maxConnections }, "the Workload API refused a connection: the connection cap is reached (logged once)");
  });

  // Bind inside a private directory, set the mode, then link into place: the socket is never
  // reachable at its public path with the umask's (possibly wider) mode. link(2), unlike
  // rename(2), fails with EEXIST instead of replacing what is there; on EEXIST the path is checked
  // again (refused if live or not a socket, removed if stale) and the link retried: of two servers
  // started at once on one path, one serves and the other finds its live socket and refuses.
  const privateDir = mkdtempSync(join(dirname(socketPath), PRIVATE_DIR_PREFIX));
  const tempSocket = join(privateDir, "s");
  let bound: { dev: number; ino: number } | undefined;
  try {
    for (let attempt = 1; ; attempt++) {
      // Before binding on the first attempt: what is in the way is refused before anything is bound.
      await removeStaleSocket(socketPath, privateDir, options.staleSocketHook);
      if (bound === undefined) {
        await new Promise<void>((resolvePromise, reject) => {
          listener.once("error", reject);
          listener.listen(tempSocket, () => {
            listener.removeListener("error", reject);
            resolvePromise();
          });
        });
        chmodSync(tempSocket, mode);
        if (options.socketGroup !== undefined) giveSocketToGroup(tempSocket, socketPath, options.socketGroup);
        const { dev, ino } = lstatSync(tempSocket);
        bound = { dev, ino };
      }
      try {
        linkSync(tempSocket, socketPath);
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
        if (attempt === LINK_ATTEMPTS) {
          throw new MeshwardError(
            "E_WORKLOAD_API_SOCKET",
            `${socketPath} was taken again each of the ${LINK_ATTEMPTS} times this server tried to put its socket there: another server is starting on it; stop it or choose another path`,
            { cause: error },
          );
        }
      }
    }
    unlinkSync(tempSocket);
  } catch (error) {
    listener.close();
    server.forceShutdown();
    if (error instanceof MeshwardError) throw error;
    throw new MeshwardError("E_WORKLOAD_API_BIND", `cannot serve the Workload API on ${socketPath}: ${describeError(error)}`, { cause: error });
  } finally {
    try {
      unlinkSync(tempSocket);
    } catch {
      // linked into place and unlinked already, or never bound
    }
    try {
      rmdirSync(privateDir);
    } catch {
      // already removed, or it keeps a live socket that could not be put back (named in the error)
    }
  }
  const own = bound;
  logger?.info({ event: "workload-api-listening", socket: socketPath, mode: mode.toString(8), ...(options.socketGroup !== undefined ? { gid: options.socketGroup } : {}) }, "SPIFFE Workload API listening");

  return {
    socketPath,
    openStreams: () => svidCalls.size + bundleCalls.size,
    serve(identity) {
      if (source !== undefined) throw new MeshwardError("E_USAGE", "the Workload API server already serves an identity source");
      if (closing) return;
      source = identity;
      const current = identity.current();
      lastBundle = current?.bundle;
      hadIdentity = current !== undefined;
      unsubscribe = identity.subscribe(onEvent);
    },
    async close() {
      if (closing) return;
      closing = true;
      unsubscribe();
      // Ending a stream with OK tells clients to reconnect (spec 4.2); they will find no socket and back off.
      for (const call of svidCalls) call.end();
      for (const call of bundleCalls.keys()) call.end();
      svidCalls.clear();
      bundleCalls.clear();
      // Only while the path is still this server's socket: another server may have taken the
      // path over since (after this one's socket was removed by hand), and its socket stays.
      // Checked before the listener closes: while it is bound it holds its socket's inode, so a
      // newer socket at the path cannot carry the same inode number (after close it could).
      try {
        const now = lstatSync(socketPath);
        if (now.dev === own.dev && now.ino === own.ino) unlinkSync(socketPath);
        else logger?.warn({ event: "workload-api-socket-replaced", socket: socketPath }, "the Workload API socket path now holds another file; left in place");
      } catch {
        // already gone
      }
      listener.close();
      // Closes the injected connections too: grpc-js tracks them as it does its own.
      await new Promise<void>((resolvePromise) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolvePromise();
        }, 2000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolvePromise();
        });
      });
      logger?.info({ event: "workload-api-closed", socket: socketPath }, "SPIFFE Workload API closed");
    },
  };
}

/** Per stream: whether a message is on its way to the client, and the newest one waiting behind it. */
const outboxes = new WeakMap<grpc.ServerWritableStream<unknown, never>, { sending: boolean; waiting: unknown }>();

/**
 * Writes `message` once the stream's previous message has been sent; until then a newer message
 * replaces the one waiting. A client that reads slowly, or not at all, thus holds at most two
 * messages on the server (grpc-js would otherwise queue every rotation and bundle update, CRLs
 * included, for as long as the stream stays open). Each message of these streams carries the
 * whole state (spec 5.2.1), so one replaced loses nothing.
 */
function writeLatest<T>(call: grpc.ServerWritableStream<unknown, T>, message: T): void {
  let outbox = outboxes.get(call);
  if (outbox === undefined) {
    outbox = { sending: false, waiting: undefined };
    outboxes.set(call, outbox);
  }
  if (outbox.sending) {
    outbox.waiting = message;
    return;
  }
  const box = outbox;
  box.sending = true;
  // Called once the message was handed to the connection, or the stream failed (never for a
  // cancelled stream, which is dropped with its outbox).
  call.write(message, () => {
    box.sending = false;
    const next = box.waiting as T | undefined;
    box.waiting = undefined;
    if (next !== undefined && call.writable) writeLatest(call, next);
  });
}

/**
 * Advertises and enforces SETTINGS_MAX_HEADER_LIST_SIZE on the HTTP/2 server that grpc-js creates
 * for the connection injector: Node resets a stream whose header list exceeds it (ENHANCE_YOUR_CALM,
 * RESOURCE_EXHAUSTED for a gRPC client) while decoding it, before any string is made of it. grpc-js
 * (1.14) has no option for it, so its HTTP/2 server options are extended before the injector is
 * created; if a future version no longer keeps them there, starting fails rather than serving
 * without the bound (and the test of the advertised setting fails).
 */
function limitHeaderList(server: grpc.Server, bytes: number): void {
  const options = (server as unknown as { commonServerOptions?: { settings?: Http2Settings } }).commonServerOptions;
  if (options?.settings === undefined) {
    throw new MeshwardError("E_WORKLOAD_API_BIND", "this @grpc/grpc-js version keeps its HTTP/2 settings elsewhere: the Workload API cannot bound request headers (update meshward)");
  }
  options.settings.maxHeaderListSize = bytes;
}

/** INVALID_ARGUMENT unless the call carries exactly `workload.spiffe.io: true`. */
function securityHeaderError(call: { readonly metadata: grpc.Metadata }): (Partial<grpc.StatusObject> & Error) | undefined {
  const values = call.metadata.get(SECURITY_HEADER);
  if (values.length === 1 && values[0] === SECURITY_HEADER_VALUE) return undefined;
  return grpcError(grpc.status.INVALID_ARGUMENT, `security header missing from request: send the gRPC metadata "${SECURITY_HEADER}: ${SECURITY_HEADER_VALUE}"`);
}

function hasSecurityHeader(call: grpc.ServerWritableStream<unknown, unknown>): boolean {
  const error = securityHeaderError(call);
  if (error === undefined) return true;
  call.emit("error", error);
  return false;
}

function grpcError(code: grpc.status, details: string): Partial<grpc.StatusObject> & Error {
  return Object.assign(new Error(details), { code, details });
}

/** What a FetchX509Bundles stream was last sent; a CRL re-signed with the same revocations counts as new (its nextUpdate moved). */
function bundleKey(bundle: TrustBundle): string {
  const crls = (bundle.crls ?? []).map((crl) => createHash("sha256").update(crl).digest("hex")).join(",");
  return `${bundle.trustDomain}\n${bundle.rootsPem}\n${[...bundle.revokedSerials].sort().join(",")}\n${crls}`;
}

/** Full response for one SVID (spec 5.2.1: every message carries everything). */
export function x509SvidResponse(snapshot: IdentitySnapshot): X509SvidResponseMessage {
  const { svid, bundle } = snapshot;
  return {
    svids: [
      {
        spiffe_id: svid.spiffeId,
        x509_svid: pemToConcatenatedDer(svid.certChainPem),
        x509_svid_key: svid.privateKey.export({ type: "pkcs8", format: "der" }),
        bundle: pemToConcatenatedDer(bundle.rootsPem),
        hint: "",
      },
    ],
    crl: [...(bundle.crls ?? [])],
    federated_bundles: {},
  };
}

export function x509BundlesResponse(bundle: TrustBundle): X509BundlesResponseMessage {
  return { crl: [...(bundle.crls ?? [])], bundles: { [`spiffe://${bundle.trustDomain}`]: pemToConcatenatedDer(bundle.rootsPem) } };
}

/** Accepts "/abs/path.sock" or "unix:///abs/path.sock". */
export function socketPathFrom(input: string): string {
  const path = input.startsWith("unix://") ? input.slice("unix://".length) : input.startsWith("unix:") ? input.slice("unix:".length) : input;
  if (!isAbsolute(path)) {
    throw new MeshwardError("E_WORKLOAD_API_SOCKET", `the Workload API socket must be an absolute path (or unix:///abs/path), got ${JSON.stringify(input)}`);
  }
  return resolve(path);
}

/**
 * Both the path bound (`DIR/.mw-XXXXXX/s`, which is longer than the final path when its name is
 * short) and the final one must fit in sun_path: Node would bind a truncated path instead.
 */
function checkSocketPathLength(socketPath: string): void {
  const temporary = join(dirname(socketPath), `${PRIVATE_DIR_PREFIX}XXXXXX`, "s");
  const bytes = Buffer.byteLength(socketPath);
  const temporaryBytes = Buffer.byteLength(temporary);
  if (bytes > MAX_SOCKET_PATH_BYTES) {
    throw new MeshwardError("E_WORKLOAD_API_SOCKET", `the Workload API socket path ${socketPath} is ${bytes} bytes; a unix socket path holds at most ${MAX_SOCKET_PATH_BYTES}: choose a shorter path`);
  }
  if (temporaryBytes > MAX_SOCKET_PATH_BYTES) {
    throw new MeshwardError(
      "E_WORKLOAD_API_SOCKET",
      `the Workload API socket ${socketPath} is bound first at ${temporary} (${temporaryBytes} bytes), then linked into place; a unix socket path holds at most ${MAX_SOCKET_PATH_BYTES}: choose a shorter directory`,
    );
  }
}

/** chown to the socket's group; EPERM (not a member and not root, or no CAP_CHOWN) names the group and why. */
function giveSocketToGroup(tempSocket: string, socketPath: string, gid: number): void {
  try {
    chownSync(tempSocket, -1, gid);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EPERM") throw error;
    const why = groupChangeRefusal(gid) ?? "this process runs as root but may not change a file's group (no CAP_CHOWN, e.g. in a user namespace)";
    throw new MeshwardError("E_WORKLOAD_API_SOCKET", `cannot give the Workload API socket ${socketPath} to group ${groupLabel(gid)} (EPERM): ${why}; run as a member of that group (or as root), or choose one of its groups`, { cause: error });
  }
}

/**
 * Removes a socket file nobody listens on; refuses a live socket or a non-socket file. Only
 * ECONNREFUSED (nobody listens) and ENOENT (the file went away) mean stale: a server that is
 * alive but not accepting right now (paused, a blocked event loop) with a full backlog answers
 * EAGAIN, and a socket this user may not open EACCES; both are refused, never replaced.
 *
 * A stale socket is not unlinked at its path, where another server may have put its live socket
 * since the probe: it is renamed into `privateDir` (atomic: whatever holds the path then is
 * moved), probed again there, and unlinked only if it is still stale; a live one is linked back
 * (link(2) does not replace what may have taken the path meanwhile) and the caller, finding the
 * path taken, checks again and refuses it. Comparing dev/ino with the probed file would not do:
 * a file's inode number is reused as soon as it is freed.
 */
async function removeStaleSocket(path: string, privateDir: string, hook?: StaleSocketHook): Promise<void> {
  let before: ReturnType<typeof lstatSync>;
  try {
    before = lstatSync(path);
  } catch {
    return;
  }
  if (!before.isSocket()) {
    throw new MeshwardError("E_WORKLOAD_API_SOCKET", `${path} exists and is not a socket; refusing to replace it (remove it or choose another path)`);
  }
  const outcome = await probeSocket(path);
  if (outcome === "live") {
    throw new MeshwardError("E_WORKLOAD_API_SOCKET", `another process is already serving on ${path} (${basename(path)} accepts connections); stop it or choose another path`);
  }
  if (outcome !== "stale") {
    const why =
      outcome.code === "EAGAIN"
        ? "a process is listening there but not accepting connections right now (its backlog is full: paused, stopped or overloaded)"
        : outcome.code === "EACCES" || outcome.code === "EPERM"
          ? "this user may not open that socket, so whether it is live cannot be told"
          : "whether it is live cannot be told";
    throw new MeshwardError(
      "E_WORKLOAD_API_SOCKET",
      `cannot tell whether ${path} is stale: connecting to it failed with ${outcome.code ?? outcome.message} (${why}); refusing to replace it: stop the other server or remove the socket, or choose another path`,
    );
  }
  await hook?.("probed", path);
  // One byte long, as the bound socket's name "s": the path length check covers it.
  const moved = join(privateDir, "x");
  try {
    renameSync(path, moved);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return; // gone meanwhile
    throw error;
  }
  await hook?.("moved", path);
  const movedStat = lstatSync(moved);
  const movedIsSocket = movedStat.isSocket();
  if (movedIsSocket && (await probeSocket(moved)) === "stale") {
    unlinkIfThere(moved);
    return;
  }
  // Not what was probed: another process put its file there since. Back into place, never over
  // what may hold the path now (a directory cannot be linked; rename(2) moves it back, refusing a
  // non-empty directory or a file); the caller then finds the path taken and checks it again.
  try {
    if (movedStat.isDirectory()) renameSync(moved, path);
    else linkSync(moved, path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "EEXIST" && code !== "ENOTEMPTY" && code !== "ENOTDIR" && code !== "EISDIR") throw error;
    throw new MeshwardError(
      "E_WORKLOAD_API_SOCKET",
      `${path} changed twice while this server replaced a stale socket there: the ${movedIsSocket ? "socket" : movedStat.isDirectory() ? "directory" : "file"} that took its place first is kept at ${moved} (not removed; link it back by hand if its server should be reached at ${path}), and what holds the path now is left in place; start one server on a path at a time`,
      { cause: error },
    );
  }
  unlinkIfThere(moved);
}

function unlinkIfThere(path: string): void {
  try {
    unlinkSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
}

/** "live" if something accepts a connection at `path`, "stale" if nobody listens (ECONNREFUSED, or ENOENT: gone), else the connect error. */
function probeSocket(path: string): Promise<"live" | "stale" | NodeJS.ErrnoException> {
  return new Promise((resolvePromise) => {
    const probe = connect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolvePromise("live");
    });
    probe.once("error", (error: NodeJS.ErrnoException) => resolvePromise(error.code === "ECONNREFUSED" || error.code === "ENOENT" ? "stale" : error));
  });
}
