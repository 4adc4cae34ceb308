/** Builders for the YAML examples attached to rules (they double as the rules' test cases). */

export function componentYaml(type: string, metadata: Record<string, string>, name = "statestore"): string {
  const items = Object.entries(metadata)
    .map(([key, value]) => `  - name: ${key}\n    value: ${JSON.stringify(value)}`)
    .join("\n");
  return `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: ${name}
spec:
  type: ${type}
  version: v1
  metadata:
${items}
`;
}

export function secretRefYaml(name: string, secret: string): string {
  return `  - name: ${name}\n    secretKeyRef:\n      name: ${secret}\n      key: ${name}\n`;
}

export function deploymentYaml(annotations: Record<string, string>, extraPodSpec = ""): string {
  const lines = Object.entries(annotations)
    .map(([key, value]) => `        ${key}: ${JSON.stringify(value)}`)
    .join("\n");
  return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels:
      app: orders
  template:
    metadata:
      labels:
        app: orders
      annotations:
${lines}
    spec:
${extraPodSpec}      containers:
        - name: orders
          image: ghcr.io/example/orders:1.0.0
          ports:
            - containerPort: 8080
`;
}

/** A Dapr-enabled workload's annotations that satisfy every sidecar rule. */
export const SECURE_DAPR_ANNOTATIONS: Readonly<Record<string, string>> = {
  "dapr.io/enabled": "true",
  "dapr.io/app-id": "orders",
  "dapr.io/app-port": "8443",
  "dapr.io/app-protocol": "https",
  "dapr.io/api-token-secret": "dapr-api-token",
  "dapr.io/app-token-secret": "app-api-token",
};
