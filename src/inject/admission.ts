import { describeError, MeshwardError } from "../errors.ts";
import { diffJson } from "./json-patch.ts";
import { ephemeralSidecarAccess, injectPod, SIDECAR_CONTAINER, SIDECAR_ONLY_VOLUMES, TOKEN_VOLUME, type PodLike } from "./pod.ts";
import { ANNOTATION, type InjectOptions } from "./settings.ts";

/** The AdmissionReview v1 response the API server expects (k8s.io/api/admission/v1). */
export interface AdmissionReviewResponse {
  readonly apiVersion: "admission.k8s.io/v1";
  readonly kind: "AdmissionReview";
  readonly response: {
    readonly uid: string;
    readonly allowed: boolean;
    readonly patchType?: "JSONPatch";
    /** base64 of the JSON Patch. */
    readonly patch?: string;
    readonly status?: { readonly code: number; readonly message: string };
    readonly warnings?: readonly string[];
  };
}

export interface AdmissionContext {
  readonly options: InjectOptions;
  /** The injector's own namespace: never mutated (its own pods would wait for themselves). */
  readonly ownNamespace: string;
  /** Bytes of JSON Patch (before base64) a review may get; a larger one is denied, not sent (default MAX_PATCH_BYTES). */
  readonly maxPatchBytes?: number;
}

/**
 * The largest JSON Patch one review may get: 6 MiB (8 MiB once base64'd). The patch replaces at
 * most the pod's init containers, volumes and annotations and adds one sidecar, so a review of
 * the largest size the webhook reads (4 MiB) stays under it; anything larger is not a pod the API
 * server sent, and is denied instead of built.
 */
export const MAX_PATCH_BYTES = 6 * 1024 * 1024;

const UID = /^[A-Za-z0-9-]{1,128}$/;

/**
 * One AdmissionReview v1 request → its response, using the same transformation as
 * `meshward inject` (so the patched object equals what `meshward inject` prints). A request
 * that is not an AdmissionReview v1 throws E_ADMISSION_INVALID (the server answers 400); a
 * pod whose annotations are wrong is denied with the reason, so `kubectl apply` shows it.
 * Compare dapr/dapr pkg/injector/service/handler.go and linkerd2 controller/webhook/server.go.
 */
export function reviewAdmission(review: unknown, context: AdmissionContext): AdmissionReviewResponse {
  const body = review as { apiVersion?: unknown; kind?: unknown; request?: Record<string, unknown> } | null;
  if (body === null || typeof body !== "object" || body.apiVersion !== "admission.k8s.io/v1" || body.kind !== "AdmissionReview") {
    throw new MeshwardError("E_ADMISSION_INVALID", "the body is not an admission.k8s.io/v1 AdmissionReview");
  }
  const request = body.request;
  if (request === undefined || request === null || typeof request !== "object" || typeof request.uid !== "string" || !UID.test(request.uid)) {
    throw new MeshwardError("E_ADMISSION_INVALID", "the AdmissionReview has no request.uid");
  }
  const uid = request.uid;
  const respond = (rest: Omit<AdmissionReviewResponse["response"], "uid">): AdmissionReviewResponse => ({
    apiVersion: "admission.k8s.io/v1",
    kind: "AdmissionReview",
    response: { uid, ...rest },
  });
  if (typeof request.operation !== "string") throw new MeshwardError("E_ADMISSION_INVALID", "the AdmissionReview has no request.operation");
  const namespace = typeof request.namespace === "string" ? request.namespace : undefined;
  if (namespace === context.ownNamespace) return respond({ allowed: true });
  const requestKind = (request.kind ?? undefined) as { kind?: unknown } | undefined;
  if (request.subResource === "ephemeralcontainers" || requestKind?.kind === "EphemeralContainers") return reviewEphemeralContainers(request, namespace, respond);
  if (request.operation === "UPDATE" && isPodItself(request)) return reviewPodUpdate(request, namespace, respond);
  if (request.operation !== "CREATE") return respond({ allowed: true });
  // Only a Pod itself is injected (as dapr/dapr pkg/injector/service/handler.go admits other kinds
  // unchanged): a webhook rule that also matches Deployments or other pods/* subresources
  // (pods/binding, pods/eviction) gets them back untouched; pods/ephemeralcontainers is judged above.
  const kind = request.kind as { group?: unknown; kind?: unknown } | undefined;
  const subResource = request.subResource;
  if (kind?.kind !== "Pod" || (kind.group !== undefined && kind.group !== "") || (typeof subResource === "string" && subResource !== "")) return respond({ allowed: true });
  // The API server sends the Pod itself as request.object. Injection follows that object, so it
  // must be exactly one v1 Pod matching request.kind and request.resource: a List (whose every
  // item `meshward inject` would inject) or another kind is refused, not walked. Found by review:
  // one 4 MiB review holding a List of 28k pods got a 94 MiB answer and took the injector to 940 MB.
  const object = request.object;
  const problem = notOnePod(object, request.resource);
  if (problem !== undefined) {
    return respond({ allowed: false, status: { code: 400, message: `${namespace ?? ""}/${String(request.name ?? "")}: meshward injector: ${problem} [E_ADMISSION_INVALID]` } });
  }
  const pod = object as PodLike;
  const meta = pod.metadata as { name?: unknown; generateName?: unknown } | undefined;
  const name = typeof meta?.name === "string" && meta.name !== "" ? meta.name : typeof meta?.generateName === "string" ? `${meta.generateName}…` : String(request.name ?? "");
  try {
    const ownName = typeof meta?.name === "string" ? meta.name : undefined;
    const podNamespace = typeof pod.metadata?.namespace === "string" ? pod.metadata.namespace : namespace;
    const label = `Pod ${podNamespace === undefined ? "" : `${podNamespace}/`}${ownName ?? "(unnamed)"}`;
    const result = injectPod(pod, context.options, `admission ${uid}: ${label}`, ownName);
    if (result === undefined) return respond({ allowed: true });
    const patch = diffJson(object, result.pod);
    if (patch.length === 0) return respond({ allowed: true });
    const patchText = JSON.stringify(patch);
    const maxPatchBytes = context.maxPatchBytes ?? MAX_PATCH_BYTES;
    const patchBytes = Buffer.byteLength(patchText);
    if (patchBytes > maxPatchBytes) {
      return respond({
        allowed: false,
        status: { code: 400, message: `${namespace ?? ""}/${name}: meshward injector: the patch would be ${patchBytes} bytes, over the injector's limit of ${maxPatchBytes} [E_ADMISSION_TOO_LARGE]` },
      });
    }
    return respond({ allowed: true, patchType: "JSONPatch", patch: Buffer.from(patchText).toString("base64"), warnings: result.notes.map(trimWhere) });
  } catch (error) {
    const message = error instanceof MeshwardError ? `meshward injector: ${trimWhere(error.message)} [${error.code}]` : `meshward injector: ${describeError(error)}`;
    return respond({ allowed: false, status: { code: 400, message: `${namespace ?? ""}/${name}: ${message}` } });
  }
}

/**
 * An UPDATE of pods/ephemeralcontainers (`kubectl debug`): the new ephemeral containers must not
 * reach the sidecar's secrets (ephemeralSidecarAccess); nothing is patched. Since Kubernetes 1.22
 * (kubernetes/kubernetes#101034) the API server sends the whole Pod (request.kind Pod, resource
 * pods, subResource ephemeralcontainers) with the containers in spec.ephemeralContainers; before,
 * it sent kind EphemeralContainers with them in .ephemeralContainers. Both are read; anything else
 * is denied (fail closed), since a debug container the injector cannot read is one it cannot judge.
 * Only containers not already in request.oldObject are judged (the API server refuses changing or
 * removing existing ones); without a readable oldObject every one is.
 */
function reviewEphemeralContainers(
  request: Record<string, unknown>,
  namespace: string | undefined,
  respond: (rest: Omit<AdmissionReviewResponse["response"], "uid">) => AdmissionReviewResponse,
): AdmissionReviewResponse {
  const deny = denial(request, namespace, respond);
  const invalid = (problem: string) => deny(400, `${problem}; an ephemeral container the injector cannot read is refused`, "E_ADMISSION_INVALID");
  const kind = request.kind as { group?: unknown; kind?: unknown } | null | undefined;
  const shape = kind?.kind === "Pod" || kind?.kind === "EphemeralContainers" ? kind.kind : undefined;
  if (shape === undefined || (kind?.group !== undefined && kind.group !== "")) {
    return invalid(`a pods/ephemeralcontainers review of kind ${JSON.stringify(String(kind?.kind ?? "")).slice(0, 80)}, not a v1 Pod (Kubernetes ≥ 1.22) or EphemeralContainers (before)`);
  }
  const resource = request.resource as { group?: unknown; resource?: unknown } | null | undefined;
  if (resource === undefined || resource === null || (resource.group !== undefined && resource.group !== "") || resource.resource !== "pods" || request.subResource !== "ephemeralcontainers") {
    return invalid(`request.kind is ${shape} but request.resource is ${JSON.stringify(`${String(resource?.group ?? "")}/${String(resource?.resource ?? "")}/${String(request.subResource ?? "")}`).slice(0, 120)}, not pods/ephemeralcontainers`);
  }
  const added = ephemeralContainersOf(request.object, shape);
  if (typeof added === "string") return invalid(`request.object ${added}`);
  const old = ephemeralContainersOf(request.oldObject, shape);
  // Every fact about the pod is read from request.oldObject, the pod as stored: request.object is
  // the body the client sent (a PUT body, or the stored pod after the client's patch), and the API
  // server keeps only its spec.ephemeralContainers, after the mutating webhooks have run
  // (podEphemeralContainersStrategy.PrepareForUpdate, in rest.BeforeUpdate). A body without the
  // injected mark and the sidecar init container must not make an injected pod look plain (review).
  // Without a readable oldObject the pod is taken as injected and as sharing its processes (fail
  // closed): the API server always sends it. The old EphemeralContainers shape says nothing about
  // the pod: taken as injected, processes not judged (Kubernetes < 1.22 cannot run the native
  // sidecar, so no injected pod runs there).
  const stored = shape === "Pod" && typeof old !== "string" ? (request.oldObject as { spec: Record<string, unknown> }) : undefined;
  const injected = shape === "EphemeralContainers" || stored === undefined || hasSidecar(stored);
  const oldNames = new Set(typeof old === "string" ? [] : old.map((container) => (container !== null && typeof container === "object" ? (container as { name?: unknown }).name : undefined)));
  const judged: unknown[] = [];
  for (const container of added) {
    const name = container !== null && typeof container === "object" ? (container as { name?: unknown }).name : undefined;
    if (typeof name === "string" && oldNames.has(name)) continue;
    judged.push(container);
    const problem = ephemeralSidecarAccess(container, injected);
    if (problem === undefined) continue;
    return problem.unreadable ? invalid(problem.reason) : deny(403, problem.reason, "E_INJECT_EPHEMERAL_DENIED");
  }
  if (judged.length > 0 && injected && shape === "Pod") {
    if (typeof old === "string") return invalid(`request.oldObject (the stored pod) ${old}, so whether the pod's containers share processes with the sidecar cannot be told`);
    const shared = sharedProcesses(stored as { spec: Record<string, unknown> });
    if (shared !== undefined) {
      const first = judged[0] as { name: string };
      return deny(
        403,
        `ephemeral container ${JSON.stringify(first.name).slice(0, 80)} would join a pod whose ${shared}: any container of it can reach the sidecar's token and private key through /proc (as the sidecar's UID 10001, which a root container gets by setuid), whatever it targets; injection refuses such pods since this was found, but this one was injected before: recreate it without shareProcessNamespace/hostPID (from its controller), then debug it with kubectl debug --target=<app>`,
        "E_INJECT_EPHEMERAL_DENIED",
      );
    }
  }
  return respond({ allowed: true });
}

/**
 * Why the stored pod's containers see the sidecar's processes ("spec.shareProcessNamespace is
 * true"), or undefined when they do not. Both fields are immutable after creation, so a pod
 * injected before injection refused them (refuseSharedProcesses in pod.ts) keeps them. A value
 * that is not false is taken as on (fail closed).
 */
function sharedProcesses(stored: { spec: Record<string, unknown> }): string | undefined {
  const on = (value: unknown) => value !== undefined && value !== null && value !== false;
  for (const field of ["shareProcessNamespace", "hostPID"] as const) {
    const value = stored.spec[field];
    if (on(value)) return `spec.${field} is ${value === true ? "true" : (JSON.stringify(value)?.slice(0, 40) ?? String(value))}`;
  }
  return undefined;
}

/** Whether a review is about a core v1 Pod itself (request.kind Pod of the core group, no subresource). */
function isPodItself(request: Record<string, unknown>): boolean {
  const kind = request.kind as { group?: unknown; kind?: unknown } | null | undefined;
  const subResource = request.subResource;
  return kind?.kind === "Pod" && (kind.group === undefined || kind.group === "") && (subResource === undefined || subResource === null || subResource === "");
}

/**
 * An UPDATE of a Pod itself (`kubectl set image`, `kubectl edit`, `kubectl label`, a controller's
 * patch). On a running pod the API server lets only a few fields change (ValidatePodUpdate:
 * spec.containers[*].image, spec.initContainers[*].image, spec.activeDeadlineSeconds,
 * spec.tolerations additions, spec.terminationGracePeriodSeconds in one case, schedulingGates
 * removal; metadata), but the sidecar's image is one of them: a new image would run (at the
 * sidecar's next restart at the latest) with meshward-token mounted. So in a pod whose stored
 * version (request.oldObject) has the sidecar, an UPDATE is refused (403,
 * E_INJECT_SIDECAR_IMMUTABLE) when it
 * - changes anything of the `meshward` init container (compared as JSON with oldObject's; the
 *   image above all), or removes or renames it; a sidecar upgrade recreates the pod from its
 *   controller, so nothing legitimate is lost;
 * - changes the meshward-token volume, or adds a mount of it to another container (the API server
 *   refuses both after the mutating phase; refused here too, so that the rule does not depend on it).
 * Everything else (labels, annotations, app container images, tolerations, finalizers) is admitted
 * unchanged and never patched. A review whose object or oldObject is not one v1 Pod is refused
 * (400, E_ADMISSION_INVALID): an update the injector cannot compare is not let through.
 * The webhook receives pod UPDATEs only for pods whose stored version has the sidecar and only
 * when the sidecar or a token mount differs (matchConditions in deploy/kubernetes/base/injector.yaml),
 * so that failurePolicy Fail does not hold up every label change while the injector is down.
 */
function reviewPodUpdate(
  request: Record<string, unknown>,
  namespace: string | undefined,
  respond: (rest: Omit<AdmissionReviewResponse["response"], "uid">) => AdmissionReviewResponse,
): AdmissionReviewResponse {
  const deny = denial(request, namespace, respond);
  for (const [field, object] of [["object", request.object], ["oldObject", request.oldObject]] as const) {
    const problem = notOnePod(object, request.resource) ?? (isDict((object as { spec?: unknown }).spec) ? undefined : `request.${field} has no spec`);
    if (problem !== undefined) return deny(400, `${problem.replace("request.object", `request.${field}`)}; a pod update the injector cannot compare with the stored pod is refused`, "E_ADMISSION_INVALID");
  }
  const stored = request.oldObject as { spec: Record<string, unknown> };
  const updated = request.object as { spec: Record<string, unknown> };
  if (!hasSidecar(stored)) return respond({ allowed: true });
  const refuse = (problem: string) => deny(403, problem, "E_INJECT_SIDECAR_IMMUTABLE");
  const recreate = "to change the sidecar, change the pod's controller (or re-inject) so that the pod is recreated";
  const named = (list: unknown, name: string): Record<string, unknown>[] => (Array.isArray(list) ? list.filter((item): item is Record<string, unknown> => isDict(item) && item.name === name) : []);
  const oldSidecar = named(stored.spec.initContainers, SIDECAR_CONTAINER);
  const newSidecar = named(updated.spec.initContainers, SIDECAR_CONTAINER);
  if (oldSidecar.length > 0) {
    if (newSidecar.length === 0) return refuse(`the update removes or renames init container ${SIDECAR_CONTAINER}, the sidecar, which the pod was injected with; ${recreate}`);
    if (newSidecar.length !== oldSidecar.length || !sameJson(oldSidecar[0], newSidecar[0])) {
      const before = oldSidecar[0] as Record<string, unknown>;
      const after = newSidecar[0] as Record<string, unknown>;
      const fields = [...new Set([...Object.keys(before), ...Object.keys(after)])].filter((key) => !sameJson(before[key], after[key])).sort();
      const image = fields.includes("image") ? ` (image ${JSON.stringify(String(before.image ?? "")).slice(0, 120)} → ${JSON.stringify(String(after.image ?? "")).slice(0, 120)})` : "";
      return refuse(
        `the update changes init container ${SIDECAR_CONTAINER}, the sidecar${fields.length > 0 ? `: ${fields.map((key) => JSON.stringify(key).slice(0, 60)).join(", ")}` : ""}${image}; it mounts the workload's service-account token, so whatever runs there can get this workload's certificate; ${recreate}`,
      );
    }
  }
  const oldVolume = named(stored.spec.volumes, TOKEN_VOLUME);
  const newVolume = named(updated.spec.volumes, TOKEN_VOLUME);
  if (oldVolume.length > 0 && (oldVolume.length !== newVolume.length || !sameJson(oldVolume[0], newVolume[0]))) {
    return refuse(`the update changes or removes volume ${TOKEN_VOLUME}, the sidecar's service-account token; ${recreate}`);
  }
  for (const [what, field] of [["container", "containers"], ["init container", "initContainers"], ["ephemeral container", "ephemeralContainers"]] as const) {
    const list = updated.spec[field];
    if (!Array.isArray(list)) continue;
    for (const container of list as unknown[]) {
      if (!isDict(container)) continue;
      const name = container.name;
      if (field === "initContainers" && name === SIDECAR_CONTAINER) continue;
      if (!mountsSidecarOnly(container)) continue;
      // One that mounted it before the update (an old pod) is the stored pod's, not this update's.
      if (typeof name === "string" && named(stored.spec[field], name).some(mountsSidecarOnly)) continue;
      return refuse(`the update makes ${what} ${JSON.stringify(String(name ?? "")).slice(0, 80)} mount volume ${TOKEN_VOLUME}, the sidecar's service-account token: whoever reads it can get this workload's certificate from the CA; only the sidecar mounts it`);
    }
  }
  return respond({ allowed: true });
}

/** Whether a container names a sidecar-only volume in its volumeMounts or volumeDevices (a list of the wrong type counts: fail closed). */
function mountsSidecarOnly(container: Record<string, unknown>): boolean {
  for (const list of [container.volumeMounts, container.volumeDevices]) {
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) return true;
    if (list.some((mount: unknown) => !isDict(mount) || SIDECAR_ONLY_VOLUMES.includes(String(mount.name)))) return true;
  }
  return false;
}

function isDict(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** JSON equality with object keys in any order (the API server's serialisations of one object may order them differently). */
function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((item, index) => sameJson(item, b[index]));
  if (!isDict(a) || !isDict(b)) return false;
  const keys = Object.keys(a).filter((key) => a[key] !== undefined);
  if (keys.length !== Object.keys(b).filter((key) => b[key] !== undefined).length) return false;
  return keys.every((key) => Object.hasOwn(b, key) && sameJson(a[key], b[key]));
}

/** Whether a Pod is injected: marked so, or holding the sidecar init container (either is enough: fail closed). */
function hasSidecar(pod: unknown): boolean {
  const { metadata, spec } = pod as { metadata?: { annotations?: unknown }; spec?: { initContainers?: unknown } };
  const annotations = metadata?.annotations;
  if (annotations !== null && typeof annotations === "object" && (annotations as Record<string, unknown>)[ANNOTATION.injected] === "true") return true;
  const initContainers = spec?.initContainers;
  return Array.isArray(initContainers) && initContainers.some((container: unknown) => container !== null && typeof container === "object" && (container as { name?: unknown }).name === SIDECAR_CONTAINER);
}

/** The ephemeral containers of a v1 Pod or (before Kubernetes 1.22) EphemeralContainers object, or why there are none to read. */
function ephemeralContainersOf(object: unknown, shape: "Pod" | "EphemeralContainers"): unknown[] | string {
  if (object === null || typeof object !== "object" || Array.isArray(object)) return `is not a ${shape} object`;
  const { apiVersion, kind, spec, ephemeralContainers } = object as { apiVersion?: unknown; kind?: unknown; spec?: unknown; ephemeralContainers?: unknown };
  if (kind !== shape || apiVersion !== "v1") return `is ${JSON.stringify(String(apiVersion ?? "")).slice(0, 80)} ${JSON.stringify(String(kind ?? "")).slice(0, 80)}, not the v1 ${shape} that request.kind names`;
  let list: unknown;
  if (shape === "Pod") {
    if (spec === null || typeof spec !== "object" || Array.isArray(spec)) return "has no spec";
    list = (spec as { ephemeralContainers?: unknown }).ephemeralContainers;
  } else list = ephemeralContainers;
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) return `${shape === "Pod" ? "spec." : ""}ephemeralContainers is not a list`;
  return list as unknown[];
}

/** A refusal of this review: HTTP `code`, the message naming the pod (namespace/name), the problem and its error code. */
function denial(
  request: Record<string, unknown>,
  namespace: string | undefined,
  respond: (rest: Omit<AdmissionReviewResponse["response"], "uid">) => AdmissionReviewResponse,
): (code: number, problem: string, errorCode: string) => AdmissionReviewResponse {
  const where = `${namespace ?? ""}/${typeof request.name === "string" ? request.name.slice(0, 253) : ""}`;
  return (code, problem, errorCode) => respond({ allowed: false, status: { code, message: `${where}: meshward injector: ${problem} [${errorCode}]` } });
}

/** "admission <uid>: Pod shop/x: detail" → "detail": the API server already names the object. */
function trimWhere(message: string): string {
  return message.replace(/^admission [^:]+: [^:]+: /, "");
}

/** Why `object` is not the one core v1 Pod a Pod review carries (undefined when it is). */
function notOnePod(object: unknown, resource: unknown): string | undefined {
  if (object === null || typeof object !== "object" || Array.isArray(object)) return "request.object is not a Pod object";
  const { apiVersion, kind } = object as { apiVersion?: unknown; kind?: unknown };
  if (kind !== "Pod" || apiVersion !== "v1") {
    return `request.kind is a v1 Pod but request.object is ${JSON.stringify(String(apiVersion ?? "")).slice(0, 80)} ${JSON.stringify(String(kind ?? "")).slice(0, 80)}: only one Pod is injected per review`;
  }
  if (resource !== undefined && resource !== null) {
    const { group, resource: plural } = resource as { group?: unknown; resource?: unknown };
    if ((group !== undefined && group !== "") || plural !== "pods") {
      return `request.kind is a Pod but request.resource is ${JSON.stringify(`${String(group ?? "")}/${String(plural ?? "")}`).slice(0, 120)}, not pods`;
    }
  }
  return undefined;
}
