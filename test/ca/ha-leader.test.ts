import { cpSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import pg from "pg";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { fetchFromCa, requestCertificate } from "../../src/identity/ca-client.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { parseCrl } from "../../src/pki/crl.ts";
import { LEADER_LOCK_KEY } from "../../src/store/postgres-shared.ts";
import { partitionableProxy } from "../helpers/partitionable-proxy.ts";
import { startPostgres, type RunningPostgres } from "../helpers/postgres.ts";
import { until } from "../helpers/wait.ts";

// CA replicas on one PostgreSQL (review HA HIGH-1): a leader that goes silent (partitioned from
// the database, frozen) used to keep the leader lock for hours or for ever, so no replica signed
// revocations into a CRL while every other replica said it was ready. Now the silent leader's
// session ends after leaderTimeout and another replica leads; `meshward_ca_leader` says who
// leads, and /readyz warns (and stays ready) when revocations stay unsigned. Short configured timeouts; the waits
// are generous bounds on outcomes, not timing assertions. And (LOW-1) a replica's slow clock does
// not extend a join token's life: the database's clock counts too.
const TD = "ha-leader.test";

describe("CA replicas on PostgreSQL: leadership", () => {
  let pgServer: RunningPostgres;
  let work: string;
  let bundlePem: string;
  const started: CaServer[] = [];

  beforeAll(async () => {
    pgServer = await startPostgres();
    work = mkdtempSync(join(tmpdir(), "meshward-ha-leader-"));
    await initAnchors({ dir: join(work, "ca"), trustDomain: TD, now: new Date() });
    bundlePem = readFileSync(join(work, "ca", "bundle.pem"), "utf8");
  }, 90_000);

  afterAll(async () => {
    for (const server of started) await server.close();
    await pgServer?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  let replicas = 0;
  const replica = async (store: string, extra: { clock?: () => Date } = {}) => {
    replicas += 1;
    const dir = join(work, `ca-${replicas}`);
    cpSync(join(work, "ca"), dir, { recursive: true });
    const config = caConfigSchema.parse({
      listen: "127.0.0.1:0",
      status: "127.0.0.1:0",
      store,
      signingWorkers: 0,
      signRateLimit: false,
      leaderTimeout: "2s",
      crlRefresh: "200ms",
      anchorPoll: "200ms",
    });
    const logged: string[] = [];
    const logger = pino({ level: "info" }, new Writable({ write: (chunk, _encoding, done) => (logged.push(String(chunk)), done()) }));
    const server = await startCaServer({ dir, config, logger, ...extra });
    started.push(server);
    return { server, logged };
  };
  const leaderGauge = async (server: CaServer) => (await server.registry.getSingleMetric("meshward_ca_leader")?.get())?.values[0]?.value;
  const readyz = async (server: CaServer) => {
    const response = await fetch(`http://${server.status!.host}:${server.status!.port}/readyz`);
    return { status: response.status, body: (await response.json()) as { checks: Record<string, { ok: boolean; detail: string }> } };
  };
  const served = async (server: CaServer) => parseCrl(await fetchFromCa({ address: server.address, bundlePem, trustDomain: TD }, "/v1/crl")).revokedSerials;
  const revoke = async (server: CaServer, serial: string) => {
    expect(await server.store.revoke({ serial, revokedAt: new Date(), reason: "keyCompromise" })).toBe(true);
  };

  it("a leader partitioned from PostgreSQL is replaced: another replica leads (meshward_ca_leader 1) and signs the next revocation", async () => {
    const direct = await pgServer.createDatabase("partitioned_leader");
    const url = new URL(direct);
    const proxy = await partitionableProxy(Number(url.port));
    url.port = String(proxy.port);
    try {
      const a = await replica(url.toString());
      const b = await replica(direct);
      expect(await leaderGauge(a.server)).toBe(1);
      expect(await leaderGauge(b.server)).toBe(0);

      proxy.partition();
      await revoke(b.server, "0A11CE01");
      await until("B leading", 60_000, async () => ((await leaderGauge(b.server)) === 1 ? true : undefined));
      await until("the revocation in B's CRL", 60_000, async () => ((await served(b.server)).has("0A11CE01") ? true : undefined));
      // A stopped leading on its own: its lock check failed.
      await until("A not leading", 60_000, async () => ((await leaderGauge(a.server)) === 0 ? true : undefined));
      expect(b.logged.some((line) => line.includes('"event":"leader-elected"'))).toBe(true);
    } finally {
      proxy.heal();
      await proxy.close();
    }
  }, 180_000);

  it("with no replica leading, meshward_ca_leader is 0 and /readyz warns that the revocations are unsigned (still ready); once one leads the warning goes", async () => {
    const store = await pgServer.createDatabase("no_leader");
    // A first leader signs and publishes a CRL, then goes away.
    const first = await replica(store);
    expect(await leaderGauge(first.server)).toBe(1);
    await first.server.close();
    started.splice(started.indexOf(first.server), 1);
    // Someone else holds the leader lock (as a silent leader whose session PostgreSQL keeps).
    const squatter = new pg.Client({ connectionString: store });
    await squatter.connect();
    try {
      expect((await squatter.query<{ l: boolean }>("SELECT pg_try_advisory_lock($1) AS l", [LEADER_LOCK_KEY])).rows[0]?.l).toBe(true);
      const { server } = await replica(store);
      expect(await leaderGauge(server)).toBe(0);
      const before = await readyz(server);
      expect(before, JSON.stringify(before.body)).toMatchObject({ status: 200 });

      await revoke(server, "0B0B0B02");
      // Said in the crl check's detail; the replica stays ready (issuance works, and every replica
      // shares the condition: unready, the whole CA would leave its Service).
      const warned = await until("/readyz warning that the revocation is unsigned", 60_000, async () => {
        const state = await readyz(server);
        return /1 revocation\(s\) in the store .* no replica is signing CRLs/.test(state.body.checks["crl"]!.detail) ? state : undefined;
      });
      expect(warned.status).toBe(200);
      expect(warned.body.checks["crl"]!.ok).toBe(true);
      expect(warned.body.checks["crl"]!.detail).toMatch(/^WARNING: /);
      expect((await served(server)).has("0B0B0B02")).toBe(false);

      await squatter.query("SELECT pg_advisory_unlock_all()");
      await until("the replica leading", 60_000, async () => ((await leaderGauge(server)) === 1 ? true : undefined));
      await until("the revocation in its CRL", 60_000, async () => ((await served(server)).has("0B0B0B02") ? true : undefined));
      await until("the warning gone from /readyz", 60_000, async () => {
        const state = await readyz(server);
        return state.status === 200 && !state.body.checks["crl"]!.detail.startsWith("WARNING") ? true : undefined;
      });
    } finally {
      await squatter.end();
    }
  }, 180_000);
  it("a replica whose clock runs 10 minutes behind refuses a join token the database deems expired (E_TOKEN_EXPIRED), and spends nothing", async () => {
    const store = await pgServer.createDatabase("skewed_clock");
    const behindMs = 10 * 60_000;
    const { server } = await replica(store, { clock: () => new Date(Date.now() - behindMs) });
    const spiffeId = `spiffe://${TD}/ns/shop/late`;
    // Made 15 minutes ago with a 10-minute life: expired 5 minutes ago, valid for 5 more by the replica's clock.
    const { token } = await issueJoinToken(server.store, { spiffeId, ttlMs: 10 * 60_000, now: new Date(Date.now() - 15 * 60_000) });
    const outcome = await requestCertificate(
      { address: server.address, bundlePem, trustDomain: TD, timeoutMs: 30_000 },
      { csrPem: await createCsr({ keyPair: generateKeyPair() }), token, validator: "JOIN_TOKEN", namespace: "", appId: "" },
    ).then(
      () => "issued",
      (error: unknown) => (error as { code?: string }).code ?? String(error),
    );
    expect(outcome).toBe("E_TOKEN_EXPIRED");
    expect((await server.store.listTokens())[0]?.usesLeft).toBe(1);
    expect(await server.store.listIssuances({ spiffeId })).toEqual([]);
  }, 120_000);
});
