import { dirname, relative, resolve, sep } from "node:path";
import { get, isFalsy, isTruthy } from "../shape.ts";
import type { Corpus, DaprConfiguration, Hit, Rule, Workload } from "../types.ts";
import { SECURE_DAPR_ANNOTATIONS, deploymentYaml } from "./example-builders.ts";
import { defineRule } from "./helpers.ts";
import { isLoopbackHost } from "../values.ts";
import { ANNOTATION, wantsInjection } from "../../inject/settings.ts";

export function isDaprEnabled(workload: Workload): boolean {
  return isTruthy(workload.annotations["dapr.io/enabled"]);
}

function annotationHit(workload: Workload, key: string, evidence: string): Hit {
  const present = key in workload.annotations;
  return { path: present ? [...workload.annotationsPath, key] : workload.annotationsPath, evidence };
}

function missingAnnotation(workload: Workload, key: string): Hit[] {
  if (!isDaprEnabled(workload) || (workload.annotations[key] ?? "").trim() !== "") return [];
  return [{ path: [...workload.annotationsPath, "dapr.io/enabled"], evidence: `${key} not set` }];
}

/**
 * Whether a Configuration file belongs with a workload file: in the workload's folder or one
 * above it, or in a folder beside it (`deploy/` and `components/` of one app). A file of the
 * same name in another app's folder elsewhere in the tree does not count.
 */
export function sameDeployment(configurationFile: string, workloadFile: string): boolean {
  const configurationDir = resolve(dirname(configurationFile));
  const workloadDir = resolve(dirname(workloadFile));
  const within = (dir: string, root: string): boolean => {
    const path = relative(root, dir);
    return path === "" || (!path.startsWith("..") && !path.startsWith(sep) && !/^[a-zA-Z]:/.test(path));
  };
  return within(workloadDir, configurationDir) || within(configurationDir, dirname(workloadDir));
}

/**
 * The Configuration a workload's `dapr.io/config` names: same name, a namespace that matches
 * or is unset, and a file that belongs with the workload's (see `sameDeployment`); among
 * several, an exact namespace match wins, then the one whose file is nearest.
 */
export function referencedConfiguration(workload: Workload, corpus: Corpus): DaprConfiguration | undefined {
  const name = (workload.annotations["dapr.io/config"] ?? "").trim();
  const candidates = configurationsNamed(corpus, name).filter((configuration) =>
    (configuration.namespace === undefined || workload.namespace === undefined || configuration.namespace === workload.namespace)
    && sameDeployment(configuration.source.file, workload.source.file));
  const score = (configuration: DaprConfiguration): number =>
    (configuration.namespace !== undefined && configuration.namespace === workload.namespace ? 10_000 : 0)
    + commonPrefixLength(configuration.source.file, workload.source.file);
  return candidates.sort((a, b) => score(b) - score(a))[0];
}

const byNameCache = new WeakMap<Corpus, Map<string, DaprConfiguration[]>>();

function configurationsNamed(corpus: Corpus, name: string): DaprConfiguration[] {
  let index = byNameCache.get(corpus);
  if (index === undefined) {
    index = new Map();
    for (const configuration of corpus.configurations) index.set(configuration.name, [...(index.get(configuration.name) ?? []), configuration]);
    byNameCache.set(corpus, index);
  }
  return index.get(name) ?? [];
}

function commonPrefixLength(a: string, b: string): number {
  let index = 0;
  while (index < a.length && index < b.length && a[index] === b[index]) index += 1;
  return index;
}

/** Whether `meshward inject` (or the webhook) adds a sidecar to this workload's pods. */
export function meshwardInjected(workload: Workload): boolean {
  try {
    return wantsInjection(workload.annotations);
  } catch {
    return false; // a value the injector refuses: it adds no sidecar (it names the error itself)
  }
}

/** The injected sidecar's mode as the injector reads it: the annotation, else the label, else strict. */
export function meshwardMode(workload: Workload): { value: string; hit: Hit } {
  const key = ANNOTATION.mode;
  const fromAnnotation = workload.annotations[key] !== undefined;
  const text = fromAnnotation ? workload.annotations[key] : workload.labels[key];
  const value = (text ?? "strict").trim().toLowerCase();
  const hit: Hit = {
    path: fromAnnotation ? [...workload.annotationsPath, key] : text === undefined ? workload.annotationsPath : [...workload.labelsPath, key],
    evidence: `${key}: ${text ?? "not set (strict)"}${fromAnnotation || text === undefined ? "" : " (label)"}`,
  };
  return { value, hit };
}

const MESHWARD_POD_WITHOUT_POLICY = { "meshward.io/inject": "true", "meshward.io/app-id": "orders", "meshward.io/app-port": "8080" };
const MESHWARD_POD = { ...MESHWARD_POD_WITHOUT_POLICY, "meshward.io/config": "orders-policy" };

const secure = (extra: Record<string, string> = {}, podSpec = ""): string => deploymentYaml({ ...SECURE_DAPR_ANNOTATIONS, ...extra }, podSpec);
const without = (key: string): Record<string, string> => {
  const copy: Record<string, string> = { ...SECURE_DAPR_ANNOTATIONS };
  delete copy[key];
  return copy;
};

const APP_CONFIG = "---\napiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: appconfig\n  namespace: default\nspec:\n  mtls:\n    enabled: ENABLED\n";

/**
 * The addresses of `dapr.io/sidecar-listen-addresses` that are not loopback: every comma-separated
 * part that is not 127.0.0.0/8, `::1`/`[::1]` or `localhost`. Anything else opens the Dapr API to
 * other pods: all interfaces (`0.0.0.0`, `::`, `[::]`, `*`), the pod's IP (`$(POD_IP)`, which
 * Kubernetes expands in the daprd container's arguments, or `${POD_IP}`, another env reference
 * or a literal address), a host name. Shared by MW-K8S-001 and drift's `sidecar listen` row, so
 * the scan and drift agree. Empty parts are skipped.
 */
export function sidecarListenBeyondLoopback(value: string): string[] {
  return value.split(",").map((part) => part.trim()).filter((part) => part !== "" && !isLoopbackHost(part));
}

export const kubernetesRules: Rule[] = [
  defineRule({
    id: "MW-K8S-001",
    family: "kubernetes",
    severity: "high",
    title: "Dapr sidecar API listens beyond loopback",
    why: "`dapr.io/sidecar-listen-addresses` naming any address that is not loopback (127.0.0.0/8, `::1`, `localhost`) exposes the Dapr HTTP/gRPC API (state, secrets, service invocation as this app) to every pod that can reach this one, not just the app container: all interfaces (`0.0.0.0`, `[::]`), and also the pod's own IP (`$(POD_IP)`, an env reference, or a literal address), which is what other pods dial.",
    fix: "Remove the annotation (the default is loopback) or set it to `127.0.0.1`.",
    example: { file: "deployment.yaml", bad: secure({ "dapr.io/sidecar-listen-addresses": "0.0.0.0" }), good: secure({ "dapr.io/sidecar-listen-addresses": "127.0.0.1" }) },
    appliesTo: ["workload"],
    check(workload) {
      const value = workload.annotations["dapr.io/sidecar-listen-addresses"];
      if (!isDaprEnabled(workload) || value === undefined) return [];
      return sidecarListenBeyondLoopback(value).length === 0 ? [] : [annotationHit(workload, "dapr.io/sidecar-listen-addresses", `dapr.io/sidecar-listen-addresses: ${value}`)];
    },
  }),
  defineRule({
    id: "MW-K8S-002",
    family: "kubernetes",
    severity: "medium",
    title: "Dapr sidecar API without an API token",
    why: "Without `dapr.io/api-token-secret` any process that reaches the sidecar's API can use it as the app (read secrets, publish, invoke other services).",
    fix: "Create a Secret with a random token and set `dapr.io/api-token-secret` to its name; the app sends it as `dapr-api-token`.",
    example: { file: "deployment.yaml", bad: deploymentYaml(without("dapr.io/api-token-secret")), good: secure() },
    appliesTo: ["workload"],
    check: (workload) => missingAnnotation(workload, "dapr.io/api-token-secret"),
  }),
  defineRule({
    id: "MW-K8S-003",
    family: "kubernetes",
    severity: "low",
    optIn: true,
    title: "Dapr calls the app over plaintext",
    why: "`dapr.io/app-protocol` `http`, `grpc` or `h2c` (or unset, which is http) means sidecar-to-app traffic is unencrypted; it stays inside the pod, but any container or debug tool in the pod network namespace can read it.",
    fix: "Serve TLS in the app and set `dapr.io/app-protocol: https` (or `grpcs`).",
    example: { file: "deployment.yaml", bad: secure({ "dapr.io/app-protocol": "http" }), good: secure({ "dapr.io/app-protocol": "https" }) },
    appliesTo: ["workload"],
    check(workload) {
      if (!isDaprEnabled(workload) || (workload.annotations["dapr.io/app-port"] ?? "") === "") return [];
      const protocol = (workload.annotations["dapr.io/app-protocol"] ?? "").trim().toLowerCase();
      if (protocol === "https" || protocol === "grpcs") return [];
      return [annotationHit(workload, "dapr.io/app-protocol", protocol === "" ? "dapr.io/app-protocol not set (http)" : `dapr.io/app-protocol: ${protocol}`)];
    },
  }),
  defineRule({
    id: "MW-K8S-004",
    family: "kubernetes",
    severity: "medium",
    title: "dapr.io/config names a Configuration that is not in the scanned files",
    why: "If the named Configuration does not exist the sidecar fails to start or runs with defaults, and its mTLS and access-control settings cannot be reviewed with the workload. The Configuration is looked for with the workload: in its folder or one above it, or in a folder beside it, and in its namespace.",
    fix: "Add the Configuration to the workload's folder (or chart), or fix the name in `dapr.io/config`.",
    example: { file: "deployment.yaml", bad: secure({ "dapr.io/config": "appconfig" }), good: secure({ "dapr.io/config": "appconfig" }) + APP_CONFIG.replace("ENABLED", "true") },
    appliesTo: ["workload"],
    check(workload, corpus) {
      const name = (workload.annotations["dapr.io/config"] ?? "").trim();
      if (!isDaprEnabled(workload) || name === "" || referencedConfiguration(workload, corpus) !== undefined) return [];
      const elsewhere = configurationsNamed(corpus, name)[0];
      const hit = annotationHit(workload, "dapr.io/config", `dapr.io/config: ${name} (not found)`);
      if (elsewhere === undefined) return [hit];
      return [{ ...hit, detail: `A Configuration named ${name} exists in ${elsewhere.source.file}, outside this workload's folder or namespace.` }];
    },
  }),
  defineRule({
    id: "MW-K8S-005",
    family: "kubernetes",
    severity: "high",
    title: "Workload uses a Configuration with mTLS disabled",
    why: "The workload's sidecar inherits `mtls.enabled: false` from the Configuration it names: its traffic to other sidecars is plaintext and unauthenticated.",
    fix: "Enable mTLS in the referenced Configuration or point `dapr.io/config` at one that has it.",
    example: {
      file: "deployment.yaml",
      bad: secure({ "dapr.io/config": "appconfig" }) + APP_CONFIG.replace("ENABLED", "false"),
      good: secure({ "dapr.io/config": "appconfig" }) + APP_CONFIG.replace("ENABLED", "true"),
    },
    appliesTo: ["workload"],
    check(workload, corpus) {
      if (!isDaprEnabled(workload)) return [];
      const configuration = referencedConfiguration(workload, corpus);
      if (configuration === undefined || !isFalsy(get(configuration.spec, "mtls", "enabled"))) return [];
      return [annotationHit(workload, "dapr.io/config", `dapr.io/config: ${configuration.name} (mtls.enabled: false in ${configuration.source.file})`)];
    },
  }),
  defineRule({
    id: "MW-K8S-006",
    family: "kubernetes",
    severity: "low",
    optIn: true,
    title: "App accepts calls without checking they come from Dapr",
    why: "Without `dapr.io/app-token-secret` the app cannot tell the sidecar's calls from anyone else's on its port.",
    fix: "Set `dapr.io/app-token-secret` and have the app check the `dapr-api-token` header.",
    example: { file: "deployment.yaml", bad: deploymentYaml(without("dapr.io/app-token-secret")), good: secure() },
    appliesTo: ["workload"],
    check(workload) {
      if ((workload.annotations["dapr.io/app-port"] ?? "") === "") return [];
      return missingAnnotation(workload, "dapr.io/app-token-secret");
    },
  }),
  defineRule({
    id: "MW-K8S-007",
    family: "kubernetes",
    severity: "medium",
    title: "Dapr-enabled workload on the host network",
    why: "With `hostNetwork: true` the sidecar's ports (API, metrics, internal gRPC) are bound on the node's interfaces and the pod sees all node traffic.",
    fix: "Remove `hostNetwork: true`.",
    example: { file: "deployment.yaml", bad: secure({}, "      hostNetwork: true\n"), good: secure({}, "      hostNetwork: false\n") },
    appliesTo: ["workload"],
    check(workload) {
      if (!isDaprEnabled(workload) || !isTruthy(workload.podSpec["hostNetwork"])) return [];
      return [{ path: [...workload.podSpecPath, "hostNetwork"], evidence: "hostNetwork: true" }];
    },
  }),
  defineRule({
    id: "MW-K8S-008",
    family: "kubernetes",
    severity: "medium",
    title: "Dapr sidecar profiling endpoint enabled",
    why: "`dapr.io/enable-profiling` opens a pprof endpoint without authentication that leaks memory contents and can be used to exhaust the sidecar.",
    fix: "Remove `dapr.io/enable-profiling` outside a debugging session.",
    example: { file: "deployment.yaml", bad: secure({ "dapr.io/enable-profiling": "true" }), good: secure({ "dapr.io/enable-profiling": "false" }) },
    appliesTo: ["workload"],
    check(workload) {
      if (!isDaprEnabled(workload) || !isTruthy(workload.annotations["dapr.io/enable-profiling"])) return [];
      return [annotationHit(workload, "dapr.io/enable-profiling", "dapr.io/enable-profiling: true")];
    },
  }),
  defineRule({
    id: "MW-K8S-009",
    family: "kubernetes",
    severity: "high",
    title: "Injected meshward sidecar in PERMISSIVE mode",
    why: "`meshward.io/mode: permissive` (annotation or label) makes the injected sidecar's inbound port also accept plaintext connections that carry no identity: any pod that reaches the port can call the app. It is meant for a migration window only.",
    fix: "Remove `meshward.io/mode` (strict is the default) once every caller has a sidecar; watch `meshward_plaintext_connections_total` stay at zero first.",
    example: {
      file: "deployment.yaml",
      bad: deploymentYaml({ ...MESHWARD_POD, "meshward.io/mode": "permissive" }),
      good: deploymentYaml({ ...MESHWARD_POD, "meshward.io/mode": "strict" }),
    },
    appliesTo: ["workload"],
    check(workload) {
      if (!meshwardInjected(workload)) return [];
      const mode = meshwardMode(workload);
      return mode.value === "permissive" ? [mode.hit] : [];
    },
  }),
  defineRule({
    id: "MW-K8S-010",
    family: "kubernetes",
    severity: "medium",
    title: "Injected meshward sidecar's outbound answers any Host (DNS rebinding guard off)",
    why: "`meshward.io/outbound-allowed-hosts` with `*` turns off the Host check on the injected sidecar's outbound port. A web page in a browser that reaches the pod (a debugging port-forward, a node-local browser) can rebind its DNS name to 127.0.0.1 and call any app in the mesh as this workload.",
    fix: "List only the names your callers really send (a gateway's own host names); loopback, IP literals and the routed app id need no entry.",
    example: {
      file: "deployment.yaml",
      bad: deploymentYaml({ ...MESHWARD_POD, "meshward.io/outbound-allowed-hosts": "api.shop.example, *" }),
      good: deploymentYaml({ ...MESHWARD_POD, "meshward.io/outbound-allowed-hosts": "api.shop.example" }),
    },
    appliesTo: ["workload"],
    check(workload) {
      const key = ANNOTATION.outboundAllowedHosts;
      const value = workload.annotations[key];
      if (value === undefined || !meshwardInjected(workload)) return [];
      if (!value.split(",").some((entry) => entry.trim() === "*")) return [];
      return [annotationHit(workload, key, `${key}: ${value}`)];
    },
  }),
  defineRule({
    id: "MW-K8S-011",
    family: "kubernetes",
    severity: "medium",
    title: "Injected meshward sidecar has no access policy",
    why: "Without `meshward.io/config` (or `dapr.io/config`) the injected sidecar loads no policy, so every workload with a certificate of the trust domain may call this app: one compromised service can reach all others.",
    fix: "Create a ConfigMap whose `config.yaml` holds a Configuration with `accessControl` (default deny, one entry per caller) and name it in `meshward.io/config`.",
    example: { file: "deployment.yaml", bad: deploymentYaml(MESHWARD_POD_WITHOUT_POLICY), good: deploymentYaml(MESHWARD_POD) },
    appliesTo: ["workload"],
    check(workload) {
      // Only an explicit meshward.io/inject: Dapr's annotation alone may be meant for daprd, whose
      // Configuration rules (MW-K8S-004/005) apply instead.
      if ((workload.annotations[ANNOTATION.inject] ?? "").trim().toLowerCase() !== "true") return [];
      const named = [ANNOTATION.config, ANNOTATION.daprConfig].some((key) => (workload.annotations[key] ?? "").trim() !== "");
      return named ? [] : [annotationHit(workload, ANNOTATION.inject, `${ANNOTATION.inject}: true without ${ANNOTATION.config}`)];
    },
  }),
  defineRule({
    id: "MW-K8S-012",
    family: "kubernetes",
    severity: "high",
    title: "Injected meshward sidecar's token and key within reach of the pod's other containers",
    why: "With `shareProcessNamespace: true` or `hostPID: true` the app's containers see the sidecar's processes and read its service-account token through `/proc/<pid>/root` (and its private key through `/proc/<pid>/mem`) when they run as its user, which a root container gets by `setuid` with the default capabilities; a privileged container reaches the token on the node's disk. Whoever reads the token gets the workload's certificate. The injector refuses such pods (`E_INJECT_INVALID`); this finds manifests changed after injection.",
    fix: "Remove `shareProcessNamespace` and `hostPID` (debug with `kubectl debug --target=<app>`), and `privileged` (add only the capabilities the container needs).",
    example: {
      file: "deployment.yaml",
      bad: deploymentYaml(MESHWARD_POD, "      shareProcessNamespace: true\n"),
      good: deploymentYaml(MESHWARD_POD, "      shareProcessNamespace: false\n"),
    },
    appliesTo: ["workload"],
    check(workload) {
      if (!meshwardInjected(workload)) return [];
      // As the injector reads them (src/inject/pod.ts refuseSharedProcesses): anything but false or absent is on.
      const on = (value: unknown) => value !== undefined && value !== null && value !== false;
      const hits: Hit[] = [];
      for (const field of ["shareProcessNamespace", "hostPID"]) {
        const value = workload.podSpec[field];
        if (on(value)) hits.push({ path: [...workload.podSpecPath, field], evidence: `${field}: ${String(value)}` });
      }
      for (const list of ["initContainers", "containers"]) {
        const containers = workload.podSpec[list];
        if (!Array.isArray(containers)) continue;
        containers.forEach((container: unknown, index) => {
          const privileged = get(container, "securityContext", "privileged");
          if (!on(privileged)) return;
          const name = String(get(container, "name") ?? index);
          hits.push({ path: [...workload.podSpecPath, list, index, "securityContext", "privileged"], evidence: `${list === "containers" ? "container" : "init container"} ${name}: privileged: ${String(privileged)}` });
        });
      }
      return hits;
    },
  }),
  defineRule({
    id: "MW-K8S-013",
    family: "kubernetes",
    severity: "medium",
    title: "Injected meshward sidecar forwards requests app servers read differently",
    why: "`meshward.io/headers-with-underscores: allow` and `meshward.io/escaped-slashes: keep` make the injected sidecar forward what servers read in more than one way: field names holding `_`, which CGI and WSGI servers read as `-`, and `%2F`/`%5C` in paths, which an app server may decode after the policy judged the path as one segment (MW-ACCESS-013 for a sidecar config file).",
    fix: "Remove both annotations (the sidecar's default is `reject`); `drop` (underscores) or `unescape` (escaped slashes) serve clients you cannot change.",
    example: {
      file: "deployment.yaml",
      bad: deploymentYaml({ ...MESHWARD_POD, "meshward.io/headers-with-underscores": "allow" }),
      good: deploymentYaml({ ...MESHWARD_POD, "meshward.io/headers-with-underscores": "drop" }),
    },
    appliesTo: ["workload"],
    check(workload) {
      if (!meshwardInjected(workload)) return [];
      const hits: Hit[] = [];
      for (const [key, loose] of [[ANNOTATION.headersWithUnderscores, "allow"], [ANNOTATION.escapedSlashes, "keep"]] as const) {
        const value = workload.annotations[key];
        if (value !== undefined && value.trim() === loose) hits.push(annotationHit(workload, key, `${key}: ${loose}`));
      }
      return hits;
    },
  }),
];
