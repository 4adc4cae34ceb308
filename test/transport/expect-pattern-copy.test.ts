import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpsServer, httpsRequest, mtlsFetch } from "../../src/transport/index.ts";
import type { MtlsHttpsServer } from "../../src/transport/index.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";
import type { TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// The shared agent for (identity, expect) was keyed by the pattern's values at call time, while
// its policy read the first caller's object live: changing that object widened the check of every
// later caller with an equal pattern.
const TD = "example.org";
const logger = makeLogger();
let pki: TestPki;
let serverA: MtlsHttpsServer;
let serverB: MtlsHttpsServer;
let portA: number;
let portB: number;

const identityFor = (spiffeId: string) => new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId }), bundleOf([pki])));
const listen = (server: MtlsHttpsServer) => new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));

beforeAll(async () => {
  pki = createTestPki({ trustDomain: TD });
  serverA = await createHttpsServer({ identity: identityFor(`spiffe://${TD}/ns/a/svc`), logger }, (_q, r) => r.end("A"));
  serverB = await createHttpsServer({ identity: identityFor(`spiffe://${TD}/ns/b/svc`), logger }, (_q, r) => r.end("B"));
  portA = await listen(serverA);
  portB = await listen(serverB);
});
afterAll(async () => {
  await serverA?.meshward.close();
  await serverB?.meshward.close();
  pki?.cleanup();
});

describe("an expect pattern is copied when the request is prepared", () => {
  it("changing one caller's pattern object does not widen another caller's equal pattern", async () => {
    const client = identityFor(`spiffe://${TD}/ns/c/client`);
    const moduleOne: { trustDomain: string; namespace?: string } = { trustDomain: TD, namespace: "a" };
    expect((await httpsRequest(`https://127.0.0.1:${portA}/`, { identity: client, expect: moduleOne, logger })).text()).toBe("A");
    moduleOne.namespace = "b";
    await expect(httpsRequest(`https://127.0.0.1:${portB}/`, { identity: client, expect: { trustDomain: TD, namespace: "a" }, logger })).rejects.toMatchObject({ code: "E_SPIFFE_MISMATCH" });
    // The fresh pattern still reaches A, and module one's changed object now reaches B.
    expect((await httpsRequest(`https://127.0.0.1:${portA}/`, { identity: client, expect: { trustDomain: TD, namespace: "a" }, logger })).text()).toBe("A");
    expect((await httpsRequest(`https://127.0.0.1:${portB}/`, { identity: client, expect: moduleOne, logger })).text()).toBe("B");
  });

  it("deleting namespace from an exact pattern does not let an equal exact pattern reach another workload", async () => {
    const client = identityFor(`spiffe://${TD}/ns/c/client2`);
    const exact: { trustDomain: string; namespace?: string; appId?: string } = { trustDomain: TD, namespace: "a", appId: "svc" };
    expect((await mtlsFetch(`https://127.0.0.1:${portA}/`, { identity: client, expect: exact, logger })).status).toBe(200);
    delete exact.namespace;
    delete exact.appId;
    await expect(mtlsFetch(`https://127.0.0.1:${portB}/`, { identity: client, expect: { trustDomain: TD, namespace: "a", appId: "svc" }, logger })).rejects.toMatchObject({ code: "E_SPIFFE_MISMATCH" });
  });

  it("a typo in an expect pattern is refused before anything is sent", async () => {
    const client = identityFor(`spiffe://${TD}/ns/c/client3`);
    let requests = 0;
    const count = () => requests++;
    serverB.on("request", count);
    try {
      await expect(httpsRequest(`https://127.0.0.1:${portB}/`, { identity: client, expect: { trustDomain: TD, nameSpace: "a" } as never, logger })).rejects.toMatchObject({ code: "E_USAGE" });
      expect(requests).toBe(0);
    } finally {
      serverB.off("request", count);
    }
    expect((await httpsRequest(`https://127.0.0.1:${portB}/`, { identity: client, expect: { trustDomain: TD, namespace: "b" }, logger })).text()).toBe("B");
  });
});
