import type { X509Certificate } from "node:crypto";
import { stringify } from "yaml";
import { MeshwardError } from "../errors.ts";
import { toPem } from "../pki/pem.ts";
import { trustBundleVersion } from "../telemetry/bundle-version.ts";

/**
 * Dapr's trust bundle, from this CA's roots, in the shape Dapr reads it (upstream dapr/dapr,
 * read for this; test/dapr/dapr-trust-bundle-cli.test.ts cites the same files):
 *
 * - `charts/dapr/charts/dapr_sentry/templates/dapr_sentry_deployment.yaml`: a ConfigMap and a
 *   Secret, both named `dapr-trust-bundle` in the Dapr control-plane namespace (the release's),
 *   labelled `app: dapr-sentry`. The ConfigMap's `data` holds `ca.crt` (the trust anchors, PEM);
 *   the Secret's holds `ca.crt`, `issuer.crt` and `issuer.key` (base64, as every Secret).
 * - `pkg/sentry/server/ca/kube.go`: Sentry is the one that reads the Secret (its issuer key pair
 *   and anchors) and writes the anchors to the ConfigMap too, "which contains public root
 *   certificate for other components".
 * - `pkg/injector/service/config.go` and `cmd/injector/app/app.go`: the injector takes the
 *   anchors it puts into each daprd (`DAPR_TRUST_ANCHORS`, `pkg/injector/patcher/sidecar_container.go`)
 *   from its trust anchors file (`DAPR_TRUST_ANCHORS_FILE`), not from the Secret;
 *   `pkg/security/consts/consts.go` names the control plane's default path
 *   `/var/run/secrets/dapr.io/tls/ca.crt`, and `pkg/operator/trustbundlesync.go` copies the
 *   `dapr-trust-bundle` ConfigMap ("Pods mount this ConfigMap as their trust anchor source").
 *
 * So with meshward serving in Sentry's place only the anchors are needed, and only in the
 * ConfigMap. The Secret is written only when asked (`secret`), for tools that still read its
 * `ca.crt` (Dapr's injector before 1.12 did: `--issuer-ca-secret-key`), and then with `ca.crt`
 * alone: issuer key material is never part of this output.
 */
export const DAPR_TRUST_BUNDLE_NAME = "dapr-trust-bundle";
/** The data key of the anchors, in the ConfigMap and the Secret alike. */
export const DAPR_TRUST_ANCHORS_KEY = "ca.crt";
/** The chart's label on both objects. */
export const DAPR_TRUST_BUNDLE_LABELS = { app: "dapr-sentry" } as const;

/** A Kubernetes namespace name: an RFC 1123 label. */
const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** The roots as Dapr wants them: PEM, one CERTIFICATE block each, in the bundle's order. */
export function daprTrustAnchorsPem(roots: readonly X509Certificate[]): string {
  if (roots.length === 0) throw new MeshwardError("E_CA_CORRUPT", "the CA's trust bundle holds no root: there are no trust anchors to publish");
  return roots.map((root) => toPem(root.raw, "CERTIFICATE")).join("");
}

export interface DaprTrustBundleOptions {
  readonly roots: readonly X509Certificate[];
  /** Dapr's control-plane namespace. */
  readonly namespace: string;
  /** Also the Secret, with `ca.crt` only. */
  readonly secret: boolean;
}

/** The manifests (multi-document YAML) that `kubectl apply -f -` takes. */
export function daprTrustBundleManifests(options: DaprTrustBundleOptions): string {
  if (!NAMESPACE.test(options.namespace)) {
    throw new MeshwardError("E_USAGE", `--namespace ${JSON.stringify(options.namespace)} is not a Kubernetes namespace name (lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit)`);
  }
  const pem = daprTrustAnchorsPem(options.roots);
  const version = trustBundleVersion(options.roots.map((root) => root.fingerprint256));
  // A fresh object per document: one object used twice would come out as a YAML alias.
  const metadata = () => ({ name: DAPR_TRUST_BUNDLE_NAME, namespace: options.namespace, labels: { ...DAPR_TRUST_BUNDLE_LABELS } });
  const documents: object[] = [{ apiVersion: "v1", kind: "ConfigMap", metadata: metadata(), data: { [DAPR_TRUST_ANCHORS_KEY]: pem } }];
  if (options.secret) {
    documents.push({ apiVersion: "v1", kind: "Secret", metadata: metadata(), type: "Opaque", data: { [DAPR_TRUST_ANCHORS_KEY]: Buffer.from(pem).toString("base64") } });
  }
  const header = [
    `# Dapr's trust anchors from meshward's CA: ${options.roots.length} root${options.roots.length === 1 ? "" : "s"}, trust bundle version ${version}`,
    ...options.roots.map((root) => `#   SHA-256 ${root.fingerprint256}`),
  ].join("\n");
  return `${header}\n${documents.map((document) => stringify(document, { lineWidth: 0 })).join("---\n")}`;
}
