import { allowedHostProblem } from "../config/fields.ts";
import { MeshwardError } from "../errors.ts";

/** What `meshward inject` and the injector put into every pod: the same for a whole cluster. */
export interface InjectOptions {
  /** The sidecar image, e.g. meshward:0.1.0. */
  readonly image: string;
  /** The CA's address as the sidecar dials it (its Service's DNS name and port). */
  readonly caAddress: string;
  /** The audience the CA requires in projected service-account tokens (its jwks.audience). */
  readonly audience: string;
  /** The trust anchors (PEM) put in MESHWARD_TRUST_ANCHORS, as Dapr's injector does with DAPR_TRUST_ANCHORS. */
  readonly trustAnchors: string;
  /** Lifetime asked for the projected token (Kubernetes' minimum is 600). */
  readonly tokenExpirationSeconds?: number;
}

/** Per-workload settings read from the pod template's annotations. */
export interface PodSettings {
  readonly appId: string;
  readonly appPort: number;
  readonly protocol: "http" | "tcp";
  /** strict (mTLS only) or permissive (plaintext accepted too, for migrations). */
  readonly mode: "strict" | "permissive";
  /** Name of the ConfigMap holding the access policy (a Dapr Configuration YAML under key config.yaml). */
  readonly config: string | undefined;
  /** Host names the outbound port answers besides loopback and the routed app id (a gateway's). */
  readonly outboundAllowedHosts: readonly string[];
  /** The sidecar's escapedSlashes (undefined: its default, reject). */
  readonly escapedSlashes: "reject" | "unescape" | "keep" | undefined;
  /** The sidecar's headersWithUnderscores (undefined: its default, reject). */
  readonly headersWithUnderscores: "reject" | "drop" | "allow" | undefined;
}

export const ANNOTATION = {
  inject: "meshward.io/inject",
  appId: "meshward.io/app-id",
  appPort: "meshward.io/app-port",
  protocol: "meshward.io/protocol",
  config: "meshward.io/config",
  mode: "meshward.io/mode",
  outboundAllowedHosts: "meshward.io/outbound-allowed-hosts",
  escapedSlashes: "meshward.io/escaped-slashes",
  headersWithUnderscores: "meshward.io/headers-with-underscores",
  injected: "meshward.io/injected",
  daprEnabled: "dapr.io/enabled",
  daprAppId: "dapr.io/app-id",
  daprAppPort: "dapr.io/app-port",
  daprConfig: "dapr.io/config",
} as const;

/** DNS-1123 label: what a Kubernetes ServiceAccount, Service and ConfigMap name may be. */
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;

/**
 * Whether a pod template asks for a sidecar: `meshward.io/inject: "true"`, or Dapr's
 * `dapr.io/enabled` (so Dapr users move without editing manifests), read as Dapr reads it. An
 * explicit `meshward.io/inject: "false"` wins over Dapr's annotation.
 */
export function wantsInjection(annotations: Readonly<Record<string, unknown>>): boolean {
  const own = annotations[ANNOTATION.inject];
  if (own !== undefined) return isTrue(own, ANNOTATION.inject);
  const dapr = annotations[ANNOTATION.daprEnabled];
  return dapr !== undefined && daprTruthy(dapr);
}

/**
 * Dapr's rule for its boolean annotations (dapr/dapr pkg/injector, utils.IsTruthy): "y", "yes",
 * "true", "t", "on" or "1", in any case, spaces trimmed, is true; anything else is false.
 */
function daprTruthy(value: unknown): boolean {
  return DAPR_TRUE.has(String(value).trim().toLowerCase());
}
const DAPR_TRUE: ReadonlySet<string> = new Set(["y", "yes", "true", "t", "on", "1"]);

function isTrue(value: unknown, key: string): boolean {
  const text = String(value).trim().toLowerCase();
  if (text === "true") return true;
  if (text === "false") return false;
  throw new MeshwardError("E_INJECT_ANNOTATION", `${key} must be "true" or "false", got ${JSON.stringify(value)}`);
}

/**
 * The settings of one pod template, meshward.io/* first, then dapr.io/*. `where` names the
 * document and object for error messages. `fallbackAppId` is the service account or the
 * workload's name, used when neither app-id annotation is set (Dapr's default too).
 */
export function readSettings(
  annotations: Readonly<Record<string, unknown>>,
  fallbackAppId: string | undefined,
  where: string,
  labels: Readonly<Record<string, unknown>> = {},
): PodSettings {
  const pick = (own: string, dapr?: string): string | undefined => {
    const value = annotations[own] ?? (dapr === undefined ? undefined : annotations[dapr]);
    return value === undefined || value === null ? undefined : String(value).trim();
  };
  const appId = pick(ANNOTATION.appId, ANNOTATION.daprAppId) ?? fallbackAppId;
  if (appId === undefined || appId === "") {
    throw new MeshwardError("E_INJECT_ANNOTATION", `${where}: no app id: set ${ANNOTATION.appId} (or ${ANNOTATION.daprAppId})`);
  }
  if (!DNS_LABEL.test(appId)) {
    throw new MeshwardError(
      "E_INJECT_ANNOTATION",
      `${where}: app id ${JSON.stringify(appId)} is not a DNS label (lowercase letters, digits, '-', at most 63): it names the pod's ServiceAccount and its Service`,
    );
  }
  const portText = pick(ANNOTATION.appPort, ANNOTATION.daprAppPort);
  if (portText === undefined || portText === "") {
    throw new MeshwardError("E_INJECT_ANNOTATION", `${where}: set ${ANNOTATION.appPort} (or ${ANNOTATION.daprAppPort}) to the port the app listens on`);
  }
  const appPort = /^\d{1,5}$/.test(portText) ? Number(portText) : Number.NaN;
  if (!(appPort >= 1 && appPort <= 65535)) {
    throw new MeshwardError("E_INJECT_ANNOTATION", `${where}: ${ANNOTATION.appPort} must be a port number 1-65535, got ${JSON.stringify(portText)}`);
  }
  if (RESERVED_PORTS.includes(appPort)) {
    throw new MeshwardError("E_INJECT_ANNOTATION", `${where}: app port ${appPort} is one of the sidecar's own ports (${RESERVED_PORTS.join(", ")})`);
  }
  const protocol = pick(ANNOTATION.protocol) ?? "http";
  if (protocol !== "http" && protocol !== "tcp") {
    throw new MeshwardError("E_INJECT_ANNOTATION", `${where}: ${ANNOTATION.protocol} must be http or tcp, got ${JSON.stringify(protocol)}`);
  }
  const config = pick(ANNOTATION.config, ANNOTATION.daprConfig);
  if (config !== undefined && config !== "" && !DNS_SUBDOMAIN.test(config)) {
    throw new MeshwardError("E_INJECT_ANNOTATION", `${where}: ${ANNOTATION.config} must name a ConfigMap, got ${JSON.stringify(config)}`);
  }
  // The label is what deploy/prometheus's relabelling reads; an annotation works too.
  const mode = String(annotations[ANNOTATION.mode] ?? labels[ANNOTATION.mode] ?? "strict").trim();
  if (mode !== "strict" && mode !== "permissive") {
    throw new MeshwardError("E_INJECT_ANNOTATION", `${where}: ${ANNOTATION.mode} must be strict or permissive, got ${JSON.stringify(mode)}`);
  }
  const hostsText = String(annotations[ANNOTATION.outboundAllowedHosts] ?? "").trim();
  const outboundAllowedHosts = hostsText === "" ? [] : hostsText.split(",").map((entry) => entry.trim()).filter((entry) => entry !== "");
  for (const entry of outboundAllowedHosts) {
    const problem = allowedHostProblem(entry);
    if (problem !== undefined) throw new MeshwardError("E_INJECT_ANNOTATION", `${where}: ${ANNOTATION.outboundAllowedHosts}: ${problem}`);
  }
  const escapedSlashes = oneOf(pick(ANNOTATION.escapedSlashes), ANNOTATION.escapedSlashes, ["reject", "unescape", "keep"] as const, where);
  const headersWithUnderscores = oneOf(pick(ANNOTATION.headersWithUnderscores), ANNOTATION.headersWithUnderscores, ["reject", "drop", "allow"] as const, where);
  return { appId, appPort, protocol, mode, config: config === "" ? undefined : config, outboundAllowedHosts, escapedSlashes, headersWithUnderscores };
}

/** An annotation that names one of `choices` (undefined when absent or empty: the sidecar's default). */
function oneOf<T extends string>(value: string | undefined, key: string, choices: readonly T[], where: string): T | undefined {
  if (value === undefined || value === "") return undefined;
  if ((choices as readonly string[]).includes(value)) return value as T;
  throw new MeshwardError("E_INJECT_ANNOTATION", `${where}: ${key} must be ${choices.slice(0, -1).join(", ")} or ${choices.at(-1)}, got ${JSON.stringify(value)}`);
}

/** The sidecar's inbound mTLS, outbound and status ports. */
export const SIDECAR_PORTS = { inbound: 3501, outbound: 3500, status: 9090 } as const;
const RESERVED_PORTS: readonly number[] = [SIDECAR_PORTS.inbound, SIDECAR_PORTS.outbound, SIDECAR_PORTS.status];
