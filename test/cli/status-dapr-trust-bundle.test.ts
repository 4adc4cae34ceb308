import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.ts";

/**
 * `meshward status --status-url` on a CA's status port says when its upkeep of Dapr's
 * dapr-trust-bundle ConfigMap fails (status.json daprTrustBundle, src/ca/dapr-trust-bundle-sync.ts),
 * beside its health: the row stays healthy and the exit code 0, as /readyz stays 200 (never fatal,
 * as for Dapr Sentry). The endpoint is a loopback node:http server serving a CA's feed.
 */
const now = Date.now();
let dapr: Record<string, unknown> | undefined;
const feed = () => ({
  component: "ca",
  name: "prod.example.com",
  identities: [{ spiffeId: "spiffe://prod.example.com/meshward/ca", serial: "01", notBefore: new Date(now - 3_600_000).toISOString(), notAfter: new Date(now + 86_400_000).toISOString(), kind: "workload" }],
  rotations: [],
  health: { ok: true, checks: { issuer: { ok: true } } },
  ...(dapr !== undefined ? { daprTrustBundle: dapr } : {}),
});

let server: Server;
let url: string;
beforeAll(async () => {
  server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(feed()));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
});

describe("meshward status and a CA's dapr-trust-bundle sync", () => {
  it("a failing sync is named in the CA's health column with its code, HTTP status, reason and count; still healthy, exit 0; nothing when in step", async () => {
    dapr = { namespace: "dapr-system", configMap: "dapr-trust-bundle", state: "failing", failures: 4, lastError: { at: new Date(now).toISOString(), code: "E_KUBERNETES_UNAVAILABLE", status: 403, reason: "Forbidden", message: "…" } };
    const failing = await runCli(["status", "--status-url", url, "--json"], { env: { MESHWARD_STATUS_TOKEN: "" } });
    expect(failing.code, failing.stderr).toBe(0);
    const [row] = JSON.parse(failing.stdout) as { healthy: boolean; health: string }[];
    expect(row).toMatchObject({ healthy: true, health: "healthy; dapr-trust-bundle failing in dapr-system: E_KUBERNETES_UNAVAILABLE HTTP 403 Forbidden (4 in a row, never in step since start)" });

    dapr = { ...dapr, state: "in-step", failures: 0, lastSuccessAt: new Date(now).toISOString(), resourceVersion: "812" };
    const inStep = await runCli(["status", "--status-url", url, "--json"], { env: { MESHWARD_STATUS_TOKEN: "" } });
    expect(inStep.code, inStep.stderr).toBe(0);
    expect((JSON.parse(inStep.stdout) as { health: string }[])[0]?.health).toBe("healthy");
  }, 60_000);
});
