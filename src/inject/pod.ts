import { MeshwardError } from "../errors.ts";
import { INJECTED_TOKEN_DIR } from "../util/files.ts";
import { ANNOTATION, SIDECAR_PORTS, readSettings, wantsInjection, type InjectOptions, type PodSettings } from "./settings.ts";

/** A pod template or a Pod, as plain JSON (only the fields injection reads are typed). */
export interface PodLike {
  metadata?: { name?: string; namespace?: string; annotations?: Record<string, unknown>; [key: string]: unknown };
  spec?: PodSpecLike;
  [key: string]: unknown;
}

export interface PodSpecLike {
  serviceAccountName?: string;
  serviceAccount?: string;
  hostNetwork?: boolean;
  hostPID?: unknown;
  shareProcessNamespace?: unknown;
  initContainers?: Record<string, unknown>[];
  containers?: Record<string, unknown>[];
  volumes?: Record<string, unknown>[];
  [key: string]: unknown;
}

/** Names of everything injection adds, so that injecting again first takes them out. */
export const SIDECAR_CONTAINER = "meshward";
export const TOKEN_VOLUME = "meshward-token";
export const POLICY_VOLUME = "meshward-policy";
/**
 * Volumes no container but the sidecar may mount: the projected token is the workload's credential
 * (whoever reads it gets this workload's certificate from the CA). Refused in containers and init
 * containers at injection (refuseTokenMounts) and in ephemeral containers added later through
 * pods/ephemeralcontainers (ephemeralSidecarAccess). The policy volume is not secret (the app may read it).
 */
export const SIDECAR_ONLY_VOLUMES: readonly string[] = [TOKEN_VOLUME];
/** Mounted into the sidecar container only (refuseTokenMounts); the sidecar's token check knows this path (src/util/files.ts). */
export const TOKEN_DIR = INJECTED_TOKEN_DIR;
export const POLICY_DIR = "/etc/meshward/policy";
/** The key a policy ConfigMap holds its Dapr `kind: Configuration` YAML under. */
export const POLICY_KEY = "config.yaml";

export interface InjectedPod {
  readonly pod: PodLike;
  readonly settings: PodSettings;
  /** Things an operator must know (a ServiceAccount to create, no access policy). */
  readonly notes: readonly string[];
}

/**
 * Injects the meshward sidecar into one pod template (or Pod) that asks for it; returns
 * undefined when it does not. Pure: the input is not modified. Injecting an injected pod
 * gives the same pod: what an earlier injection added is removed first, then added again
 * from the current annotations.
 *
 * Identity: the CA maps a projected service-account token to ns/<namespace>/<service
 * account>, so the sidecar's app id is the pod's ServiceAccount. A pod on the namespace's
 * `default` account (shared by every pod there, so never a workload identity) or on none is
 * moved to the account named like its app id; an account that differs from the app id is refused.
 */
export function injectPod(input: PodLike, options: InjectOptions, where: string, fallbackName?: string): InjectedPod | undefined {
  const annotations = input.metadata?.annotations ?? {};
  if (!wantsInjection(annotations)) return undefined;
  const spec = input.spec;
  if (spec === undefined || !Array.isArray(spec.containers)) throw new MeshwardError("E_INJECT_INVALID", `${where}: the pod template has no spec.containers`);
  if (spec.hostNetwork === true) {
    throw new MeshwardError("E_INJECT_INVALID", `${where}: hostNetwork pods share the node's ports and cannot take a sidecar; remove hostNetwork or ${ANNOTATION.inject}`);
  }
  const account = spec.serviceAccountName ?? spec.serviceAccount;
  const ownAccount = account === undefined || account === "" || account === "default" ? undefined : account;
  const settings = readSettings(annotations, ownAccount ?? fallbackName, where, (input.metadata?.labels ?? {}) as Record<string, unknown>);
  if (ownAccount !== undefined && ownAccount !== settings.appId) {
    throw new MeshwardError(
      "E_INJECT_APP_ID_MISMATCH",
      `${where}: app id ${JSON.stringify(settings.appId)} differs from serviceAccountName ${JSON.stringify(ownAccount)}; the CA proves identities by service account, so make them equal`,
    );
  }
  const notes: string[] = [];
  if (ownAccount === undefined) notes.push(`${where}: runs as ServiceAccount ${settings.appId} (it must exist in the pod's namespace)`);
  if (settings.mode === "permissive") notes.push(`${where}: ${ANNOTATION.mode} permissive: plaintext is accepted on the inbound port (for migrations only)`);
  if (settings.config === undefined) notes.push(`${where}: no ${ANNOTATION.config}: every caller with a certificate of this trust domain is allowed`);

  refuseTakenNames(spec, annotations, where);
  refuseTokenMounts(spec, where);
  refuseSharedProcesses(spec, annotations, where);
  notes.push(...ptraceNotes(spec, annotations, where));
  refuseTakenPorts(spec, annotations, where);
  const base = uninjectPod(input);
  const baseSpec = base.spec as PodSpecLike;
  const newSpec: PodSpecLike = { ...baseSpec };
  newSpec.serviceAccountName = settings.appId;
  if ("serviceAccount" in newSpec) newSpec.serviceAccount = settings.appId;
  newSpec.initContainers = [sidecarContainer(settings, options), ...(baseSpec.initContainers ?? [])];
  newSpec.volumes = [...(baseSpec.volumes ?? []), ...sidecarVolumes(settings, options)];
  const pod: PodLike = {
    ...base,
    metadata: { ...base.metadata, annotations: { ...(base.metadata?.annotations ?? {}), [ANNOTATION.injected]: "true" } },
    spec: newSpec,
  };
  return { pod, settings, notes };
}

/**
 * Kubernetes refuses a pod whose containers and init containers share a name, and a pod that is
 * not marked injected holds no init container or volume of ours: one with our names is the
 * user's, and injecting would fail at the API server or replace it.
 */
function refuseTakenNames(spec: PodSpecLike, annotations: Readonly<Record<string, unknown>>, where: string): void {
  const named = (list: Record<string, unknown>[] | undefined, name: string) => Array.isArray(list) && list.some((item) => item?.name === name);
  if (named(spec.containers, SIDECAR_CONTAINER)) {
    throw new MeshwardError("E_INJECT_INVALID", `${where}: a container is already named ${JSON.stringify(SIDECAR_CONTAINER)}, the name of the sidecar; rename it, or remove ${ANNOTATION.inject}`);
  }
  if (annotations[ANNOTATION.injected] === "true") return;
  const taken = [
    ...(named(spec.initContainers, SIDECAR_CONTAINER) ? [`init container ${SIDECAR_CONTAINER}`] : []),
    ...[TOKEN_VOLUME, POLICY_VOLUME].filter((name) => named(spec.volumes, name)).map((name) => `volume ${name}`),
  ];
  if (taken.length > 0) {
    throw new MeshwardError("E_INJECT_INVALID", `${where}: the pod already has ${taken.join(" and ")}, names the sidecar uses, without the ${ANNOTATION.injected} annotation; rename them`);
  }
}

/**
 * The projected token is the workload's credential: whoever reads it can get this workload's
 * certificate from the CA. The kubelet writes it 0644 unless the pod has an fsGroup or one
 * runAsUser for all containers (see INJECTED_TOKEN_DIR), so what keeps it from the app is that
 * only the sidecar container mounts the volume. A container of the pod that names our volume in
 * its volumeMounts (the API server would accept it, once injection adds the volume) is refused.
 */
function refuseTokenMounts(spec: PodSpecLike, where: string): void {
  const lists: [string, unknown][] = [
    ["container", spec.containers],
    ["init container", spec.initContainers],
    ["ephemeral container", spec.ephemeralContainers],
  ];
  for (const [what, list] of lists) {
    if (!Array.isArray(list)) continue;
    for (const container of list as unknown[]) {
      if (container === null || typeof container !== "object") continue;
      const { name, volumeMounts } = container as { name?: unknown; volumeMounts?: unknown };
      // Our own sidecar on re-injection (one of the user's with this name is refused before).
      if (what === "init container" && name === SIDECAR_CONTAINER) continue;
      if (!Array.isArray(volumeMounts)) continue;
      if (!volumeMounts.some((mount: unknown) => mount !== null && typeof mount === "object" && SIDECAR_ONLY_VOLUMES.includes(String((mount as { name?: unknown }).name)))) continue;
      throw new MeshwardError(
        "E_INJECT_INVALID",
        `${where}: ${what} ${JSON.stringify(String(name ?? ""))} mounts volume ${TOKEN_VOLUME}, the sidecar's service-account token: a container that can read it can get this workload's certificate; only the sidecar mounts it, so remove that volumeMount`,
      );
    }
  }
}

/**
 * What an ephemeral container (added to a running pod through pods/ephemeralcontainers, e.g.
 * `kubectl debug`) would get of the sidecar's secrets, or undefined when nothing. Such a container
 * may mount any volume of the pod, so one that mounts a sidecar-only volume (SIDECAR_ONLY_VOLUMES,
 * by volumeMounts or volumeDevices) could read the token; one whose targetContainerName is the
 * sidecar joins the sidecar's process namespace, where /proc/<pid>/root and /proc/<pid>/mem reach
 * the token and the SVID's private key for a process of the same user or with CAP_SYS_PTRACE.
 * In a pod with the sidecar (`injected`), a privileged one (`kubectl debug --profile=sysadmin`) is
 * refused too: it reaches the token through the node's devices without mounting anything, as a
 * privileged app container would (refused at injection, refuseSharedProcesses).
 * A field of the wrong type is reported as unreadable: what cannot be read is not allowed (fail closed).
 */
export function ephemeralSidecarAccess(container: unknown, injected = true): { readonly unreadable: boolean; readonly reason: string } | undefined {
  const unreadable = (reason: string) => ({ unreadable: true, reason });
  const refused = (reason: string) => ({ unreadable: false, reason });
  if (container === null || typeof container !== "object" || Array.isArray(container)) return unreadable("an ephemeral container is not an object");
  const { name, volumeMounts, volumeDevices, targetContainerName } = container as { name?: unknown; volumeMounts?: unknown; volumeDevices?: unknown; targetContainerName?: unknown };
  const label = `ephemeral container ${JSON.stringify(String(name ?? "")).slice(0, 80)}`;
  if (typeof name !== "string" || name === "") return unreadable(`${label} has no name`);
  for (const [field, list] of [["volumeMounts", volumeMounts], ["volumeDevices", volumeDevices]] as const) {
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) return unreadable(`${label}: ${field} is not a list`);
    for (const mount of list as unknown[]) {
      if (mount === null || typeof mount !== "object" || typeof (mount as { name?: unknown }).name !== "string") return unreadable(`${label}: an entry of ${field} has no volume name`);
      const volume = (mount as { name: string }).name;
      if (SIDECAR_ONLY_VOLUMES.includes(volume)) {
        return refused(`${label} mounts volume ${volume}, the sidecar's service-account token: whoever reads it can get this workload's certificate from the CA; only the sidecar mounts it, so debug without that volumeMount`);
      }
    }
  }
  if (targetContainerName !== undefined && targetContainerName !== null && typeof targetContainerName !== "string") return unreadable(`${label}: targetContainerName is not a string`);
  if (targetContainerName === SIDECAR_CONTAINER) {
    return refused(`${label} targets container ${SIDECAR_CONTAINER}, the sidecar: sharing its process namespace reaches its token and private key through /proc; target the app container instead (kubectl debug --target=<app>), and read the sidecar through its logs and status port`);
  }
  if (!injected) return undefined;
  const { securityContext } = container as { securityContext?: unknown };
  if (securityContext === undefined || securityContext === null) return undefined;
  if (typeof securityContext !== "object" || Array.isArray(securityContext)) return unreadable(`${label}: securityContext is not an object`);
  const privileged = (securityContext as { privileged?: unknown }).privileged;
  if (privileged !== undefined && privileged !== null && typeof privileged !== "boolean") return unreadable(`${label}: securityContext.privileged is not a boolean`);
  if (privileged === true) {
    return refused(`${label} is privileged (kubectl debug --profile=sysadmin): it has every capability and the node's devices, where the kubelet keeps the sidecar's token; debug with --profile=general or netadmin instead`);
  }
  return undefined;
}

/**
 * The sidecar holds the workload's credential in its process: the projected token under its own
 * mount namespace (reachable as /proc/<pid>/root/var/run/secrets/meshward.io/token), the SVID's
 * private key in its memory (/proc/<pid>/mem). Linux lets a process that can see the sidecar's
 * process read those (ptrace access mode) when it has the sidecar's UID (10001) or CAP_SYS_PTRACE.
 * A container running as root with the runtime's default capabilities gets the UID by
 * setuid(10001) (CAP_SETUID is in the default set), and an image's USER can set it without the
 * pod saying so: so a pod whose containers can see the sidecar's processes cannot keep the
 * credential from them, whatever their securityContext. Refused (E_INJECT_INVALID):
 * - spec.shareProcessNamespace: one process namespace for every container of the pod. No Pod
 *   Security Standard forbids it (not even restricted), so nothing else would refuse it.
 * - spec.hostPID: the node's process namespace, where the pod's containers see every process of
 *   the node, this sidecar's included (Pod Security baseline forbids it).
 * - a container or init container with securityContext.privileged: every capability and the
 *   node's devices, so the node's disk, where the kubelet keeps the pod's token
 *   (/var/lib/kubelet/pods/<uid>/volumes), whether or not it sees the sidecar's processes
 *   (Pod Security baseline forbids it).
 * A value that is not false (say the string "true", which the API server would not accept) is
 * refused too: what cannot be read as "off" is not taken as off (fail closed). On re-injection
 * our own init container is skipped (it is never privileged; it is rebuilt anyway).
 */
function refuseSharedProcesses(spec: PodSpecLike, annotations: Readonly<Record<string, unknown>>, where: string): void {
  const on = (value: unknown) => value !== undefined && value !== null && value !== false;
  const shown = (value: unknown) => (value === true ? "true" : JSON.stringify(value)?.slice(0, 40) ?? String(value));
  const reach = "its containers could read the sidecar's service-account token and private key through /proc (a root container by setuid to the sidecar's UID, without any added capability)";
  if (on(spec.shareProcessNamespace)) {
    throw new MeshwardError(
      "E_INJECT_INVALID",
      `${where}: spec.shareProcessNamespace is ${shown(spec.shareProcessNamespace)}: ${reach}; remove shareProcessNamespace (debug with kubectl debug --target=<app>, which shares only the app's processes), or remove ${ANNOTATION.inject}`,
    );
  }
  if (on(spec.hostPID)) {
    throw new MeshwardError(
      "E_INJECT_INVALID",
      `${where}: spec.hostPID is ${shown(spec.hostPID)}: the pod sees every process of the node, so ${reach}; remove hostPID (Pod Security baseline forbids it), or remove ${ANNOTATION.inject}`,
    );
  }
  for (const { what, name, securityContext } of appContainers(spec, annotations)) {
    if (securityContext === null || typeof securityContext !== "object") continue;
    const privileged = (securityContext as { privileged?: unknown }).privileged;
    if (!on(privileged)) continue;
    throw new MeshwardError(
      "E_INJECT_INVALID",
      `${where}: ${what} ${JSON.stringify(String(name ?? "")).slice(0, 80)} has securityContext.privileged ${shown(privileged)}: a privileged container has every capability and the node's devices, where the kubelet keeps the sidecar's token; remove privileged (Pod Security baseline forbids it; add only the capabilities it needs), or remove ${ANNOTATION.inject}`,
    );
  }
}

/** The pod's containers and init containers that are objects, but our own sidecar on re-injection. */
function* appContainers(spec: PodSpecLike, annotations: Readonly<Record<string, unknown>>): Generator<{ what: string; name: unknown; securityContext: unknown }> {
  const injected = annotations[ANNOTATION.injected] === "true";
  const lists: [string, unknown][] = [
    ["container", spec.containers],
    ["init container", spec.initContainers],
  ];
  for (const [what, list] of lists) {
    if (!Array.isArray(list)) continue;
    for (const container of list as unknown[]) {
      if (container === null || typeof container !== "object") continue;
      const { name, securityContext } = container as { name?: unknown; securityContext?: unknown };
      if (what === "init container" && injected && name === SIDECAR_CONTAINER) continue;
      yield { what, name, securityContext };
    }
  }
}

/**
 * An admission warning (and a note of `meshward inject`) for each container or init container
 * that adds CAP_SYS_PTRACE (or ALL, which holds it). Not refused: with the process namespaces
 * separate (refuseSharedProcesses) it reaches only its own container's processes, never the
 * sidecar's, and profilers and debuggers add it for that. But Pod Security baseline forbids it,
 * and it is the capability that reads another process's memory: the note says so, so that the
 * operator knows what would expose the sidecar. Names are read as container runtimes read them
 * (case-insensitive, with or without CAP_).
 */
function ptraceNotes(spec: PodSpecLike, annotations: Readonly<Record<string, unknown>>, where: string): string[] {
  const notes: string[] = [];
  for (const { what, name, securityContext } of appContainers(spec, annotations)) {
    const add = (securityContext as { capabilities?: { add?: unknown } } | null | undefined)?.capabilities?.add;
    if (!Array.isArray(add)) continue;
    const names = add.map((cap) => String(cap).trim().toUpperCase().replace(/^CAP_/, ""));
    const held = names.includes("ALL") ? "ALL (every capability, SYS_PTRACE included)" : names.includes("SYS_PTRACE") ? "SYS_PTRACE" : undefined;
    if (held === undefined) continue;
    notes.push(
      `${where}: ${what} ${JSON.stringify(String(name ?? "")).slice(0, 80)} adds capability ${held} (Pod Security baseline forbids it), which reads the memory of the processes it sees; injection keeps the sidecar's out of its sight (no shareProcessNamespace or hostPID)`,
    );
  }
  return notes;
}

/** The TCP ports the sidecar binds in the pod's network namespace, by what it uses them for. */
const SIDECAR_PORT_USES: ReadonlyMap<number, string> = new Map([
  [SIDECAR_PORTS.inbound, "its inbound mTLS port mw-mtls"],
  [SIDECAR_PORTS.outbound, "its outbound port (on 127.0.0.1)"],
  [SIDECAR_PORTS.status, "its status port mw-status (probes, /metrics)"],
]);

/**
 * The sidecar shares the pod's network namespace and starts first: an app container that
 * declares one of its TCP ports as a containerPort would fail to bind it (EADDRINUSE) and
 * crash-loop, or its probes would reach the sidecar. Kubernetes only warns about duplicate
 * ports, so this is refused here with the container and port named. A hostPort alone is not
 * refused: it maps a port of the node onto the containerPort, and binds nothing in the pod.
 * On re-injection our own init container is skipped.
 */
function refuseTakenPorts(spec: PodSpecLike, annotations: Readonly<Record<string, unknown>>, where: string): void {
  const injected = annotations[ANNOTATION.injected] === "true";
  const lists: [string, Record<string, unknown>[] | undefined][] = [
    ["container", spec.containers],
    ["init container", spec.initContainers],
  ];
  for (const [what, list] of lists) {
    if (!Array.isArray(list)) continue;
    for (const container of list) {
      if (container === null || typeof container !== "object") continue;
      if (what === "init container" && injected && container.name === SIDECAR_CONTAINER) continue;
      const ports = container.ports;
      if (!Array.isArray(ports)) continue;
      for (const port of ports as unknown[]) {
        if (port === null || typeof port !== "object") continue;
        const { containerPort, protocol } = port as { containerPort?: unknown; protocol?: unknown };
        if (protocol !== undefined && protocol !== null && String(protocol).toUpperCase() !== "TCP") continue;
        const number = Number(containerPort);
        const use = SIDECAR_PORT_USES.get(number);
        if (use === undefined) continue;
        throw new MeshwardError(
          "E_INJECT_INVALID",
          `${where}: ${what} ${JSON.stringify(String(container.name ?? ""))} declares containerPort ${number}, which the sidecar binds in the pod's network namespace (${use}); the sidecar's ports ${[...SIDECAR_PORT_USES.keys()].sort((a, b) => a - b).join(", ")} are fixed: give the container another port, or remove ${ANNOTATION.inject}`,
        );
      }
    }
  }
}

/** The pod without anything injection added (fields emptied by removal are dropped). */
export function uninjectPod(input: PodLike): PodLike {
  const spec = { ...(input.spec ?? {}) } as PodSpecLike;
  const drop = <T extends Record<string, unknown>>(list: T[] | undefined | null, names: readonly string[]): T[] | undefined => {
    // An empty YAML key (`volumes:`) is null, which the API server takes as no list.
    if (!Array.isArray(list)) return undefined;
    const kept = list.filter((item) => item === null || typeof item !== "object" || !names.includes(String(item.name)));
    return kept.length === 0 ? undefined : kept;
  };
  const initContainers = drop(spec.initContainers, [SIDECAR_CONTAINER]);
  const volumes = drop(spec.volumes, [TOKEN_VOLUME, POLICY_VOLUME]);
  if (initContainers === undefined) delete spec.initContainers;
  else spec.initContainers = initContainers;
  if (volumes === undefined) delete spec.volumes;
  else spec.volumes = volumes;
  const annotations = { ...(input.metadata?.annotations ?? {}) };
  delete annotations[ANNOTATION.injected];
  return { ...input, metadata: { ...input.metadata, annotations }, spec };
}

function sidecarContainer(settings: PodSettings, options: InjectOptions): Record<string, unknown> {
  const args = [
    "sidecar",
    "--app-id",
    settings.appId,
    "--namespace",
    "$(POD_NAMESPACE)",
    "--ca",
    options.caAddress,
    "--validator",
    "kubernetes",
    "--token-file",
    `${TOKEN_DIR}/token`,
    "--inbound",
    `0.0.0.0:${SIDECAR_PORTS.inbound}`,
    "--app",
    `127.0.0.1:${settings.appPort}`,
    "--outbound",
    `127.0.0.1:${SIDECAR_PORTS.outbound}`,
    "--peer-template",
    // Not .svc.cluster.local: the pod's DNS search path completes "<svc>.<ns>.svc" on a cluster
    // with any domain, as the CA's address (.svc) already relies on.
    "{appId}.{namespace}.svc:{port}",
    "--protocol",
    settings.protocol,
    "--mode",
    settings.mode,
    // The kubelet's probes come from outside the pod, so the status port is not on loopback;
    // it serves only /healthz, /readyz and /metrics (the page, which shows peers, is off).
    "--status",
    `0.0.0.0:${SIDECAR_PORTS.status}`,
    "--no-status-page",
    ...(settings.config === undefined ? [] : ["--policy", `${POLICY_DIR}/${POLICY_KEY}`]),
    ...settings.outboundAllowedHosts.flatMap((host) => ["--outbound-allowed-host", host]),
    ...(settings.escapedSlashes === undefined ? [] : ["--escaped-slashes", settings.escapedSlashes]),
    ...(settings.headersWithUnderscores === undefined ? [] : ["--headers-with-underscores", settings.headersWithUnderscores]),
    "--log-format",
    "json",
  ];
  const probe = (path: string, extra: Record<string, number>) => ({ httpGet: { path, port: "mw-status" }, ...extra });
  return {
    name: SIDECAR_CONTAINER,
    image: options.image,
    imagePullPolicy: "IfNotPresent",
    // A native sidecar (Kubernetes ≥ 1.29): started before the app containers, stopped after
    // them, and it does not keep a Job from completing.
    restartPolicy: "Always",
    args,
    env: [
      { name: "POD_NAMESPACE", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
      { name: "MESHWARD_TRUST_ANCHORS", value: options.trustAnchors },
    ],
    ports: [
      { name: "mw-mtls", containerPort: SIDECAR_PORTS.inbound, protocol: "TCP" },
      { name: "mw-status", containerPort: SIDECAR_PORTS.status, protocol: "TCP" },
    ],
    // The app containers start once the sidecar holds a certificate.
    startupProbe: probe("/readyz", { periodSeconds: 1, failureThreshold: 120 }),
    readinessProbe: probe("/readyz", { periodSeconds: 10 }),
    livenessProbe: probe("/healthz", { periodSeconds: 20 }),
    resources: { requests: { cpu: "50m", memory: "64Mi" }, limits: { cpu: "1", memory: "256Mi" } },
    securityContext: {
      runAsNonRoot: true,
      runAsUser: 10001,
      runAsGroup: 10001,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
      seccompProfile: { type: "RuntimeDefault" },
    },
    volumeMounts: [
      { name: TOKEN_VOLUME, mountPath: TOKEN_DIR, readOnly: true },
      ...(settings.config === undefined ? [] : [{ name: POLICY_VOLUME, mountPath: POLICY_DIR, readOnly: true }]),
    ],
  };
}

function sidecarVolumes(settings: PodSettings, options: InjectOptions): Record<string, unknown>[] {
  const volumes: Record<string, unknown>[] = [
    {
      name: TOKEN_VOLUME,
      projected: {
        sources: [{ serviceAccountToken: { path: "token", audience: options.audience, expirationSeconds: options.tokenExpirationSeconds ?? 3600 } }],
      },
    },
  ];
  if (settings.config !== undefined) {
    // Not optional: a pod whose policy is missing does not start (fail closed).
    volumes.push({ name: POLICY_VOLUME, configMap: { name: settings.config, items: [{ key: POLICY_KEY, path: POLICY_KEY }] } });
  }
  return volumes;
}
