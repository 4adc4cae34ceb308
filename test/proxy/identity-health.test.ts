import { Agent, request } from "node:https";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatCertificateTime } from "../../src/util/duration.ts";
import { sidecarConfigSchema } from "../../src/config/sidecar.ts";
import { createCrl } from "../../src/pki/crl.ts";
import { startSidecar } from "../../src/proxy/sidecar.ts";
import type { Sidecar } from "../../src/proxy/sidecar.ts";
import { startHttpApp } from "../helpers/app-servers.ts";
import type { HttpApp } from "../helpers/app-servers.ts";
import { createTestPki, manualIdentitySource } from "../helpers/test-pki.ts";
import type { ManualIdentitySource, TestPki } from "../helpers/test-pki.ts";
import { logCapture, metricValue, withInbound, type SidecarWithApp } from "./fixtures.ts";

// The identity is driven by hand (manualIdentitySource) so expiry and a CRL update happen on
// cue; the CA-backed source is covered by the other files.
describe("sidecar identity health: expiry, recovery and revocation", () => {
  let pki: TestPki;
  let app: HttpApp;
  let identity: ManualIdentitySource;
  let sidecar: SidecarWithApp;

  beforeAll(async () => {
    pki = await createTestPki({ trustDomain: "health.test" });
    app = await startHttpApp();
    identity = manualIdentitySource(pki.snapshot({ spiffeId: "spiffe://health.test/ns/default/svc" }));
    const config = sidecarConfigSchema.parse({ appId: "svc", ca: "127.0.0.1:1", bundle: "unused.pem", inbound: "127.0.0.1:0", app: `127.0.0.1:${app.port}`, status: "127.0.0.1:0" });
    sidecar = withInbound(await startSidecar(config, { logger: pino({ level: "info" }, logCapture()), identity }));
  });
  afterAll(async () => {
    await sidecar?.close();
    await app?.close();
  });

  const caller = (spiffeId: string) => {
    const svid = pki.issueSvid({ spiffeId });
    const agent = new Agent({
      keepAlive: true,
      maxSockets: 1,
      cert: svid.certChainPem,
      key: svid.privateKey.export({ format: "pem", type: "pkcs8" }) as string,
      ca: pki.rootPem,
      checkServerIdentity: () => undefined,
    });
    return { svid, agent };
  };
  const get = (agent: Agent) =>
    new Promise<{ status: number; socketReused: boolean }>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port: sidecar.addresses.inbound.port, path: "/x", agent }, (res) => {
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode ?? 0, socketReused: req.reusedSocket }));
      });
      req.on("error", reject);
      req.end();
    });
  const readyz = async () => (await fetch(`http://127.0.0.1:${sidecar.addresses.status!.port}/readyz`)).status;

  it("is not ready and refuses new connections while the SVID is expired, and recovers on the next one", async () => {
    const { agent } = caller("spiffe://health.test/ns/default/client");
    expect((await get(agent)).status).toBe(200);
    expect(await readyz()).toBe(200);
    identity.expire();
    expect(await readyz()).toBe(503);
    const fresh = caller("spiffe://health.test/ns/default/client2");
    await expect(get(fresh.agent)).rejects.toThrow();
    identity.rotate(pki.snapshot({ spiffeId: "spiffe://health.test/ns/default/svc" }));
    expect(await readyz()).toBe(200);
    expect((await get(fresh.agent)).status).toBe(200);
    agent.destroy();
    fresh.agent.destroy();
  });

  it("closes an open connection of a caller that gets revoked and refuses its new ones (counted as revoked)", async () => {
    const revoked = caller("spiffe://health.test/ns/default/revoked-client");
    const first = await get(revoked.agent);
    expect(first.status).toBe(200);
    expect((await get(revoked.agent)).socketReused).toBe(true);
    identity.updateBundle(pki.bundle({ revokedSerials: [revoked.svid.serial] }));
    await new Promise((resolve) => setTimeout(resolve, 50));
    // The pooled connection was closed by the sidecar: the next request needs a new one, which is refused.
    await expect(get(revoked.agent)).rejects.toThrow();
    const other = caller("spiffe://health.test/ns/default/fine-client");
    expect((await get(other.agent)).status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${sidecar.addresses.status!.port}/metrics`)).text();
    expect(metricValue(metrics, "meshward_tls_handshake_failures_total", { direction: "inbound", reason: "revoked" })).toBeGreaterThanOrEqual(1);
    revoked.agent.destroy();
    other.agent.destroy();
  });

  it("stays ready while the CRL in force is past its nextUpdate, keeps enforcing it, and says so in /readyz", async () => {
    const revoked = caller("spiffe://health.test/ns/default/stale-revoked");
    const other = caller("spiffe://health.test/ns/default/stale-fine");
    const HOUR = 3_600_000;
    const thisUpdate = new Date(Math.floor((Date.now() - 25 * HOUR) / 1000) * 1000); // whole seconds, as a CRL holds them
    const nextUpdate = new Date(thisUpdate.getTime() + 24 * HOUR);
    const crl = await createCrl({ signer: pki.issuer, entries: [{ serial: revoked.svid.serial, revokedAt: thisUpdate }], thisUpdate, nextUpdate, crlNumber: 7n });
    identity.updateBundle({ ...pki.bundle({ revokedSerials: [revoked.svid.serial] }), crls: [crl] });
    const res = await fetch(`http://127.0.0.1:${sidecar.addresses.status!.port}/readyz`);
    const body = (await res.json()) as { checks: Record<string, { ok: boolean; detail?: string }> };
    expect(res.status).toBe(200);
    expect(body.checks.identity!.ok).toBe(true);
    expect(body.checks.identity!.detail).toContain(`past its nextUpdate ${formatCertificateTime(nextUpdate)}`);
    expect(body.checks.identity!.detail).toContain("its revocations are still enforced");
    await expect(get(revoked.agent)).rejects.toThrow();
    expect((await get(other.agent)).status).toBe(200);
    // A current CRL: the warning goes.
    const fresh = await createCrl({ signer: pki.issuer, entries: [], thisUpdate: new Date(), nextUpdate: new Date(Date.now() + 24 * HOUR), crlNumber: 8n });
    identity.updateBundle({ ...pki.bundle(), crls: [fresh] });
    const after = (await (await fetch(`http://127.0.0.1:${sidecar.addresses.status!.port}/readyz`)).json()) as { checks: Record<string, { ok: boolean; detail?: string }> };
    expect(after.checks.identity!.detail).not.toContain("nextUpdate");
    revoked.agent.destroy();
    other.agent.destroy();
  });
});
