import { createPrivateKey } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { describeError, isMeshwardError, MeshwardError } from "../../errors.ts";
import { systemClock, type Clock, type ClockTimer, type Rng } from "../../util/clock.ts";
import { backoffDelay, type Backoff } from "../schedule.ts";
import type { IdentityEvent, IdentitySnapshot, IdentitySource, TrustBundle } from "../source.ts";
import { buildSnapshot, splitDerCertificates, verifiedCrls } from "./material.ts";
import { ENDPOINT_SOCKET_ENV, SECURITY_HEADER, SECURITY_HEADER_VALUE, workloadApiDefinition } from "./proto.ts";
import type { X509SvidResponseMessage } from "./proto.ts";
import { holdEventLoopUntilSettled } from "../../util/event-loop-hold.ts";

export interface WorkloadApiClientOptions {
  /**
   * The endpoint: "/abs/path.sock", "unix:///abs/path.sock" or "tcp://127.0.0.1:PORT".
   * Defaults to $SPIFFE_ENDPOINT_SOCKET, as the Workload Endpoint spec requires.
   */
  readonly socketPath?: string;
  readonly logger?: Logger;
}

export interface WorkloadApiSourceOptions extends WorkloadApiClientOptions {
  /** Reconnection backoff (default 100 ms doubling to 5 s, jittered). */
  readonly backoff?: Backoff;
  readonly clock?: Clock;
  readonly rng?: Rng;
}

export const DEFAULT_WORKLOAD_API_BACKOFF: Backoff = { initialMs: 100, maxMs: 5000 };

/** gRPC target for a Workload Endpoint address (spec section 4). */
export function workloadApiTarget(address: string | undefined): string {
  const value = address ?? process.env[ENDPOINT_SOCKET_ENV];
  if (value === undefined || value === "") {
    throw new MeshwardError("E_WORKLOAD_API_ADDRESS", `no Workload API address: pass socketPath or set ${ENDPOINT_SOCKET_ENV} (e.g. unix:///run/meshward/workload.sock)`);
  }
  if (value.startsWith("/")) return `unix://${value}`;
  if (value.startsWith("unix:///")) return value;
  const tcp = /^tcp:\/\/(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):(\d{1,5})$/.exec(value);
  if (tcp) return `${tcp[1]}:${tcp[2]}`;
  throw new MeshwardError(
    "E_WORKLOAD_API_ADDRESS",
    `Workload API address ${JSON.stringify(value)} is not an absolute socket path, unix:///abs/path or tcp://IP:PORT`,
  );
}

function newClient(target: string): grpc.Client {
  const { Client } = workloadApiDefinition();
  // grpc-js waits up to 120 s between reconnect attempts by default; a restarted local agent
  // should be found again within our own (short) backoff.
  return new Client(target, grpc.credentials.createInsecure(), {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 2000,
  });
}

function securityMetadata(): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set(SECURITY_HEADER, SECURITY_HEADER_VALUE);
  return metadata;
}

/**
 * Checks a FetchX509SVID response and picks the default identity (the first SVID, spec
 * 5.3). A message with a missing mandatory field, a key that does not match, or a chain that
 * does not verify to the bundle is refused (E_WORKLOAD_API_RESPONSE_INVALID), never used.
 */
export function snapshotFromResponse(response: X509SvidResponseMessage, at = new Date()): IdentitySnapshot {
  const first = response.svids[0];
  const invalid = (reason: string, cause?: unknown) =>
    new MeshwardError("E_WORKLOAD_API_RESPONSE_INVALID", `the Workload API sent an unusable X509-SVID: ${reason}`, cause === undefined ? {} : { cause });
  if (first === undefined) throw invalid("the response holds no SVID");
  if (!first.spiffe_id || first.x509_svid.length === 0 || first.x509_svid_key.length === 0 || first.bundle.length === 0) {
    throw invalid("a mandatory field (spiffe_id, x509_svid, x509_svid_key, bundle) is empty");
  }
  let privateKey;
  try {
    privateKey = createPrivateKey({ key: first.x509_svid_key, format: "der", type: "pkcs8" });
  } catch (error) {
    throw invalid("x509_svid_key is not an unencrypted PKCS#8 DER private key", error);
  }
  try {
    const chain = splitDerCertificates(first.x509_svid);
    const roots = splitDerCertificates(first.bundle);
    // The server hands on every CRL its source enforces: after an issuer rotation also the one of
    // the issuer this SVID is not on, which no certificate here can verify; it is left out (every
    // CRL lists every revocation), and the response is refused only when no CRL verifies.
    const revocations = response.crl.length > 0 ? verifiedCrls(response.crl, [...chain.slice(1), ...roots]) : undefined;
    const snapshot = buildSnapshot({ chain, privateKey, roots, at, ...(revocations ? { revokedSerials: revocations.revokedSerials, crls: revocations.crls } : {}) });
    if (snapshot.svid.spiffeId !== first.spiffe_id) throw invalid(`spiffe_id ${first.spiffe_id} differs from the certificate's ${snapshot.svid.spiffeId}`);
    return snapshot;
  } catch (error) {
    if (isMeshwardError(error, "E_WORKLOAD_API_RESPONSE_INVALID")) throw error;
    throw invalid(describeError(error), error);
  }
}

function statusError(error: grpc.ServiceError): MeshwardError {
  const detail = error.details || error.message;
  switch (error.code) {
    case grpc.status.INVALID_ARGUMENT:
      return new MeshwardError("E_WORKLOAD_API_REFUSED", `the Workload API refused the request (InvalidArgument): ${detail}`);
    case grpc.status.PERMISSION_DENIED:
      return new MeshwardError("E_WORKLOAD_API_PERMISSION_DENIED", `the Workload API has no identity for this workload (PermissionDenied): ${detail}`);
    case grpc.status.UNIMPLEMENTED:
      return new MeshwardError("E_WORKLOAD_API_UNIMPLEMENTED", `the endpoint does not implement this Workload API call: ${detail}`);
    default:
      return new MeshwardError("E_WORKLOAD_API_UNAVAILABLE", `the Workload API is unavailable (${grpc.status[error.code] ?? error.code}): ${detail}`);
  }
}

/** Spec, Workload Endpoint appendix A: InvalidArgument and Unimplemented are not retried. */
function isRetryable(code: grpc.status): boolean {
  return code !== grpc.status.INVALID_ARGUMENT && code !== grpc.status.UNIMPLEMENTED;
}

/** One X509-SVID from the Workload API: opens the stream, takes the first message, closes. */
export async function fetchX509Svid(socketPath?: string, options: { timeoutMs?: number } = {}): Promise<IdentitySnapshot> {
  const client = newClient(workloadApiTarget(socketPath));
  try {
    return await new Promise<IdentitySnapshot>((resolve, reject) => {
      const method = workloadApiDefinition().service["FetchX509SVID"]!;
      const call = client.makeServerStreamRequest(
        method.path,
        (value: object) => method.requestSerialize(value),
        (bytes: Buffer) => method.responseDeserialize(bytes) as X509SvidResponseMessage,
        {},
        securityMetadata(),
        { deadline: Date.now() + (options.timeoutMs ?? 10_000) },
      );
      let settled = false;
      call.on("data", (response: X509SvidResponseMessage) => {
        if (settled) return;
        settled = true;
        try {
          resolve(snapshotFromResponse(response));
        } catch (error) {
          reject(error);
        }
        call.cancel();
      });
      call.on("error", (error: grpc.ServiceError) => {
        if (settled) return;
        settled = true;
        reject(error.code === grpc.status.DEADLINE_EXCEEDED ? new MeshwardError("E_WORKLOAD_API_TIMEOUT", "the Workload API sent no X509-SVID in time") : statusError(error));
      });
      call.on("end", () => {
        if (settled) return;
        settled = true;
        reject(new MeshwardError("E_WORKLOAD_API_UNAVAILABLE", "the Workload API closed the stream without sending an X509-SVID"));
      });
    });
  } finally {
    client.close();
  }
}

/**
 * An IdentitySource fed by a SPIFFE Workload API endpoint (meshward's own server, a SPIRE
 * agent, ...). Keeps one FetchX509SVID stream open; when it breaks, keeps the current
 * identity (while valid) and reconnects with jittered backoff. PermissionDenied from the
 * server withdraws the identity (`expired`); so does the SVID passing its notAfter.
 * InvalidArgument / Unimplemented are not retried (spec): ready() rejects.
 */
export function workloadApiSource(options: WorkloadApiSourceOptions = {}): IdentitySource {
  return new WorkloadApiSource(options);
}

class WorkloadApiSource implements IdentitySource {
  readonly #clock: Clock;
  readonly #rng: Rng;
  readonly #backoff: Backoff;
  readonly #logger: Logger | undefined;
  readonly #client: grpc.Client;
  readonly #listeners = new Set<(event: IdentityEvent) => void>();
  #snapshot: IdentitySnapshot | undefined;
  #call: grpc.ClientReadableStream<X509SvidResponseMessage> | undefined;
  #attempt = 0;
  #retryTimer: ClockTimer | undefined;
  #expiryTimer: ClockTimer | undefined;
  #closed = false;
  #lastProblem = "";
  #resolveReady!: (snapshot: IdentitySnapshot) => void;
  #rejectReady!: (error: Error) => void;
  readonly #ready: Promise<IdentitySnapshot>;

  constructor(options: WorkloadApiSourceOptions) {
    this.#clock = options.clock ?? systemClock;
    this.#rng = options.rng ?? Math.random;
    this.#backoff = options.backoff ?? DEFAULT_WORKLOAD_API_BACKOFF;
    this.#logger = options.logger;
    this.#client = newClient(workloadApiTarget(options.socketPath));
    this.#ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.#ready.catch(() => undefined);
    holdEventLoopUntilSettled(this.#ready);
    this.#connect();
  }

  ready(): Promise<IdentitySnapshot> {
    return this.#ready;
  }

  current(): IdentitySnapshot | undefined {
    if (this.#snapshot !== undefined && this.#snapshot.svid.notAfter.getTime() <= this.#clock.now()) return undefined;
    return this.#snapshot;
  }

  subscribe(listener: (event: IdentityEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#retryTimer) this.#clock.clearTimeout(this.#retryTimer);
    if (this.#expiryTimer) this.#clock.clearTimeout(this.#expiryTimer);
    this.#call?.cancel();
    this.#client.close();
    this.#rejectReady(new MeshwardError("E_IDENTITY_CLOSED", "the Workload API source was closed before it had an identity"));
    this.#listeners.clear();
  }

  #connect(): void {
    if (this.#closed) return;
    const method = workloadApiDefinition().service["FetchX509SVID"]!;
    const call = this.#client.makeServerStreamRequest(
      method.path,
      (value: object) => method.requestSerialize(value),
      (bytes: Buffer) => method.responseDeserialize(bytes) as X509SvidResponseMessage,
      {},
      securityMetadata(),
    );
    this.#call = call;
    let finished = false;
    const finish = (retry: boolean) => {
      if (finished) return;
      finished = true;
      if (this.#call === call) this.#call = undefined;
      if (retry) this.#scheduleReconnect();
    };
    call.on("data", (response: X509SvidResponseMessage) => this.#accept(response));
    call.on("error", (error: grpc.ServiceError) => {
      if (this.#closed) return finish(false);
      const problem = statusError(error);
      if (error.code === grpc.status.PERMISSION_DENIED) this.#withdraw(problem.message);
      if (!isRetryable(error.code)) {
        this.#logger?.error({ event: "workload-api-refused", code: problem.code }, problem.message);
        this.#rejectReady(problem);
        return finish(false);
      }
      this.#note("warn", problem.message);
      finish(true);
    });
    call.on("end", () => finish(!this.#closed));
  }

  #accept(response: X509SvidResponseMessage): void {
    if (this.#closed) return; // a message already on its way when close() cancelled the stream arms no timer
    let received: IdentitySnapshot;
    try {
      received = snapshotFromResponse(response, new Date(this.#clock.now()));
    } catch (error) {
      // Spec 4.5: report and discard; the current identity stays.
      this.#note("error", describeError(error));
      return;
    }
    this.#attempt = 0;
    this.#lastProblem = "";
    const previous = this.#snapshot;
    let snapshot: IdentitySnapshot;
    let event: IdentityEvent;
    if (previous === undefined || previous.svid.certChainPem !== received.svid.certChainPem) {
      snapshot = received;
      event = { type: "rotated", snapshot };
      this.#logger?.info({ event: "rotated", spiffeId: snapshot.svid.spiffeId, serial: snapshot.svid.serial, notAfter: snapshot.svid.notAfter.toISOString() }, "X509-SVID received from the Workload API");
    } else if (!sameBundle(previous.bundle, received.bundle)) {
      // The same SVID (its object is kept) with new roots or revocations, or only a CRL re-signed
      // with the same revocations: its nextUpdate moved, and whatever hands the CRL on (a Workload
      // API server fed by this source, the CRL-age metric) needs the fresh one.
      snapshot = { svid: previous.svid, bundle: received.bundle };
      event = { type: "bundle-updated", snapshot };
    } else {
      // A resent, identical message (every reconnect: each stream starts with the full identity):
      // the snapshot, and the expiry timer armed for it, stay as they are.
      return;
    }
    this.#snapshot = snapshot;
    this.#armExpiry(snapshot);
    this.#resolveReady(snapshot);
    this.#emit(event);
  }

  #withdraw(reason: string): void {
    const previous = this.#snapshot;
    if (previous === undefined) return;
    this.#snapshot = undefined;
    if (this.#expiryTimer) this.#clock.clearTimeout(this.#expiryTimer);
    this.#logger?.error({ event: "expired", spiffeId: previous.svid.spiffeId }, `the X509-SVID is withdrawn: ${reason}`);
    this.#emit({ type: "expired", spiffeId: previous.svid.spiffeId });
  }

  #armExpiry(snapshot: IdentitySnapshot): void {
    if (this.#expiryTimer) this.#clock.clearTimeout(this.#expiryTimer);
    this.#expiryTimer = this.#clock.setTimeout(() => {
      if (this.#snapshot === snapshot) this.#withdraw(`it expired at ${snapshot.svid.notAfter.toISOString()} and no new one arrived`);
    }, snapshot.svid.notAfter.getTime() - this.#clock.now());
  }

  #scheduleReconnect(): void {
    if (this.#closed) return;
    const delay = backoffDelay(this.#attempt++, this.#backoff, this.#rng);
    this.#retryTimer = this.#clock.setTimeout(() => this.#connect(), delay);
  }

  /** Logs a problem once until it changes or the stream recovers. */
  #note(level: "warn" | "error", message: string): void {
    if (message === this.#lastProblem) return;
    this.#lastProblem = message;
    this.#logger?.[level]({ event: "workload-api-problem" }, message);
  }

  #emit(event: IdentityEvent): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(event);
      } catch (error) {
        this.#logger?.error({ event: "listener-failed", error: describeError(error) }, "an identity listener threw");
      }
    }
  }
}

/** Same roots, revoked serials and CRL bytes. */
function sameBundle(a: TrustBundle, b: TrustBundle): boolean {
  if (a.rootsPem !== b.rootsPem || a.revokedSerials.size !== b.revokedSerials.size) return false;
  if (![...a.revokedSerials].every((serial) => b.revokedSerials.has(serial))) return false;
  const crlsA = a.crls ?? [];
  const crlsB = b.crls ?? [];
  return crlsA.length === crlsB.length && crlsA.every((der, i) => der.equals(crlsB[i]!));
}
