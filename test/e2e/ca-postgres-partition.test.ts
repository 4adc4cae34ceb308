import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { requestCertificate } from "../../src/identity/ca-client.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { startPostgres, type RunningPostgres } from "../helpers/postgres.ts";
import { partitionableProxy } from "../helpers/partitionable-proxy.ts";
import { until } from "../helpers/wait.ts";

// PostgreSQL reachable but silent (its host down, a partition, a firewall dropping packets): no
// connection is closed, nothing answers. Before, a sign request hung with its query, /readyz kept
// saying "store: reachable" (the CRL refresh never settled), and the leader poll stacked one lock
// attempt a second on the hung connection. Now each query fails after the store's query timeout,
// the CA answers with a store error, /readyz says the store is not ready, and once the network
// heals the CA is ready and issues again without a restart. The outage is a TCP proxy this test
// controls: it stops passing bytes either way (held, as the kernel holds them in a partition)
// and passes them again when the partition heals. Polling loops wait for observable states;
// nothing asserts how fast they happened.
const TD = "partition.test";

describe("the CA on PostgreSQL during a network partition", () => {
  let pgServer: RunningPostgres | undefined;
  let proxy: Awaited<ReturnType<typeof partitionableProxy>> | undefined;
  let work: string;
  let server: CaServer | undefined;
  let bundlePem: string;
  const logged: string[] = [];
  const warnings: string[] = [];
  const onWarning = (warning: Error) => warnings.push(warning.message);

  const readyz = async () => {
    const response = await fetch(`http://${server!.status!.host}:${server!.status!.port}/readyz`);
    return { status: response.status, body: (await response.json()) as { checks: { store: { ok: boolean; detail: string } } } };
  };
  /** A token made straight in PostgreSQL (not through the proxy), then a sign request with it. */
  const sign = async (appId: string, tokenStore: Parameters<typeof issueJoinToken>[0]) => {
    const { token } = await issueJoinToken(tokenStore, { spiffeId: `spiffe://${TD}/ns/shop/${appId}`, ttlMs: 600_000 });
    return requestCertificate(
      { address: server!.address, bundlePem, trustDomain: TD, timeoutMs: 45_000 },
      { csrPem: await createCsr({ keyPair: generateKeyPair() }), token, validator: "JOIN_TOKEN", namespace: "", appId: "" },
    );
  };

  beforeAll(async () => {
    process.on("warning", onWarning);
    pgServer = await startPostgres();
    const url = new URL(await pgServer.createDatabase("partition"));
    proxy = await partitionableProxy(Number(url.port));
    url.port = String(proxy.port);
    work = mkdtempSync(join(tmpdir(), "meshward-pg-partition-"));
    await initAnchors({ dir: join(work, "ca"), trustDomain: TD, now: new Date() });
    bundlePem = readFileSync(join(work, "ca", "bundle.pem"), "utf8");
    const config = caConfigSchema.parse({ listen: "127.0.0.1:0", store: url.toString(), signingWorkers: 0, status: "127.0.0.1:0", signRateLimit: false });
    const logger = pino({ level: "info" }, new Writable({ write: (chunk, _encoding, done) => (logged.push(String(chunk)), done()) }));
    server = await startCaServer({ dir: join(work, "ca"), config, logger });
  }, 90_000);

  afterAll(async () => {
    process.off("warning", onWarning);
    proxy?.heal();
    await server?.close();
    await proxy?.close();
    await pgServer?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("fails sign requests with a store error instead of hanging, reports the store not ready, and recovers when the network heals", async () => {
    expect((await sign("before", server!.store)).certChainPem).toContain("CERTIFICATE");
    expect(logged.some((line) => /"event":"ca-started"[^\n]*"leader":true/.test(line))).toBe(true);
    // The token for the request made during the outage is stored before it starts.
    const { token } = await issueJoinToken(server!.store, { spiffeId: `spiffe://${TD}/ns/shop/during`, ttlMs: 600_000 });

    proxy!.partition();
    const during = await requestCertificate(
      { address: server!.address, bundlePem, trustDomain: TD, timeoutMs: 45_000 },
      { csrPem: await createCsr({ keyPair: generateKeyPair() }), token, validator: "JOIN_TOKEN", namespace: "", appId: "" },
    ).then(
      () => "issued",
      (error: unknown) => `${(error as { code?: string }).code ?? ""}: ${String(error)}`,
    );
    // The CA answered (a store error), not the client's own timeout.
    expect(during).toMatch(/E_STORE_OPEN|did not answer/);
    const unready = await until("readyz saying the store is not ready", 30_000, async () => {
      const state = await readyz();
      return state.status === 503 && !state.body.checks.store.ok ? state : undefined;
    });
    expect(unready.body.checks.store.detail).not.toBe("reachable");
    // The leader poll waited for its attempt instead of stacking more on the hung connection.
    expect(warnings.filter((message) => /already executing a query/.test(message))).toEqual([]);

    proxy!.heal();
    await until("readyz ready again", 30_000, async () => ((await readyz()).status === 200 ? true : undefined));
    const after = await until("a certificate after the partition healed", 30_000, async () => (await sign("after", server!.store)).certChainPem);
    expect(after).toContain("CERTIFICATE");
  }, 180_000);
});
