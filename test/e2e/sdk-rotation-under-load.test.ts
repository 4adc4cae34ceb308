import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIdentity, type CaIdentitySource } from "../../src/identity/ca-source.ts";
import { createHttpsServer, createMtlsAgent, httpsRequest, type MtlsAgent, type MtlsHttpsServer } from "../../src/transport/index.ts";
import { startMeshCa, TD, type MeshCa } from "../proxy/fixtures.ts";

// Issue 3's fault test: short-lived certificates from a real CA, an SDK HTTPS server and an SDK
// client, requests in a loop — zero failures, while both sides rotate several times. Every
// fifth request opens a new connection (a fresh handshake that must see the current
// certificates); the rest ride keep-alive connections that outlive the certificates they were
// opened with. The issue specified 20-second certificates for a minute (about five rotations a
// side); 10-second ones for 30 s give the same five or so rotations, and the same certificates
// outlived by the same connections, in half the time (the CA's floor is 5 s, MIN_WORKLOAD_TTL).
const RUN_MS = 30_000;
const WORKLOAD_TTL = "10s";
const SERVER_ID = `spiffe://${TD}/ns/shop/api`;

describe("SDK rotation under load (10 s certificates, 30 s of requests)", () => {
  let ca: MeshCa;
  let serverIdentity: CaIdentitySource;
  let clientIdentity: CaIdentitySource;
  let server: MtlsHttpsServer;
  let port: number;
  const agents: MtlsAgent[] = [];
  const silent = pino({ level: "silent" });

  beforeAll(async () => {
    ca = await startMeshCa({ workloadTtl: WORKLOAD_TTL });
    const make = async (appId: string) => createIdentity({ ca: ca.server.address, bundlePem: ca.bundlePem, namespace: "shop", appId, token: await ca.token("shop", appId), logger: silent });
    serverIdentity = await make("api");
    clientIdentity = await make("web");
    await Promise.all([serverIdentity.ready(), clientIdentity.ready()]);
    server = await createHttpsServer({ identity: serverIdentity, logger: silent }, (req, res) => res.end(JSON.stringify({ caller: req.peer.spiffeId, serial: req.peer.serial })));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    for (const agent of agents) agent.destroy();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server?.closeAllConnections();
    await serverIdentity?.close();
    await clientIdentity?.close();
    await ca?.close();
  });

  it("answers every request while both identities rotate", async () => {
    const rotations = { server: 0, client: 0 };
    serverIdentity.subscribe((e) => void (e.type === "rotated" && rotations.server++));
    clientIdentity.subscribe((e) => void (e.type === "rotated" && rotations.client++));
    const keepAlive = await createMtlsAgent({ identity: clientIdentity, expect: SERVER_ID, logger: silent });
    agents.push(keepAlive);
    const serverSerials = new Set<string>();
    const callerSerials = new Set<string>();
    const failures: string[] = [];
    let requests = 0;
    const deadline = Date.now() + RUN_MS;
    const worker = async (lane: number) => {
      for (let i = 0; Date.now() < deadline; i++) {
        let agent = keepAlive;
        if ((i + lane) % 5 === 0) {
          agent = await createMtlsAgent({ identity: clientIdentity, expect: SERVER_ID, logger: silent });
          agents.push(agent);
        }
        try {
          const res = await httpsRequest(`https://127.0.0.1:${port}/`, { identity: clientIdentity, expect: SERVER_ID, logger: silent, agent, timeoutMs: 10_000 });
          requests++;
          if (res.status !== 200) failures.push(`status ${res.status}`);
          const body = res.json<{ caller: string; serial: string }>();
          if (body.caller !== `spiffe://${TD}/ns/shop/web`) failures.push(`caller ${body.caller}`);
          callerSerials.add(body.serial);
          if (res.peer) serverSerials.add(res.peer.serial);
        } catch (error) {
          requests++;
          failures.push(`${(error as { code?: string }).code ?? ""} ${(error as Error).message}`);
        }
        if (agent !== keepAlive) {
          agent.destroy();
          agents.splice(agents.indexOf(agent), 1);
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    await Promise.all([0, 1, 2, 3].map(worker));

    expect(failures).toEqual([]);
    expect(requests).toBeGreaterThan(200);
    // Renewal at 40–60 % of 10 s: five to seven rotations in 30 s on each side.
    expect(rotations.server).toBeGreaterThanOrEqual(3);
    expect(rotations.client).toBeGreaterThanOrEqual(3);
    // New connections saw the new certificates, on both sides.
    expect(serverSerials.size).toBeGreaterThanOrEqual(3);
    expect(callerSerials.size).toBeGreaterThanOrEqual(3);
  }, RUN_MS + 30_000);
});
