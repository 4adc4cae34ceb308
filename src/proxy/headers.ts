import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";

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
 * Request/response headers with hop-by-hop fields (RFC 9110 §7.6.1, and any named in
 * Connection), HTTP/2 pseudo-headers and `drop` removed. `te: trailers` is kept: gRPC needs it.
 */
export function forwardableHeaders(headers: IncomingHttpHeaders | Record<string, unknown>, drop: readonly string[] = []): OutgoingHttpHeaders {
  const connectionListed = new Set(
    String(headers.connection ?? "")
      .split(",")
      .map((s) => s.trim().toLowerCase())
      .filter((s) => s.length > 0),
  );
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(":")) continue;
    const lower = name.toLowerCase();
    if (lower === "te") {
      if (String(value).toLowerCase().includes("trailers")) out.te = "trailers";
      continue;
    }
    if (HOP_BY_HOP.has(lower) || connectionListed.has(lower) || drop.includes(lower)) continue;
    out[lower] = value as OutgoingHttpHeaders[string];
  }
  return out;
}

/** Envoy's x-forwarded-client-cert form: By=<our SPIFFE ID>;URI=<verified caller SPIFFE ID>. */
export function xfccValue(ownId: string, callerId: string): string {
  return `By=${ownId};URI=${callerId}`;
}

/** An app id from `dapr-app-id` or the Host/:authority (port stripped); lowercase. */
export function targetAppId(headers: IncomingHttpHeaders | Record<string, unknown>): string | undefined {
  const explicit = headers[APP_ID_HEADER];
  const fromHeader = Array.isArray(explicit) ? explicit[0] : explicit;
  if (typeof fromHeader === "string" && fromHeader.trim() !== "") return fromHeader.trim().toLowerCase();
  const host = (headers[":authority"] ?? headers.host) as string | undefined;
  if (typeof host !== "string" || host === "") return undefined;
  const name = host.startsWith("[") ? host : host.replace(/:\d+$/, "");
  return name.toLowerCase();
}

export function isGrpc(contentType: unknown): boolean {
  return typeof contentType === "string" && contentType.toLowerCase().startsWith("application/grpc");
}
