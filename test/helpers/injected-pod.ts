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

