import { parseSpiffeId } from "../../spiffe/id.ts";

/**
 * The DNS names Dapr Sentry puts in the certificates of its own control-plane services, and only
 * theirs (dapr/dapr pkg/sentry/server/server.go, signCertificate): for an app id in Sentry's own
 * namespace (security.CurrentNamespace()),
 *   dapr-injector  → dapr-sidecar-injector.<ns>.svc   (the injector serves its admission webhook
 *                    with this certificate: pkg/injector/service/injector.go)
 *   dapr-operator  → dapr-webhook.<ns>.svc             (the operator's conversion webhook)
 *   dapr-scheduler → dapr-scheduler-server-{0,1,2}.dapr-scheduler-server.<ns>.svc.cluster.local
 *                    (the scheduler's embedded etcd peers check these: pkg/scheduler/server/internal/etcd/config.go)
 * Sentry adds them itself, whatever the CSR asks; so does meshward, for the identity attestation
 * proved. Sentry's namespace is the one in the CA's serving SPIFFE ID when that ID is Sentry's
 * (spiffe://<td>/ns/<ns>/dapr-sentry); a CA serving under another ID is not Dapr's Sentry, and
 * no identity gets these names.
 */
export function daprControlPlaneDnsNames(spiffeId: string, servingSpiffeId: string | undefined): readonly string[] {
  if (servingSpiffeId === undefined) return [];
  const sentry = parseSpiffeId(servingSpiffeId).segments;
  if (sentry.length !== 3 || sentry[0] !== "ns" || sentry[2] !== "dapr-sentry") return [];
  const namespace = sentry[1]!;
  const workload = parseSpiffeId(spiffeId).segments;
  if (workload.length !== 3 || workload[0] !== "ns" || workload[1] !== namespace) return [];
  switch (workload[2]) {
    case "dapr-injector":
      return [`dapr-sidecar-injector.${namespace}.svc`];
    case "dapr-operator":
      return [`dapr-webhook.${namespace}.svc`];
    case "dapr-scheduler":
      return [0, 1, 2].map((i) => `dapr-scheduler-server-${i}.dapr-scheduler-server.${namespace}.svc.cluster.local`);
    default:
      return [];
  }
}
