import { createSecureContext } from "node:tls";
import type { SecureContext, Server as TlsServer } from "node:tls";
import type { Socket } from "node:net";
import { MeshwardError, describeError } from "../errors.ts";
import type { X509Certificate } from "node:crypto";
import { verifyChain } from "../pki/chain.ts";
import { toX509 } from "../pki/inspect.ts";
import { certificatesFromPem } from "../pki/pem.ts";
import type { IdentityEvent, IdentitySnapshot, IdentitySource } from "../identity/source.ts";
import { buildSecureContextOptions, loadOnce } from "./policy.ts";
import type { SecureOptions, TlsRole } from "./policy.ts";
import { TicketKeyRing } from "./ticket-keys.ts";
import { systemClock, type ClockTimer } from "../util/clock.ts";
import { consoleLogger } from "./logger.ts";
import type { TlsLogger } from "./logger.ts";

export interface IdentityHealth {
  readonly healthy: boolean;
  readonly spiffeId: string | undefined;
  readonly notAfter: Date | undefined;
  /** Why it is unhealthy, for health endpoints and logs. */
  readonly reason: string | undefined;
}

export interface ContextHolderOptions {
  readonly role: TlsRole;
  readonly logger?: TlsLogger;
  /** Called whenever health changes (expiry, recovery). */
  readonly onHealthChange?: (health: IdentityHealth) => void;
  /** Servers: how often session-ticket keys rotate (ms; 0 = never). Default 1 h. */
  readonly ticketKeyRotationMs?: number;
  readonly sessionTimeoutSeconds?: number;
  readonly now?: () => number;
}

/**
 * The current TLS options for one identity, rebuilt once per identity event (never per
 * connection) and pushed to every attached server with `setSecureContext`. After the SVID
 * expires, attached servers refuse new connections instead of presenting it.
 */
export class SecureContextHolder {
  readonly role: TlsRole;
  readonly #identity: IdentitySource;
  readonly #logger: TlsLogger;
  readonly #now: () => number;
  readonly #onHealthChange: ((health: IdentityHealth) => void) | undefined;
  readonly #sessionTimeoutSeconds: number | undefined;
  readonly #ticketKeys: TicketKeyRing | undefined;
  readonly #listeners = new Set<(options: SecureOptions) => void>();
  readonly #unsubscribe: () => void;
  #snapshot: IdentitySnapshot;
  #options: SecureOptions;
  #clientContext: SecureContext | undefined;
  #expiredReason: string | undefined;
  #expiryTimer: ClockTimer | undefined;
  #generation = 1;
  #rootsEpoch = 0;
  /** The current bundle's roots, parsed on the first chainTrusted after a change. */
  #roots: { readonly pem: string; readonly certs: readonly X509Certificate[] } | undefined;
  #closed = false;

  private constructor(identity: IdentitySource, snapshot: IdentitySnapshot, options: ContextHolderOptions) {
    this.role = options.role;
    this.#identity = identity;
    this.#logger = options.logger ?? consoleLogger;
    this.#now = options.now ?? Date.now;
    this.#onHealthChange = options.onHealthChange;
    this.#sessionTimeoutSeconds = options.sessionTimeoutSeconds;
    if (this.role === "server") {
      this.#ticketKeys = new TicketKeyRing(options.ticketKeyRotationMs);
      this.#ticketKeys.onRotate(() => this.#rebuildTicketKeysOnly());
    }
    this.#snapshot = snapshot;
    this.#options = this.#build(snapshot);
    this.#armExpiry();
    this.#unsubscribe = identity.subscribe((event) => this.#onEvent(event));
  }

  /** Waits for the identity's first SVID. */
  static async create(identity: IdentitySource, options: ContextHolderOptions): Promise<SecureContextHolder> {
    if (identity === undefined || identity === null || typeof identity.ready !== "function") {
      throw new MeshwardError("E_INSECURE_CONFIG", "an identity source is required (meshward never runs TLS without a workload identity)");
    }
    const snapshot = identity.current() ?? (await identity.ready());
    return new SecureContextHolder(identity, snapshot, options);
  }

  /** Increases by one on every rebuild; tests and metrics use it. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Increases by one whenever a bundle update removes a root. A TLS session (ticket) or an open
   * connection verified before then may rest on the removed root, which resumption would never
   * look at again: servers rotate their ticket keys, clients forget such sessions, and open
   * connections whose peer chain no longer verifies under the roots held (chainTrusted) are
   * closed gracefully (ConnectionRegistry, the clients' pools and tunnels).
   */
  rootsEpoch(): number {
    return this.#rootsEpoch;
  }

  snapshot(): IdentitySnapshot {
    return this.#snapshot;
  }

  /**
   * Whether a peer chain (leaf first, as the peer sent it; a root Node appended is ignored)
   * verifies under one of the roots held now. After a root leaves the bundle, a connection is
   * ended only when its peer's chain does not (it rested on the removed root, or cannot be told):
   * connections under the roots that stay are kept. Costs a chain verification; called once per
   * open connection when a root is removed, never per handshake.
   */
  chainTrusted(chain: readonly Buffer[] | undefined): boolean {
    const [leaf, ...rest] = chain ?? [];
    if (leaf === undefined) return false;
    const pem = this.#snapshot.bundle.rootsPem;
    if (this.#roots?.pem !== pem) this.#roots = { pem, certs: certificatesFromPem(pem).map((der) => toX509(der)) };
    const roots = this.#roots.certs;
    if (roots.length === 0) return false;
    const intermediates = rest.map((der) => toX509(der)).filter((x509) => x509.subject !== x509.issuer);
    try {
      verifyChain({ leaf, intermediates, roots, at: new Date(this.#now()) });
      return true;
    } catch {
      return false;
    }
  }

  ownSpiffeId(): string {
    return this.#snapshot.svid.spiffeId;
  }

  trustDomain(): string {
    return this.#snapshot.bundle.trustDomain;
  }

  revokedSerials(): ReadonlySet<string> {
    return this.#snapshot.bundle.revokedSerials;
  }

  /** The complete current option set (always pass all of it to setSecureContext). */
  options(): SecureOptions {
    this.#assertUsable();
    return this.#options;
  }

  /** Clients: the secure context for a new connection, built once per rotation. */
  secureContext(): SecureContext {
    this.#assertUsable();
    this.#clientContext ??= createSecureContext(this.#options);
    return this.#clientContext;
  }

  /**
   * A SecureContext whose native context is looked up at connect time, for APIs that take
   * one context up front (grpc-js `createFromSecureContext`) yet must see rotations.
   */
  liveSecureContext(): SecureContext {
    const holder = this;
    return {
      get context() {
        return holder.secureContext().context as unknown;
      },
    } as SecureContext;
  }

  isExpired(): boolean {
    return this.#expiredReason !== undefined;
  }

  health(): IdentityHealth {
    return {
      healthy: this.#expiredReason === undefined && !this.#closed,
      spiffeId: this.#snapshot.svid.spiffeId,
      notAfter: this.#snapshot.svid.notAfter,
      reason: this.#closed ? "closed" : this.#expiredReason,
    };
  }

  /** Called with the full new option set after every rebuild; returns an unsubscribe function. */
  onUpdate(listener: (options: SecureOptions) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Keeps `server` on the current identity: `setSecureContext` with the complete options on
   * every rebuild (new connections only), and refusal of new connections while expired.
   */
  attachServer(server: TlsServer): () => void {
    const guard = (socket: Socket) => {
      if (this.#expiredReason === undefined) return;
      this.#logger.error(`refusing a new connection from ${socket.remoteAddress ?? "?"}: ${this.#expiredReason}`);
      socket.destroy();
    };
    server.prependListener("connection", guard);
    const off = this.onUpdate((options) => {
      try {
        loadOnce(options, (secrets) => server.setSecureContext(secrets));
      } catch (error) {
        this.#logger.error(`could not apply the new TLS identity to a server; it keeps the previous one: ${describeError(error)}`);
      }
    });
    return () => {
      off();
      server.removeListener("connection", guard);
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe();
    this.#ticketKeys?.close();
    if (this.#expiryTimer !== undefined) systemClock.clearTimeout(this.#expiryTimer);
    this.#listeners.clear();
  }

  #assertUsable(): void {
    if (this.#expiredReason !== undefined) throw new MeshwardError("E_IDENTITY_EXPIRED", this.#expiredReason);
  }

  #build(snapshot: IdentitySnapshot): SecureOptions {
    const ticketKeys = this.#ticketKeys?.current();
    return buildSecureContextOptions(
      {
        svid: snapshot.svid,
        bundle: snapshot.bundle,
        ...(ticketKeys === undefined ? {} : { ticketKeys }),
        ...(this.#sessionTimeoutSeconds === undefined ? {} : { sessionTimeoutSeconds: this.#sessionTimeoutSeconds }),
      },
      this.role,
    );
  }

  #onEvent(event: IdentityEvent): void {
    if (this.#closed) return;
    switch (event.type) {
      case "rotated":
      case "bundle-updated":
        this.#apply(event.snapshot);
        return;
      case "renewal-failed":
        this.#logger.warn(
          `renewing ${this.#snapshot.svid.spiffeId} failed (${describeError(event.error)}); still serving the current certificate until ${this.#snapshot.svid.notAfter.toISOString()}, retry in ${event.retryInMs} ms`,
        );
        return;
      case "expired":
        this.#markExpired(`the certificate for ${event.spiffeId} expired and could not be renewed; new TLS connections are refused until a new one arrives`);
        return;
    }
  }

  #apply(snapshot: IdentitySnapshot): void {
    let options: SecureOptions;
    const identityChanged = snapshot.svid.spiffeId !== this.#snapshot.svid.spiffeId;
    let rootRemoved = false;
    try {
      rootRemoved = rootsRemoved(this.#snapshot.bundle.rootsPem, snapshot.bundle.rootsPem);
      // A ticket must not resume into an identity we no longer hold, nor on a root we no longer trust.
      if (identityChanged || rootRemoved) this.#ticketKeys?.rotate(false);
      options = this.#build(snapshot);
      if (this.role === "client") createSecureContext(options); // validate before switching
    } catch (error) {
      this.#logger.error(`the new TLS identity could not be loaded; keeping the previous one: ${describeError(error)}`);
      return;
    }
    this.#snapshot = snapshot;
    if (rootRemoved) {
      this.#rootsEpoch++;
      this.#logger.warn("a root was removed from the trust bundle: TLS sessions verified before are no longer resumed, and open connections whose peer chain rests on the removed root are ended");
    }
    // Expiry is settled before listeners run, so that they see isExpired() as it is for these
    // options: a bundle update that arrives while the SVID is expired (a CRL refresh while the CA
    // refuses to renew) still reaches the revocation and root-removal listeners, but the gRPC
    // credentials keep publishing null and attached servers keep refusing new connections.
    const wasExpired = this.#expiredReason !== undefined;
    if (snapshot.svid.notAfter.getTime() > this.#now()) this.#expiredReason = undefined;
    this.#armExpiry();
    this.#publish(options);
    if (wasExpired && this.#expiredReason === undefined) {
      this.#logger.info(`a valid certificate for ${snapshot.svid.spiffeId} is back; accepting new TLS connections again`);
      this.#onHealthChange?.(this.health());
    }
  }

  #publish(options: SecureOptions): void {
    this.#options = options;
    this.#clientContext = undefined;
    this.#generation++;
    for (const listener of this.#listeners) listener(options);
  }

  /**
   * Session-ticket rotation changes nothing but the keys. While the SVID is expired nothing is
   * republished: a listener that hands options to a server (grpc-js takes any non-null options as
   * valid credentials) would otherwise accept connections again; the next identity event builds
   * the options with the current keys.
   */
  #rebuildTicketKeysOnly(): void {
    if (this.#closed || this.#expiredReason !== undefined) return;
    this.#publish(this.#build(this.#snapshot));
  }

  #armExpiry(): void {
    if (this.#expiryTimer !== undefined) systemClock.clearTimeout(this.#expiryTimer);
    const remaining = this.#snapshot.svid.notAfter.getTime() - this.#now();
    if (remaining <= 0) {
      this.#markExpired(`the certificate for ${this.#snapshot.svid.spiffeId} expired at ${this.#snapshot.svid.notAfter.toISOString()}; new TLS connections are refused until a new one arrives`);
      return;
    }
    // systemClock counts time the host spent suspended: a certificate that expired while it slept
    // is withdrawn within seconds of waking, not once a monotonic timer catches up.
    this.#expiryTimer = systemClock.setTimeout(() => this.#armExpiry(), remaining);
  }

  #markExpired(reason: string): void {
    if (this.#expiredReason !== undefined) return;
    this.#expiredReason = reason;
    this.#logger.error(reason);
    this.#onHealthChange?.(this.health());
  }
}

/** Whether `next` lacks a root that `previous` held (a root rotation's end, or a distrusted root). */
function rootsRemoved(previous: string, next: string): boolean {
  if (previous === next) return false;
  const kept = new Set(certificatesFromPem(next).map((der) => der.toString("base64")));
  return certificatesFromPem(previous).some((der) => !kept.has(der.toString("base64")));
}
