import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { refusal } from "../helpers/refusal.ts";

// Dapr Sentry adds DNS names to the certificates of three of its control-plane services, and to
// no one else's (dapr/dapr pkg/sentry/server/server.go, signCertificate): for app ids in its own
// namespace (security.CurrentNamespace()), dapr-injector gets dapr-sidecar-injector.<ns>.svc (the
// Service of its admission webhook, which it serves with this certificate:
// pkg/injector/service/injector.go), dapr-operator gets dapr-webhook.<ns>.svc, dapr-scheduler gets
// dapr-scheduler-server-{0,1,2}.dapr-scheduler-server.<ns>.svc.cluster.local (its etcd peers:
// pkg/scheduler/server/internal/etcd/config.go). Without them the API server's host-name check of
// the webhook fails and pods are not injected. The CA adds them from the attested identity, as
// Sentry does server side; daprd's CSR asks for none.

const TD = "cluster.local";
const SENTRY_ID = `spiffe://${TD}/ns/dapr-system/dapr-sentry`;

async function startCa(servingSpiffeId: string | undefined): Promise<{ server: CaServer; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), "meshward-cp-dns-"));
  await initAnchors({ dir: join(dir, "ca"), trustDomain: TD, now: new Date() });
  const config = caConfigSchema.parse({
    listen: "127.0.0.1:0",
    signingWorkers: 0,
    defaultValidator: "insecure",
    allowInsecureDev: true,
    ...(servingSpiffeId !== undefined ? { servingSpiffeId } : {}),
  });
  return { server: await startCaServer({ dir: join(dir, "ca"), config, logger: pino({ level: "silent" }) }), dir };
}

describe("Dapr control-plane services get the DNS names Sentry gives them", () => {
  let sentry: { server: CaServer; dir: string };
  let meshwardCa: { server: CaServer; dir: string };

  beforeAll(async () => {
    sentry = await startCa(SENTRY_ID);
    meshwardCa = await startCa(undefined); // serving as spiffe://<td>/ns/meshward-system/meshward-ca
  });
  afterAll(async () => {
    for (const ca of [sentry, meshwardCa]) {
      await ca?.server.close();
      if (ca !== undefined) rmSync(ca.dir, { recursive: true, force: true });
    }
  });

  /** Signs for ns/<namespace>/<appId> (insecure validator: the request names the identity) and returns the leaf. */
  const leafFor = async (ca: CaServer, appId: string, namespace = "dapr-system", dnsNames: string[] = []) => {
    const result = await ca.authority.sign({
      csr: await createCsr({ keyPair: generateKeyPair(), ...(dnsNames.length > 0 ? { dnsNames } : {}) }),
      token: "",
      validator: undefined,
      appId,
      namespace,
      trustDomain: TD,
      peer: undefined,
    });
    return new X509Certificate(result.certificateChainPem.slice(0, result.certificateChainPem.indexOf("-----END CERTIFICATE-----") + 25));
  };
  const dnsOf = (leaf: X509Certificate) =>
    (leaf.subjectAltName ?? "")
      .split(", ")
      .filter((n) => n.startsWith("DNS:"))
      .map((n) => n.slice(4));

  it("dapr-injector: dapr-sidecar-injector.dapr-system.svc, which the API server's host-name check accepts", async () => {
    const leaf = await leafFor(sentry.server, "dapr-injector");
    expect(dnsOf(leaf)).toEqual(["dapr-sidecar-injector.dapr-system.svc"]);
    expect(leaf.checkHost("dapr-sidecar-injector.dapr-system.svc")).toBe("dapr-sidecar-injector.dapr-system.svc");
    expect(leaf.subjectAltName).toContain(`URI:spiffe://${TD}/ns/dapr-system/dapr-injector`);
  });

  it("dapr-operator: dapr-webhook.dapr-system.svc", async () => {
    expect(dnsOf(await leafFor(sentry.server, "dapr-operator"))).toEqual(["dapr-webhook.dapr-system.svc"]);
  });

  it("dapr-scheduler: its three etcd peer names", async () => {
    expect(dnsOf(await leafFor(sentry.server, "dapr-scheduler"))).toEqual([
      "dapr-scheduler-server-0.dapr-scheduler-server.dapr-system.svc.cluster.local",
      "dapr-scheduler-server-1.dapr-scheduler-server.dapr-system.svc.cluster.local",
      "dapr-scheduler-server-2.dapr-scheduler-server.dapr-system.svc.cluster.local",
    ]);
  });

  it("a CSR may ask for the name (signed once), not for any other", async () => {
    const leaf = await leafFor(sentry.server, "dapr-injector", "dapr-system", ["DAPR-SIDECAR-INJECTOR.dapr-system.svc"]);
    expect(dnsOf(leaf)).toEqual(["dapr-sidecar-injector.dapr-system.svc"]);
    const other = await refusal(leafFor(sentry.server, "dapr-injector", "dapr-system", ["kubernetes.default.svc"]), "signed a name Sentry does not give");
    expect(other.code).toBe("E_CSR_DNS_NOT_ALLOWED");
  });

  it("everyone else is as before: other app ids in dapr-system, the same app ids in another namespace, and every identity of a CA that is not serving as dapr-sentry", async () => {
    for (const appId of ["dapr-placement", "orders", "dapr-sidecar-injector"]) expect(dnsOf(await leafFor(sentry.server, appId))).toEqual([]);
    for (const appId of ["dapr-injector", "dapr-operator", "dapr-scheduler"]) {
      expect(dnsOf(await leafFor(sentry.server, appId, "default"))).toEqual([]);
      expect(dnsOf(await leafFor(meshwardCa.server, appId))).toEqual([]);
    }
    const asked = await refusal(leafFor(sentry.server, "dapr-injector", "default", ["dapr-sidecar-injector.default.svc"]), "signed a control-plane name outside the control-plane namespace");
    expect(asked.code).toBe("E_CSR_DNS_NOT_ALLOWED");
  });
});
