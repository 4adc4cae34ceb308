import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { parseSpiffeId } from "../spiffe/id.ts";

export const XFCC = "x-forwarded-client-cert";
export const APP_ID_HEADER = "dapr-app-id";

/** Hop-by-hop fields (RFC 9110 §7.6.1, plus HTTP/2's): never forwarded as they are. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "transfer-encoding",
  "upgrade",
  "te",
  "trailer",
  "http2-settings",
]);

/**
 * HOP_BY_HOP.has(lower), without hashing the name: a received name is a new string per message,
 * and a Set lookup computes its hash first (~2 lookups per forwarded head). The same names.
 */
export function isHopByHop(lower: string): boolean {
  switch (lower.length) {
    case 2:
      return lower === "te";
    case 7:
      return lower === "upgrade" || lower === "trailer";
    case 10:
      return lower === "connection" || lower === "keep-alive";
    case 14:
      return lower === "http2-settings";
    case 16:
      return lower === "proxy-connection";
    case 17:
      return lower === "transfer-encoding";
    case 18:
      return lower === "proxy-authenticate";
    case 19:
      return lower === "proxy-authorization";
    default:
      return false;
  }
}

/**
 * A table of name lengths (`table[length] === 1`), for the per-field checks that skip names no
 * rule can match: a typed-array read where a Set<number> lookup cost a hash-table probe per field.
 */
export function lengthTable(lengths: Iterable<number>): Uint8Array {
  const all = [...lengths];
  const table = new Uint8Array(Math.max(0, ...all) + 1);
  for (const n of all) table[n] = 1;
  return table;
}

/** Whether `table` (lengthTable) holds `length`. */
export function hasLength(table: Uint8Array, length: number): boolean {
  return length < table.length && table[length] === 1;
}

/** The field names a message's Connection header values list (connection-specific, RFC 9110 §7.6.1). */
export function connectionListed(connectionValues: Iterable<string>): Set<string> {
  const listed = new Set<string>();
  for (const value of connectionValues) {
    for (const token of value.split(",")) {
      const name = token.trim().toLowerCase();
      if (name !== "") listed.add(name);
    }
  }
  return listed;
}

/**
 * Dapr's caller attribution, as Dapr's callee sidecar stamps it on a request for its app
 * (dapr/dapr pkg/messaging/v1/util.go: CallerIDHeader = "dapr-caller-app-id", CalleeIDHeader =
 * "dapr-callee-app-id", and in newer releases CallerNamespaceHeader = "dapr-caller-namespace"; set in
 * pkg/messaging/grpc_proxy.go setLocalIdentityMetadata from the peer's SPIFFE ID,
 * pkg/security/spiffe FromGRPCContext). Lowercase, as Dapr writes them.
 */
export const CALLER_APP_ID = "dapr-caller-app-id";
export const CALLER_NAMESPACE = "dapr-caller-namespace";
export const CALLEE_APP_ID = "dapr-callee-app-id";

/**
 * Headers that tell the app who called (and whom): never taken from a caller, only set by the
 * sidecar (callerStamp). Dapr's callee sidecar replaces all three with what the verified peer
 * and its own app id say, and strips a caller's own (dapr/dapr pkg/messaging/grpc_proxy.go
 * setLocalIdentityMetadata; StripUntrustedCallerIdentity), so apps moved from Dapr authorise on
 * them: a caller's own would be a forged identity.
 */
export const IDENTITY_HEADERS: readonly string[] = [XFCC, CALLER_APP_ID, CALLER_NAMESPACE, CALLEE_APP_ID];
/** Their name lengths, for callers that skip names no rule can match. */
export const IDENTITY_LENGTHS: ReadonlySet<number> = new Set(IDENTITY_HEADERS.map((name) => name.length));
const IDENTITY_LENGTH_TABLE = lengthTable(IDENTITY_LENGTHS);

const NOT_ALPHANUMERIC = /[^a-z0-9-]/;
const NOT_ALPHANUMERIC_ALL = /[^a-z0-9-]/g;

/**
 * A lowercase field name as CGI-style servers may read it: every character but a letter or a
 * digit is '-'. WEBrick and PHP give `X_HTTP_METHOD_OVERRIDE`, `x-http-method-override` and
 * `X.HTTP.Method.Override` one variable; lighttpd's CGI and FastCGI environment maps every
 * non-alphanumeric character to '_' (`x+forwarded~client!cert` is HTTP_X_FORWARDED_CLIENT_CERT).
 */
export function cgiFieldName(lower: string): string {
  return NOT_ALPHANUMERIC.test(lower) ? lower.replace(NOT_ALPHANUMERIC_ALL, "-") : lower;
}

/**
 * Whether a lowercase field name is an identity header in any spelling: any character but a
 * letter or a digit is the same as '-' to some CGI/WSGI server (PEP 3333 maps `_` and `-` to
 * HTTP_X_FORWARDED_CLIENT_CERT, PHP `.` too, lighttpd every other token character).
 */
export function isIdentityHeader(lower: string): boolean {
  if (!hasLength(IDENTITY_LENGTH_TABLE, lower.length)) return false;
  return IDENTITY_HEADERS.includes(cgiFieldName(lower));
}

/**
 * What a proxy sends on for one received field (`lower`: its lowercase name): undefined when it
 * is hop-by-hop, named in Connection, or an identity header in any spelling, else its value.
 * `te: trailers` is kept: gRPC needs it. The one rule for every header the sidecar forwards.
 */
export function forwardedValue<V>(lower: string, value: V, listed: ReadonlySet<string>): V | "trailers" | undefined {
  if (lower === "te") return String(value).toLowerCase().includes("trailers") ? "trailers" : undefined;
  return isHopByHop(lower) || (listed.size > 0 && listed.has(lower)) || isIdentityHeader(lower) ? undefined : value;
}

/**
 * Fields a trailer section may not carry on (RFC 9110 §6.5.1: framing, routing, request
 * modifiers, authentication), besides what forwardedValue drops.
 */
const NOT_IN_TRAILERS: ReadonlySet<string> = new Set(["content-length", "content-type", "content-encoding", "content-range", "host", "authorization", "cookie", "set-cookie", "expect", "max-forwards", "cache-control", "pragma", "range"]);

/** Whether a trailer field is passed on (never identity, framing or routing fields). */
export function forwardedTrailer(lower: string): boolean {
  return !NOT_IN_TRAILERS.has(lower) && forwardedValue(lower, "", NO_FIELDS) !== undefined;
}
const NO_FIELDS: ReadonlySet<string> = new Set();

/**
 * Request/response headers with hop-by-hop fields (RFC 9110 §7.6.1, and any named in
 * Connection but Host), identity headers and HTTP/2 pseudo-headers removed (forwardedValue, per field).
 */
export function forwardableHeaders(headers: IncomingHttpHeaders | Record<string, unknown>): OutgoingHttpHeaders {
  const listed = connectionListed(headers.connection === undefined ? [] : [String(headers.connection)]);
  // Whatever Connection names, the one Host the request was judged with goes on (RFC 9112 §3.2),
  // as in the HTTP/1 relay: dropped, node:http would send its own ("localhost:80").
  listed.delete("host");
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(":")) continue;
    const lower = name.toLowerCase();
    const kept = forwardedValue(lower, value as OutgoingHttpHeaders[string], listed);
    if (kept !== undefined) out[lower] = kept;
  }
  return out;
}

/** Envoy's x-forwarded-client-cert form: By=<our SPIFFE ID>;URI=<verified caller SPIFFE ID>. */
export function xfccValue(ownId: string, callerId: string): string {
  return `By=${ownId};URI=${callerId}`;
}

/** A verified SPIFFE ID with its workload parts (set only for spiffe://td/ns/<namespace>/<app-id>). */
export interface StampIdentity {
  readonly spiffeId: string;
  readonly trustDomain: string;
  readonly namespace: string | undefined;
  readonly appId: string | undefined;
}

/** The workload parts of a valid SPIFFE ID (the same rule as the peer's, src/tls/verify.ts). */
export function stampIdentityOf(spiffeId: string): StampIdentity {
  const id = parseSpiffeId(spiffeId);
  const [ns, namespace, appId, ...extra] = id.segments;
  const workload = ns === "ns" && namespace !== undefined && appId !== undefined && extra.length === 0;
  return { spiffeId: id.toString(), trustDomain: id.trustDomain, namespace: workload ? namespace : undefined, appId: workload ? appId : undefined };
}

/** The identity headers the inbound sidecar sets on a request from one verified caller. */
export interface CallerStamp {
  /** The sidecar's own SPIFFE ID it was built with (rebuilt if that ever changes). */
  readonly ownId: string;
  /** For an HTTP/2 request to the app: name → value, one field each. */
  readonly fields: Readonly<Record<string, string>>;
  /** The same as HTTP/1.1 header lines ("name: value\r\n"…). */
  readonly lines: string;
}

/**
 * What the app is told about a caller verified by mutual TLS: the XFCC, and, as Dapr's callee
 * sidecar does, `dapr-caller-app-id`, `dapr-caller-namespace` and `dapr-callee-app-id` when the
 * caller's SPIFFE ID is a workload ID (ns/<namespace>/<app-id>) in the sidecar's own trust
 * domain. A caller of another trust domain (federation) or of another shape gets the XFCC only:
 * its app id would read the same as a local app's. The callee app id is the sidecar's own
 * (from its SVID), set together with the caller's, as Dapr does; omitted if the sidecar's ID is
 * no workload ID. Values are SPIFFE path segments (a-z A-Z 0-9 . - _), safe in a field value.
 * Built once per connection: the inbound side caches it per peer.
 */
export function callerStamp(own: StampIdentity, caller: StampIdentity): CallerStamp {
  const fields: Record<string, string> = { [XFCC]: xfccValue(own.spiffeId, caller.spiffeId) };
  if (caller.trustDomain === own.trustDomain && caller.namespace !== undefined && caller.appId !== undefined) {
    fields[CALLER_APP_ID] = caller.appId;
    fields[CALLER_NAMESPACE] = caller.namespace;
    if (own.appId !== undefined) fields[CALLEE_APP_ID] = own.appId;
  }
  let lines = "";
  for (const [name, value] of Object.entries(fields)) lines += `${name}: ${value}\r\n`;
  return { ownId: own.spiffeId, fields: Object.freeze(fields), lines };
}

/**
 * Why the `dapr-app-id` values of a request do not name one app, or undefined: more than one
 * field (node:http2 joins repeated fields with ", ", and no app id holds a comma). The sidecar
 * would route by the first while the peer's app reads another.
 */
export function appIdProblem(values: readonly string[]): string | undefined {
  if (values.length > 1 || values.some((value) => value.includes(","))) return `more than one ${APP_ID_HEADER} field: the request names no single app to call`;
  return undefined;
}

/** The app a request names: from `dapr-app-id` (case-sensitive, exact) or from the Host/:authority (a host name: case-insensitive). */
export interface TargetName {
  readonly name: string;
  readonly fromHost: boolean;
}

/**
 * The app a request names: `dapr-app-id` in the case it was given (app ids are case-sensitive,
 * as SPIFFE IDs and Dapr's: self-hosted daprd finds `MyBackEnd`, not `mybackend`, so folding
 * would expect, and accept, another workload's identity), else the Host/:authority with its port
 * stripped, marked fromHost: a host name is case-insensitive (RFC 9110 §4.2.3) and clients
 * disagree on its case (Node's fetch lower-cases it, curl keeps it), so resolveRoute matches it
 * against the peer table case-insensitively.
 */
export function targetName(headers: IncomingHttpHeaders | Record<string, unknown>): TargetName | undefined {
  const explicit = headers[APP_ID_HEADER];
  const fromHeader = Array.isArray(explicit) ? explicit[0] : explicit;
  if (typeof fromHeader === "string" && fromHeader.trim() !== "") return { name: fromHeader.trim(), fromHost: false };
  const host = (headers[":authority"] ?? headers.host) as string | undefined;
  if (typeof host !== "string" || host === "") return undefined;
  return { name: host.startsWith("[") ? host : host.replace(/:\d+$/, ""), fromHost: true };
}
