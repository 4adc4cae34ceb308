import { createServer, type Server } from "node:http";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { caLayout, initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { sidecarConfigSchema } from "../../src/config/sidecar.ts";
import { createIdentity, type CaIdentitySource } from "../../src/identity/ca-source.ts";
import { startSidecar } from "../../src/proxy/sidecar.ts";
import { openPostgresStore } from "../../src/store/postgres.ts";
import { runCli } from "../helpers/cli.ts";
import { bundleRootCount, svidChainsTo } from "../helpers/identity-checks.ts";
import { startPostgres, type RunningPostgres } from "../helpers/postgres.ts";
import { callThroughOutbound } from "../proxy/fixtures.ts";

// Issue 17: root rotation prepare → activate → retire runs through the store (the admin CLI with
// --store, as an operator would) while a client calls through a sidecar pair the whole time,
// against three CA replicas on PostgreSQL, each with its own copy of the CA directory. The CA
// replicas run in this process (startCaServer) to keep the test light; test/e2e/ca-ha.test.ts
// runs them as separate processes.
const TD = "ha-rotation.test";
const PASSPHRASE = "rotate through the store";
const silent = pino({ level: "silent" });

async function waitFor(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("root rotation through the shared store with three replicas, traffic through a sidecar pair", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-ha-rotation-"));
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  let pgServer: RunningPostgres | undefined;

  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
    await pgServer?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("prepare → activate → retire with --store: zero failed requests, every workload ends on the new root", async () => {
    pgServer = await startPostgres();
    const store = await pgServer.createDatabase("ha_rotation");
    const original = join(work, "ca");
    await initAnchors({ dir: original, trustDomain: TD, now: new Date(), passphrase: PASSPHRASE });
    const passphraseFile = join(work, "passphrase");
    writeFileSync(passphraseFile, PASSPHRASE, { mode: 0o600 });
    const replicas: CaServer[] = [];
    for (let i = 0; i < 3; i += 1) {
      const dir = join(work, `replica-${i}`);
      cpSync(original, dir, { recursive: true });
      const config = caConfigSchema.parse({ listen: "127.0.0.1:0", store, workloadTtl: "1h", anchorPoll: "200ms", crlRefresh: "200ms" });
      const replica = await startCaServer({ dir, config, logger: silent, passphrase: PASSPHRASE });
      cleanups.push(() => replica.close());
      replicas.push(replica);
    }
    const caList = replicas.map((r) => r.address).join(",");
    const bundlePem = readFileSync(caLayout(original).bundle, "utf8");
    const identities: CaIdentitySource[] = [];
    const identity = async (appId: string) => {
      const { token } = await issueJoinToken(replicas[0]!.store, { spiffeId: `spiffe://${TD}/ns/shop/${appId}`, ttlMs: 600_000 });
      const source = createIdentity({ ca: caList, bundlePem, token, bundleRefreshMs: 200, backoff: { initialMs: 100, maxMs: 500 }, logger: silent });
      cleanups.push(() => source.close());
      await source.ready();
      identities.push(source);
      return source;
    };
    const app = async (name: string) => {
      const server: Server = createServer((req, res) => res.end(`${name} saw ${req.headers["x-forwarded-client-cert"] ?? ""}`));
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      cleanups.push(() => new Promise((r) => { server.close(r); server.closeAllConnections(); }));
      return (server.address() as AddressInfo).port;
    };
    const sidecar = async (appId: string, appPort: number, extra: Record<string, unknown>) => {
      const config = sidecarConfigSchema.parse({ appId, namespace: "shop", ca: caList, bundle: caLayout(original).bundle, inbound: "127.0.0.1:0", app: `127.0.0.1:${appPort}`, ...extra });
      const s = await startSidecar(config, { logger: silent, identity: await identity(appId) });
      cleanups.push(() => s.close());
      return s;
    };
    const b = await sidecar("backend", await app("backend"), {});
    const a = await sidecar("frontend", await app("frontend"), { outbound: "127.0.0.1:0", peers: { backend: `127.0.0.1:${b.addresses.inbound!.port}` } });

    let ok = 0;
    const failures: string[] = [];
    let running = true;
    const traffic = (async () => {
      while (running) {
        try {
          const r = await callThroughOutbound(a.addresses.outbound!.port, "backend");
          if (r.status === 200 && r.body.includes(`spiffe://${TD}/ns/shop/frontend`)) ok += 1;
          else failures.push(`${r.status} ${r.body.slice(0, 200)}`);
        } catch (error) {
          failures.push((error as Error).message);
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const more = async (n = 20) => {
      const target = ok + n;
      await waitFor(() => ok >= target || failures.length > 0, `${n} more requests`);
    };
    const admin = async (...args: string[]) => {
      const r = await runCli([...args, "--dir", join(work, "replica-0"), "--store", store]);
      expect(r.code, r.stderr).toBe(0);
    };
    const sharedFile = async (name: string) => {
      const db = openPostgresStore({ connectionString: store });
      try {
        return (await db.readCaFiles()).files.get(name) ?? undefined;
      } finally {
        await db.close();
      }
    };
    let newRoot = "";
    try {
      await more();
      await admin("ca", "rotate-root", "prepare", "--passphrase-file", passphraseFile);
      newRoot = (await sharedFile("root.next.pem"))!;
      expect(newRoot).toMatch(/BEGIN CERTIFICATE/);
      await waitFor(() => identities.every((s) => bundleRootCount(s) === 2), "the two-root bundle everywhere");
      await more();
      await admin("ca", "rotate-root", "activate", "--reissue", "--passphrase-file", passphraseFile);
      await waitFor(() => identities.every((s) => svidChainsTo(s, newRoot)), "every workload on the new root");
      await more();
      await admin("ca", "rotate-root", "retire");
      await waitFor(() => identities.every((s) => bundleRootCount(s) === 1), "the old root gone from every bundle");
      await more(40);
    } finally {
      running = false;
      await traffic;
    }
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(100);
    expect(await sharedFile("bundle.pem")).toBe(newRoot);
    for (const s of identities) expect(svidChainsTo(s, newRoot)).toBe(true);
    // The copies of the CA directory were never written: the original bundle is still there.
    for (let i = 0; i < 3; i += 1) expect(readFileSync(caLayout(join(work, `replica-${i}`)).bundle, "utf8")).toBe(bundlePem);
  }, 180_000);
});
