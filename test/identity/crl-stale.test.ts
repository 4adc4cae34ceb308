import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatCertificateTime } from "../../src/util/duration.ts";
import { initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { createIdentity, type CaIdentitySource } from "../../src/identity/ca-source.ts";
import * as instrument from "../../src/identity/instrument.ts";
import { parseCrl, type ParsedCrl } from "../../src/pki/crl.ts";
import { createMeshMetrics, createMetrics } from "../../src/telemetry/metrics.ts";
import { connectMtls, createMtlsServer } from "../../src/transport/index.ts";
import { capturingLogger } from "../helpers/ca-server.ts";
import { FakeClock } from "../helpers/fake-clock.ts";
import { until, waitFor } from "../helpers/wait.ts";
import { makeLogger } from "../transport/fixtures.ts";

// Review (stale CRL / root removal, finding 1): a workload whose CRL went past its nextUpdate (the
// CA down, or no replica re-signing) kept enforcing it, which is right, but said nothing: no
// metric held the nextUpdate, no log line, no readiness detail, and MeshwardRevocationListBehind
// compares with the CA's figure, which is just as old.
//
// A real CA signs the CRL that revokes a peer with its clock 25 h behind (CRL_VALIDITY_MS is 24 h),
// so the workload takes a CRL already past its nextUpdate; then the CA goes down. The workload
// under test ("api") runs on a FakeClock (src/util/clock.ts's Clock) that starts at the real time
// and moves only when the test says: its bundle refreshes run when the test advances it, not on a
// real timer. (Its peers' certificates are real, so the clock starts at the real time.)
const TD = "stale.test";
const HOUR = 3_600_000;
const REFRESH_MS = 60_000;
const logger = makeLogger();
const captured = capturingLogger();

let work: string;
let ca: CaServer | undefined;
let offset = 0;
const identities: CaIdentitySource[] = [];
let clock: FakeClock;
let api: CaIdentitySource;
let evil: CaIdentitySource;
let good: CaIdentitySource;
let evilSerial: string;
let held: ParsedCrl;

async function identityFor(app: string, extra: { clock?: FakeClock; logger?: typeof captured.logger } = {}): Promise<CaIdentitySource> {
  const { token } = await issueJoinToken(ca!.store, { spiffeId: `spiffe://${TD}/ns/default/${app}`, ttlMs: 60_000 });
  const identity = createIdentity({
    ca: ca!.address,
    bundlePem: readFileSync(join(work, "ca", "bundle.pem"), "utf8"),
    token,
    bundleRefreshMs: extra.clock ? REFRESH_MS : HOUR,
    ...(extra.clock ? { clock: extra.clock } : {}),
    ...(extra.logger ? { logger: extra.logger } : {}),
  });
  identities.push(identity);
  await identity.ready();
  return identity;
}

const staleLines = () => captured.logged.filter((line) => line.includes('"event":"crl-stale"'));

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "meshward-crl-stale-"));
  await initAnchors({ dir: join(work, "ca"), trustDomain: TD, now: new Date() });
  ca = await startCaServer({
    dir: join(work, "ca"),
    config: caConfigSchema.parse({ listen: "127.0.0.1:0", signingWorkers: 0, crlRefresh: "100ms" }),
    clock: () => new Date(Date.now() + offset),
    logger: capturingLogger().logger,
  });
  clock = new FakeClock(Date.now());
  api = await identityFor("api", { clock, logger: captured.logger });
  evil = await identityFor("evil");
  good = await identityFor("good");
  evilSerial = evil.current()!.svid.serial;

  offset = -25 * HOUR;
  await ca.store.revoke({ serial: evilSerial, revokedAt: new Date(Date.now() + offset), reason: "keyCompromise" });
  // The CA's CRL refresh (every 100 ms) signs the CRL listing evil; the workload fetches it.
  await until("the workload to take the CRL revoking evil", 15_000, async () => {
    await api.refreshBundle();
    return api.current()?.bundle.revokedSerials.has(evilSerial) === true ? true : undefined;
  });
  offset = 0;
  await ca.close(); // no replica re-signs from here
  ca = undefined;
  held = parseCrl(api.current()!.bundle.crls![0]!);
});
afterAll(async () => {
  for (const identity of identities) await identity.close();
  await ca?.close();
  rmSync(work, { recursive: true, force: true });
});

describe("a workload whose CRL is past its nextUpdate (the CA down)", () => {
  it("holds a CRL past its nextUpdate on its own clock", () => {
    expect(held.nextUpdate!.getTime()).toBeLessThan(clock.now());
    expect(held.revokedSerials.has(evilSerial)).toBe(true);
  });

  it("keeps enforcing it: the peer it revokes is refused, the others are served", async () => {
    const server = await createMtlsServer({ identity: api, logger }, (socket: TLSSocket) => socket.end("hi"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    const answer = async (identity: CaIdentitySource) => {
      const socket = await connectMtls({ identity, expect: `spiffe://${TD}/ns/default/api`, port, logger, resumeSessions: false });
      return new Promise<string>((resolve) => {
        let text = "";
        socket.on("data", (d: Buffer) => (text += d.toString()));
        socket.on("error", () => undefined);
        socket.on("close", () => resolve(text));
      });
    };
    try {
      expect(await answer(evil)).toBe("");
      expect(await answer(good)).toBe("hi");
    } finally {
      await server.meshward.close();
    }
  });

  it("exports its nextUpdate (meshward_crl_next_update_timestamp_seconds{kind=\"workload\"}), which the alert compares with the time", async () => {
    const metrics = createMetrics();
    const stop = instrument.instrumentIdentity(api, createMeshMetrics(metrics));
    stop();
    expect(await metrics.text()).toContain(`meshward_crl_next_update_timestamp_seconds{kind="workload"} ${held.nextUpdate!.getTime() / 1000}`);
  });

  it("logs crl-stale once, as an error, however many refreshes fail while the CA stays down, and keeps the revocation", async () => {
    const failures = () => captured.logged.filter((line) => line.includes('"event":"bundle-refresh-failed"')).length;
    const before = failures();
    for (let i = 1; i <= 3; i++) {
      await clock.advance(REFRESH_MS); // the bundle refresh timer fires; the CA refuses the connection
      await waitFor(`failed refresh ${i}`, () => failures() >= before + i, 15_000, 20);
    }
    const lines = staleLines();
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0]!) as { level: number; msg: string };
    expect(line.level).toBe(50); // pino's error
    expect(line.msg).toContain(`past its nextUpdate ${formatCertificateTime(held.nextUpdate!)}`);
    expect(line.msg).toContain("its revocations are still enforced");
    expect(api.current()!.bundle.revokedSerials.has(evilSerial)).toBe(true);
  });

  it("staleCrlWarning, which readiness shows, says so from nextUpdate on, and nothing before", () => {
    const bundle = api.current()!.bundle;
    expect(instrument.staleCrlWarning(bundle, held.nextUpdate!.getTime())).toMatch(/^WARNING: the CRL in force \(signed .*\) is past its nextUpdate .*; its revocations are still enforced/);
    expect(instrument.staleCrlWarning(bundle, held.nextUpdate!.getTime() - 1)).toBeUndefined();
    expect(instrument.staleCrlWarning({ ...bundle, crls: [] }, clock.now())).toBeUndefined();
  });
});
