import { lookup as dnsLookup } from "node:dns/promises";
import { isIP } from "node:net";
import { isMeshwardError, MeshwardError } from "../errors.ts";
import { formatHostPort, parseHostPortList, type HostPort } from "../util/address.ts";

/**
 * Several CA replicas behind one `--ca` value: a comma-separated list of HOST:PORT, where a
 * host that is a DNS name may stand for several addresses (a Kubernetes headless Service).
 * A request that fails on one replica because it could not be served there (refused, reset,
 * timed out, gRPC UNAVAILABLE, the replica's store unreachable) is retried on the next with
 * backoff; any other answer (a refusal) is final. Retrying never burns a join token: the CA
 * spends a use only in the transaction that records the certificate it returns.
 */

/** Parses "HOST:PORT[,HOST:PORT…]"; E_ADDRESS_INVALID names the bad entry. */
export function parseCaAddresses(text: string, what = "CA address"): HostPort[] {
  return parseHostPortList(text, what);
}

export type Lookup = (host: string) => Promise<readonly string[]>;

const systemLookup: Lookup = async (host) => (await dnsLookup(host, { all: true })).map((a) => a.address);

/**
 * Expands DNS names into one endpoint per address (IP literals stay as they are). A name that
 * does not resolve is kept once, so that trying it gives the resolver's error as the reason.
 */
export async function resolveCaEndpoints(list: readonly HostPort[], lookup: Lookup = systemLookup): Promise<HostPort[]> {
  const out: HostPort[] = [];
  const seen = new Set<string>();
  const add = (endpoint: HostPort) => {
    const key = formatHostPort(endpoint);
    if (!seen.has(key)) {
      seen.add(key);
      out.push(endpoint);
    }
  };
  for (const entry of list) {
    if (isIP(entry.host) !== 0) {
      add(entry);
      continue;
    }
    let addresses: readonly string[] = [];
    try {
      addresses = await lookup(entry.host);
    } catch {
      addresses = [];
    }
    if (addresses.length === 0) add(entry);
    for (const address of addresses) add({ host: address, port: entry.port });
  }
  return out;
}

/** Errors worth another replica: this one could not serve the request at all. */
export function isFailoverError(error: unknown): boolean {
  if (!isMeshwardError(error)) return false;
  // The JWKS or Kubernetes API a replica attests with may fail from that replica only (its network
  // path, its circuit breaker still open after the API server recovered): the next one may answer.
  // A replica refused for its serving chain (its issuer retired with --now, or its certificate
  // revoked: ca-client.ts servingChainRefusal) is an impostor or a replica behind the others: the
  // next one may be the CA.
  return error.code === "E_CA_UNAVAILABLE" || error.code === "E_CA_ISSUER_RETIRED" || error.code === "E_CA_CERT_REVOKED" || error.code === "E_JWKS_UNAVAILABLE" || error.code === "E_KUBERNETES_UNAVAILABLE" || error.code.startsWith("E_STORE_");
}

export interface FailoverOptions {
  readonly lookup?: Lookup;
  /** Waits between replicas; real timers by default (tests pass a recorder). */
  readonly sleep?: (ms: number) => Promise<void>;
  readonly random?: () => number;
  /** First backoff step; doubles per replica tried, capped at maxBackoffMs. */
  readonly baseBackoffMs?: number;
  readonly maxBackoffMs?: number;
}

/** The endpoint that answered last, per `--ca` value: later calls start there (and so stay on one replica). */
const preferred = new Map<string, string>();
/** An endpoint whose answer was refused (a replica behind the others): the next call starts at the one after it. */
const avoided = new Map<string, string>();

/**
 * The next call for `address` starts at the replica after `endpoint` (which stays in the list,
 * tried last): its answer was valid but not usable (a replica that still signs with a retired
 * issuer, ca-source.ts). No effect with a single address.
 */
export function avoidCaEndpoint(address: string, endpoint: string): void {
  avoided.set(address, endpoint);
  if (preferred.get(address) === endpoint) preferred.delete(address);
}

/**
 * Runs `attempt` against the replicas of `address` in turn, starting with the one that answered
 * last (a random one at first, which spreads clients over replicas), until one serves it.
 */
export async function withCaFailover<T>(address: string, attempt: (endpoint: HostPort) => Promise<T>, options: FailoverOptions = {}): Promise<T> {
  const configured = parseCaAddresses(address);
  // A single IP:PORT needs neither resolution nor bookkeeping (the common, one-replica case).
  if (configured.length === 1 && isIP(configured[0]!.host) !== 0) return attempt(configured[0]!);
  const endpoints = await resolveCaEndpoints(configured, options.lookup);
  const random = options.random ?? Math.random;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const base = options.baseBackoffMs ?? 50;
  const cap = options.maxBackoffMs ?? 1_000;
  const last = preferred.get(address);
  let start = endpoints.findIndex((e) => formatHostPort(e) === last);
  const avoid = avoided.get(address);
  if (avoid !== undefined) {
    avoided.delete(address);
    const index = endpoints.findIndex((e) => formatHostPort(e) === avoid);
    if (index >= 0 && (start < 0 || start === index)) start = (index + 1) % endpoints.length;
  }
  if (start < 0) start = Math.floor(random() * endpoints.length);
  const failures: string[] = [];
  let lastError: unknown;
  for (let i = 0; i < endpoints.length; i += 1) {
    const endpoint = endpoints[(start + i) % endpoints.length]!;
    if (i > 0) {
      // Full jitter (AWS architecture blog's backoff), so that clients of a dead replica do not
      // arrive at the next one in step.
      await sleep(Math.round(Math.min(cap, base * 2 ** (i - 1)) * (0.5 + random() / 2)));
    }
    try {
      const result = await attempt(endpoint);
      preferred.set(address, formatHostPort(endpoint));
      return result;
    } catch (error) {
      if (!isFailoverError(error) || endpoints.length === 1) throw error;
      lastError = error;
      failures.push(`${formatHostPort(endpoint)}: ${(error as Error).message}`);
    }
  }
  preferred.delete(address);
  throw new MeshwardError("E_CA_UNAVAILABLE", `no CA replica could serve the request (${endpoints.length} tried): ${failures.join("; ")}`, { cause: lastError });
}
