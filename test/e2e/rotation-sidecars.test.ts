import { createServer, type Server } from "node:http";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { caLayout, initAnchors } from "../../src/ca/anchors.ts";
import { activateRoot, prepareRoot, retireRoot, rotateIssuer } from "../../src/ca/rotation.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { sidecarConfigSchema } from "../../src/config/sidecar.ts";
import { createIdentity, type CaIdentitySource } from "../../src/identity/ca-source.ts";
import { certificatesFromPem, toPem } from "../../src/pki/pem.ts";
import { startSidecar, type Sidecar } from "../../src/proxy/sidecar.ts";
import { callThroughOutbound, withInbound, type SidecarWithApp } from "../proxy/fixtures.ts";
import { createHttpsServer } from "../../src/transport/index.ts";
import { bundleRootCount, svidChainsTo } from "../helpers/identity-checks.ts";

// Issue 6's proof: two services behind sidecars and one SDK service exchange requests the
// whole time while the issuer and then the root rotate, with the CA down between steps.
const TD = "mesh.test";
const silent = pino({ level: "silent" });
// The identities' own log lines, kept so that a timeout says what each workload was doing.
const identityLog: string[] = [];
const identityLogger = pino({ level: "info" }, { write: (line: string) => void (identityLog.push(line) > 300 && identityLog.shift()) });

async function waitFor(condition: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; the identities' last log lines:\n${identityLog.slice(-20).join("")}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("zero failed requests through issuer and root rotation (sidecars + SDK service)", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-rotation-e2e-"));
  const dir = join(work, "ca");
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  let ca: CaServer | undefined;
  let port = 0;

  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
    await ca?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it("keeps every request working and ends on the new root", async () => {
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    const startCa = async () => {
      ca = await startCaServer({ dir, config: caConfigSchema.parse({ listen: `127.0.0.1:${port}`, workloadTtl: "1h", anchorPoll: "100ms", crlRefresh: "200ms" }), logger: silent });
      port = ca.port;
    };
    await startCa();
    const bundlePem = readFileSync(caLayout(dir).bundle, "utf8");
    const identities: CaIdentitySource[] = [];
    const identity = async (appId: string) => {
      const { token } = await issueJoinToken(ca!.store, { spiffeId: `spiffe://${TD}/ns/shop/${appId}`, ttlMs: 600_000 });
      const source = createIdentity({ ca: `127.0.0.1:${port}`, bundlePem, token, bundleRefreshMs: 200, backoff: { initialMs: 100, maxMs: 500 }, logger: identityLogger.child({ appId }) });
      cleanups.push(() => source.close());
      await source.ready();
      identities.push(source);
      return source;
    };
    const app = async (name: string): Promise<number> => {
      const server: Server = createServer((req, res) => res.end(`${name} saw ${req.headers["x-forwarded-client-cert"] ?? ""}`));
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      cleanups.push(() => new Promise((r) => { server.close(r); server.closeAllConnections(); }));
      return (server.address() as AddressInfo).port;
    };
    const sidecar = async (appId: string, appPort: number, extra: Record<string, unknown>): Promise<SidecarWithApp> => {
      const config = sidecarConfigSchema.parse({ appId, namespace: "shop", ca: `127.0.0.1:${port}`, bundle: caLayout(dir).bundle, inbound: "127.0.0.1:0", app: `127.0.0.1:${appPort}`, ...extra });
      const s = withInbound(await startSidecar(config, { logger: silent, identity: await identity(appId) }));
      cleanups.push(() => s.close());
      return s;
    };

    const b = await sidecar("backend", await app("backend"), {});
    const sdkIdentity = await identity("billing");
    const sdk = await createHttpsServer({ identity: sdkIdentity, logger: silent }, (req, res) => res.end(`billing saw ${req.peer.spiffeId}`));
    await new Promise<void>((r) => sdk.listen(0, "127.0.0.1", r));
    cleanups.push(() => sdk.meshward.close());
    const a = await sidecar("frontend", await app("frontend"), {
      outbound: "127.0.0.1:0",
      peers: { backend: `127.0.0.1:${b.addresses.inbound.port}`, billing: `127.0.0.1:${(sdk.address() as AddressInfo).port}` },
    });
    const outbound = a.addresses.outbound!.port;

    let ok = 0;
    const failures: string[] = [];
    let running = true;
    const traffic = (async () => {
      for (let i = 0; running && i < 100_000; i++) {
        for (const target of ["backend", "billing"]) {
          try {
            const r = await callThroughOutbound(outbound, target);
            if (r.status === 200 && r.body.includes(`spiffe://${TD}/ns/shop/frontend`)) ok += 1;
            else failures.push(`${target}: ${r.status} ${r.body.slice(0, 200)}`);
          } catch (error) {
            failures.push(`${target}: ${(error as Error).message}`);
          }
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const more = async (n = 20) => {
      const target = ok + n;
      await waitFor(() => ok >= target || failures.length > 0, `${n} more requests`);
    };
    try {
      await more();
      const issuer = await rotateIssuer({ dir, now: new Date() });
      await new Promise((r) => setTimeout(r, 300));
      for (const s of identities) await s.renewNow();
      await waitFor(() => identities.every((s) => new X509Certificate(certificatesFromPem(s.current()!.svid.certChainPem)[1] as Buffer).fingerprint256 === issuer.fingerprint256), "every workload to use the new issuer");
      await more();

      const newRoot = toPem((await prepareRoot({ dir, now: new Date() })).raw, "CERTIFICATE");
      await waitFor(() => identities.every((s) => bundleRootCount(s) === 2), "the two-root bundle everywhere");
      await more();
      await ca!.close(); // the CA is down between steps; traffic must not notice
      ca = undefined;
      await more();
      await startCa();
      await activateRoot({ dir, now: new Date(), reissue: true });
      await waitFor(() => identities.every((s) => svidChainsTo(s, newRoot)), "every workload on the new root");
      await more();
      await retireRoot({ dir, store: ca!.store, now: new Date() });
      await waitFor(() => identities.every((s) => bundleRootCount(s) === 1), "the old root gone from every bundle");
      await more(40);
    } finally {
      running = false;
      await traffic;
    }
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(150);
    const finalRoot = readFileSync(caLayout(dir).bundle, "utf8");
    for (const s of identities) expect(svidChainsTo(s, finalRoot)).toBe(true);
  }, 120_000);
});
