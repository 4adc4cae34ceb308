import { connect as tlsConnect } from "node:tls";
import type { ConnectionOptions, TLSSocket } from "node:tls";
import { describeError, MeshwardError } from "../errors.ts";
import type { IdentitySource } from "../identity/source.ts";
import { compileMatcher, describeMatcher } from "../spiffe/match.ts";
import type { SpiffeIdMatcher } from "../spiffe/match.ts";
import { SecureContextHolder } from "../tls/context.ts";
import { consoleLogger } from "../tls/logger.ts";
import type { TlsLogger } from "../tls/logger.ts";
import { spiffeCheckServerIdentity, verifyTlsPeer } from "../tls/verify.ts";
import type { PeerPolicy } from "../tls/verify.ts";
import { assertSecureOptions, setPeer, warnInsecure } from "./common.ts";
import type { ClientCommonOptions } from "./common.ts";

const holders = new WeakMap<IdentitySource, Promise<SecureContextHolder>>();

/** One client context holder per identity source, shared by every client built on it. */
export function clientHolderFor(identity: IdentitySource, logger: TlsLogger): Promise<SecureContextHolder> {
  let holder = holders.get(identity);
  if (holder === undefined) {
    holder = SecureContextHolder.create(identity, { role: "client", logger });
    holders.set(identity, holder);
    holder.catch(() => holders.delete(identity));
  }
  return holder;
}

const predicateIds = new WeakMap<object, number>();
let nextPredicateId = 1;

/** A stable key per expected identity: session caches and agents are never shared across keys. */
export function matcherKey(matcher: SpiffeIdMatcher | undefined): string {
  if (matcher === undefined) return "insecure";
  if (typeof matcher === "function") {
    let id = predicateIds.get(matcher);
    if (id === undefined) predicateIds.set(matcher, (id = nextPredicateId++));
    return `fn#${id}`;
  }
  if (typeof matcher === "string") return `id:${matcher}`;
  if (Array.isArray(matcher)) return `ids:${[...(matcher as readonly string[])].sort().join(",")}`;
  const p = matcher as { trustDomain: string; namespace?: string; appId?: string };
  return `td:${p.trustDomain}/${p.namespace ?? "*"}/${p.appId ?? "*"}`;
}

export interface ClientRuntime {
  readonly holder: SecureContextHolder;
  readonly policy: PeerPolicy;
  readonly logger: TlsLogger;
  readonly insecure: boolean;
  readonly key: string;
}

export async function prepareClient(options: ClientCommonOptions, what: string): Promise<ClientRuntime> {
  const { insecure } = assertSecureOptions(options, what, "client");
  const logger = options.logger ?? consoleLogger;
  const holder = await clientHolderFor(options.identity, logger);
  const policy: PeerPolicy = {
    accepts: insecure ? () => true : compileMatcher(options.expect),
    expected: insecure ? "anything (insecure)" : describeMatcher(options.expect),
    revokedSerials: () => holder.revokedSerials(),
    peerRole: "server",
  };
  return { holder, policy, logger, insecure, key: insecure ? "insecure" : matcherKey(options.expect) };
}

/** Per expected identity and address: the last session ticket, so resumption never crosses identities. */
export class SessionCache {
  readonly #sessions = new Map<string, Buffer>();
  constructor(private readonly limit = 256) {}
  get(key: string): Buffer | undefined {
    return this.#sessions.get(key);
  }
  set(key: string, session: Buffer): void {
    this.#sessions.delete(key);
    this.#sessions.set(key, session);
    if (this.#sessions.size > this.limit) this.#sessions.delete(this.#sessions.keys().next().value as string);
  }
  delete(key: string): void {
    this.#sessions.delete(key);
  }
}

export interface DialOptions {
  readonly host: string;
  readonly port: number;
  readonly servername?: string;
  readonly ALPNProtocols?: string[];
  readonly session?: Buffer;
}

/**
 * Opens a TLS connection with the client policy: our SVID, the bundle roots, SPIFFE ID
 * check on full handshakes (checkServerIdentity) and again on `secureConnect`, because Node
 * skips checkServerIdentity for resumed sessions.
 */
export function dialTls(runtime: ClientRuntime, dial: DialOptions, sessions?: SessionCache): TLSSocket {
  const sessionKey = `${runtime.key}|${dial.host}|${dial.port}|${dial.servername ?? ""}`;
  const session = dial.session ?? sessions?.get(sessionKey);
  const options: ConnectionOptions = {
    host: dial.host,
    port: dial.port,
    secureContext: runtime.holder.secureContext(),
    rejectUnauthorized: !runtime.insecure,
    checkServerIdentity: runtime.insecure ? () => undefined : spiffeCheckServerIdentity(runtime.policy),
    ...(dial.servername !== undefined && isHostName(dial.servername) ? { servername: dial.servername } : {}),
    ...(dial.ALPNProtocols ? { ALPNProtocols: dial.ALPNProtocols } : {}),
    ...(session ? { session } : {}),
  };
  if (runtime.insecure) warnInsecure(runtime.logger, `a connection to ${dial.host}:${dial.port}`);
  const socket = tlsConnect(options);
  let verified = false;
  let pendingSession: Buffer | undefined;
  socket.once("secureConnect", () => {
    if (runtime.insecure) return;
    try {
      setPeer(socket, verifyTlsPeer(socket, runtime.policy));
      verified = true;
      if (pendingSession !== undefined) sessions?.set(sessionKey, pendingSession);
    } catch (error) {
      sessions?.delete(sessionKey);
      runtime.logger.warn(`refused server ${dial.host}:${dial.port}: ${describeError(error)}`);
      socket.destroy(error instanceof MeshwardError ? error : new MeshwardError("E_PEER_UNTRUSTED", describeError(error)));
    }
  });
  if (sessions && !runtime.insecure) {
    socket.on("session", (s: Buffer) => {
      if (verified) sessions.set(sessionKey, s);
      else pendingSession = s;
    });
  }
  return socket;
}

function isHostName(name: string): boolean {
  return name.length > 0 && !/^[\d.]+$/.test(name) && !name.includes(":");
}
