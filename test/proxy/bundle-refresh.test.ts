import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { prepareRoot } from "../../src/ca/rotation.ts";
import { sidecarConfigSchema } from "../../src/config/sidecar.ts";
import { startHttpApp, type HttpApp } from "../helpers/app-servers.ts";
import { startMeshCa, startTestSidecar, type MeshCa } from "./fixtures.ts";

// bundleRefreshInterval: a root the CA adds (rotate-root prepare) reaches a running sidecar
// within the interval, seen on its status page; nonsense intervals are refused.
describe("sidecar bundle refresh", () => {
  let ca: MeshCa;
  let app: HttpApp;
  let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startHttpApp();
    sidecar = await startTestSidecar(ca, { appId: "refresh", app: `127.0.0.1:${app.port}`, bundleRefreshInterval: "1s" });
  });
  afterAll(async () => {
    await sidecar?.close();
    await app?.close();
    await ca?.close();
  });

  const roots = async () => ((await (await fetch(`http://127.0.0.1:${sidecar.addresses.status!.port}/status.json`)).json()) as { roots: { fingerprint: string }[] }).roots;

  it("picks up a root added by rotate-root prepare within the interval, without a restart", async () => {
    expect(await roots()).toHaveLength(1);
    const next = await prepareRoot({ dir: join(ca.dir, "ca"), now: new Date() });
    const deadline = Date.now() + 10_000;
    let seen = await roots();
    while (seen.length < 2 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      seen = await roots();
    }
    expect(seen.map((r) => r.fingerprint)).toContain(next.fingerprint256);
  });

  it("refuses an interval under one second or one that is not a duration", () => {
    const base = { appId: "x", ca: "127.0.0.1:1", bundle: "b.pem", inbound: "127.0.0.1:0", app: "127.0.0.1:1" };
    expect(sidecarConfigSchema.safeParse({ ...base, bundleRefreshInterval: "500ms" }).error?.issues[0]?.message).toBe("bundle refresh interval: at least 1s");
    expect(sidecarConfigSchema.safeParse({ ...base, bundleRefreshInterval: "often" }).success).toBe(false);
    expect(sidecarConfigSchema.parse(base).bundleRefreshInterval).toBe(60_000);
  });
});
