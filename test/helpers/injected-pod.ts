/** Pods for admission tests: an injected pod as the API server holds it, and one without the sidecar. */
export type Pod = Record<string, any>;

/** An injected pod as the API server holds it (after defaulting, as far as the injector's checks go); `change` edits it. */
export const injectedPod = (change: (pod: Pod) => void = () => {}): Pod => {
  const pod: Pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "orders-7d9f", namespace: "shop", uid: "5b7c", labels: { app: "orders" }, annotations: { "meshward.io/inject": "true", "meshward.io/app-port": "8080", "meshward.io/injected": "true" } },
    spec: {
      serviceAccountName: "orders",
      initContainers: [
        {
          name: "meshward",
          image: "meshward:0.1.0",
          imagePullPolicy: "IfNotPresent",
          restartPolicy: "Always",
          args: ["sidecar", "--app-id", "orders"],
          resources: { requests: { cpu: "50m", memory: "64Mi" }, limits: { cpu: "1", memory: "256Mi" } },
          ports: [{ name: "mw-status", containerPort: 3500 }],
          volumeMounts: [{ name: "meshward-token", mountPath: "/var/run/secrets/meshward.io/token", readOnly: true }],
        },
      ],
      containers: [{ name: "app", image: "app:1", volumeMounts: [{ name: "data", mountPath: "/data" }] }],
      volumes: [
        { name: "data", emptyDir: {} },
        { name: "meshward-token", projected: { sources: [{ serviceAccountToken: { path: "token", audience: "meshward", expirationSeconds: 3600 } }] } },
      ],
    },
  };
  change(pod);
  return pod;
};
export const plainPod = (change: (pod: Pod) => void = () => {}): Pod =>
  injectedPod((pod) => {
    delete pod.metadata.annotations;
    delete pod.spec.initContainers;
    pod.spec.volumes = pod.spec.volumes.filter((volume: { name: string }) => volume.name !== "meshward-token");
    change(pod);
  });


/**
 * An AdmissionReview v1 for an UPDATE of the pod `orders-7d9f` in `shop`, as k8s.io/api/admission/v1
 * has it: of the Pod itself, or of its `ephemeralcontainers` subresource (`kind` the objects' kind:
 * "Pod", or "EphemeralContainers" before Kubernetes 1.22). `request` overrides request fields.
 */
export const podUpdateReview = (
  uid: string,
  oldObject: unknown,
  object: unknown,
  options: { readonly subResource?: "ephemeralcontainers"; readonly kind?: "Pod" | "EphemeralContainers"; readonly request?: Record<string, unknown> } = {},
) => {
  const kind = { group: "", version: "v1", kind: options.kind ?? "Pod" };
  const resource = { group: "", version: "v1", resource: "pods" };
  const sub = options.subResource === undefined ? {} : { subResource: options.subResource, requestSubResource: options.subResource };
  return {
    apiVersion: "admission.k8s.io/v1",
    kind: "AdmissionReview",
    request: {
      uid,
      kind,
      resource,
      requestKind: kind,
      requestResource: resource,
      ...sub,
      name: "orders-7d9f",
      namespace: "shop",
      operation: "UPDATE",
      userInfo: { username: "dev@example.com", groups: ["system:authenticated"] },
      object,
      oldObject,
      dryRun: false,
      options: { kind: "UpdateOptions", apiVersion: "meta.k8s.io/v1" },
      ...options.request,
    },
  };
};
