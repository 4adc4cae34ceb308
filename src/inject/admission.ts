import { describeError, MeshwardError } from "../errors.ts";
import { diffJson } from "./json-patch.ts";
import { injectObject } from "./manifest.ts";
import type { InjectOptions } from "./settings.ts";

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
}

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
  if (request.operation !== "CREATE") return respond({ allowed: true });
  // Only a Pod itself is injected (as dapr/dapr pkg/injector/service/handler.go admits other kinds
  // unchanged): a webhook rule that also matches Deployments or pods/* subresources (pods/binding,
  // pods/eviction, pods/ephemeralcontainers) gets them back untouched.
  const kind = request.kind as { group?: unknown; kind?: unknown } | undefined;
  const subResource = request.subResource;
  if (kind?.kind !== "Pod" || (kind.group !== undefined && kind.group !== "") || (typeof subResource === "string" && subResource !== "")) return respond({ allowed: true });
  const object = request.object;
  if (object === null || typeof object !== "object") return respond({ allowed: true });
  const meta = (object as { metadata?: { name?: unknown; generateName?: unknown } }).metadata;
  const name = typeof meta?.name === "string" && meta.name !== "" ? meta.name : typeof meta?.generateName === "string" ? `${meta.generateName}…` : String(request.name ?? "");
  try {
    const result = injectObject(object, context.options, `admission ${uid}`, namespace);
    if (result === undefined) return respond({ allowed: true });
    const patch = diffJson(object, result.object);
    if (patch.length === 0) return respond({ allowed: true });
    return respond({ allowed: true, patchType: "JSONPatch", patch: Buffer.from(JSON.stringify(patch)).toString("base64"), warnings: result.notes.map(trimWhere) });
  } catch (error) {
    const message = error instanceof MeshwardError ? `meshward injector: ${trimWhere(error.message)} [${error.code}]` : `meshward injector: ${describeError(error)}`;
    return respond({ allowed: false, status: { code: 400, message: `${namespace ?? ""}/${name}: ${message}` } });
  }
}

/** "admission <uid>: Pod shop/x: detail" → "detail": the API server already names the object. */
function trimWhere(message: string): string {
  return message.replace(/^admission [^:]+: [^:]+: /, "");
}
