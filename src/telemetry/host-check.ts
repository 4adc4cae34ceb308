import { isIP } from "node:net";

/**
 * DNS rebinding guard for the local HTTP surfaces (ops port: /metrics, /healthz, /readyz, the
 * status page and its feed). A web page the operator visits can point its own DNS name at
 * 127.0.0.1 and then read a loopback-bound port from the browser as "same origin"; the one
 * thing it cannot forge is the Host header, which still carries the attacker's name. So a
 * server bound to loopback answers only requests addressed to a loopback name.
 */

/** True for a loopback address or name: 127.0.0.0/8, ::1, ::ffff:127.x.y.z, localhost, *.localhost. */
export function isLoopbackAddress(host: string): boolean {
  let bare = host.trim().toLowerCase();
  if (bare.startsWith("[") && bare.endsWith("]")) bare = bare.slice(1, -1);
  if (bare.endsWith(".") && !bare.endsWith("..")) bare = bare.slice(0, -1);
  if (bare === "localhost" || bare.endsWith(".localhost")) return /^[a-z0-9.-]+$/.test(bare) && !bare.includes("..");
  const kind = isIP(bare);
  if (kind === 4) return bare.startsWith("127.");
  if (kind === 6) {
    if (bare === "::1" || bare === "0:0:0:0:0:0:0:1") return true;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(bare);
    return mapped !== null && mapped[1]!.startsWith("127.");
  }
  return false;
}

/**
 * The host part of a Host header ("name", "name:port", "1.2.3.4:80", "[::1]:80"), lower-cased,
 * IPv6 without brackets; undefined when the header is malformed (bad port, stray characters).
 */
export function hostOfHostHeader(header: string): string | undefined {
  const text = header.trim().toLowerCase();
  const match = /^(?:\[([0-9a-f:.]+)\]|([a-z0-9._-]+))(?::(\d{1,5}))?$/.exec(text);
  if (match === null) return undefined;
  if (match[3] !== undefined && Number(match[3]) > 65535) return undefined;
  if (match[1] !== undefined) return isIP(match[1]) === 6 ? match[1] : undefined;
  return match[2];
}

export type HostDecision = { readonly ok: true } | { readonly ok: false; readonly reason: "host-not-loopback" | "host-malformed" };

/**
 * Whether a request with this Host header may be served by a server bound to `boundHosts`
 * (the configured host and the address it actually bound). When no bound host is loopback
 * (e.g. 0.0.0.0 in a pod, where the kubelet probes with Host: <podIP>:<port>) every request
 * passes, as before. When bound to loopback: a loopback name or literal (localhost,
 * *.localhost, 127.0.0.0/8, [::1]) with or without a port, or one of the bound hosts exactly.
 * A request without a Host header (HTTP/1.0 probes; no browser sends one) passes: it cannot
 * come from a rebound page.
 */
export function checkHostHeader(hostHeader: string | undefined, boundHosts: readonly string[]): HostDecision {
  if (!boundHosts.some(isLoopbackAddress)) return { ok: true };
  if (hostHeader === undefined) return { ok: true };
  const host = hostOfHostHeader(hostHeader);
  if (host === undefined) return { ok: false, reason: "host-malformed" };
  if (isLoopbackAddress(host)) return { ok: true };
  const bound = boundHosts.map((entry) => entry.trim().toLowerCase().replace(/^\[|\]$/g, ""));
  return bound.includes(host) ? { ok: true } : { ok: false, reason: "host-not-loopback" };
}
