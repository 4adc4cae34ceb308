import { isIP } from "node:net";
import { hostOfHostHeader, isLoopbackAddress } from "../telemetry/host-check.ts";

/**
 * DNS rebinding guard for the outbound port. The outbound port is plain HTTP on loopback and
 * speaks for the workload: whatever reaches it is sent to other apps with this workload's
 * certificate. A web page in a browser on the same host can point its own DNS name at
 * 127.0.0.1 and then send "same-origin" requests there, custom `dapr-app-id` header included.
 * What it cannot forge is the Host header, which still carries the attacker's name. So the
 * outbound answers only requests addressed to:
 *   - no Host at all (HTTP/1.0; no browser sends one),
 *   - an IP literal (a rebinding page's origin is a DNS name, never an address),
 *   - localhost or *.localhost (browsers resolve these to loopback themselves),
 *   - the app id the request is routed to (Host: orders, or Host routing itself) when it is one
 *     label: a namespaced id ("orders.shop") is also a name someone can register under a public
 *     suffix (.shop is one), so it needs dapr-app-id with one of the Hosts above, or an allow entry,
 *   - a name the operator allowed (outboundAllowedHosts: exact, `*.suffix`, or `*` for any).
 */

/** A validated allow list: exact names and `*.suffix` wildcards, or every name. */
export interface OutboundHostRule {
  readonly any: boolean;
  readonly exact: ReadonlySet<string>;
  /** Suffixes with their leading dot (".example.com" from "*.example.com"). */
  readonly suffixes: readonly string[];
  /**
   * The last (Host, app id) accepted: an app sends the same Host on every request, and the
   * decision is pure, so the parse (~160 ns) runs once per change instead of per request.
   */
  lastAccepted?: { readonly host: string; readonly app: string };
}

export function compileOutboundHosts(entries: readonly string[]): OutboundHostRule {
  const exact = new Set<string>();
  const suffixes: string[] = [];
  let any = false;
  for (const raw of entries) {
    const entry = raw.trim().toLowerCase().replace(/\.$/, "");
    if (entry === "*") any = true;
    else if (entry.startsWith("*.")) suffixes.push(entry.slice(1));
    else exact.add(entry);
  }
  return { any, exact, suffixes };
}

export type OutboundHostDecision = { readonly ok: true } | { readonly ok: false; readonly host: string };

/**
 * Whether the outbound may act on a request whose Host (HTTP/1 Host or absolute-form
 * authority; HTTP/2 :authority) is `hostHeader` and which is routed to `routedAppId`.
 */
export function checkOutboundHost(hostHeader: string | undefined, routedAppId: string, rule: OutboundHostRule): OutboundHostDecision {
  if (rule.any || hostHeader === undefined || hostHeader === "") return OK;
  const last = rule.lastAccepted;
  if (last !== undefined && last.host === hostHeader && last.app === routedAppId) return OK;
  const decision = decide(hostHeader, routedAppId, rule);
  if (decision.ok) rule.lastAccepted = { host: hostHeader, app: routedAppId };
  return decision;
}

const OK: OutboundHostDecision = { ok: true };

function decide(hostHeader: string, routedAppId: string, rule: OutboundHostRule): OutboundHostDecision {
  const parsed = hostOfHostHeader(hostHeader);
  if (parsed === undefined) return { ok: false, host: hostHeader };
  const host = parsed.endsWith(".") ? parsed.slice(0, -1) : parsed;
  if (isIP(host) !== 0 || isLoopbackAddress(host)) return OK;
  // Host names are case-insensitive (hostOfHostHeader folds them); app ids are not.
  if ((host === routedAppId.toLowerCase() && !routedAppId.includes(".")) || rule.exact.has(host)) return OK;
  if (rule.suffixes.some((suffix) => host.endsWith(suffix) && host.length > suffix.length)) return OK;
  return { ok: false, host };
}
