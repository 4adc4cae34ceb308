import type { Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpsServer, httpsRequest } from "../../src/transport/index.ts";
import type { MtlsHttpsServer } from "../../src/transport/index.ts";
import { PREDICATE_AGENTS_PER_IDENTITY } from "../../src/transport/https.ts";
import type { SpiffeId } from "../../src/spiffe/id.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";
import type { TestPki } from "../helpers/openssl-pki.ts";
import { waitFor } from "../helpers/wait.ts";
import { bundleOf, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// An inline predicate `expect` is a new function object per call: each made its own pooled agent,
// kept for the life of the identity source with its keep-alive connection open.
const TD = "example.org";
const SERVER_ID = `spiffe://${TD}/ns/default/api`;
const logger = makeLogger();
let pki: TestPki;
let server: MtlsHttpsServer;
let port: number;
const open = new Set<Socket>();
let accepted = 0;

const identityFor = (spiffeId: string) => new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId }), bundleOf([pki])));

beforeAll(async () => {
  pki = createTestPki({ trustDomain: TD });
  // The server keeps idle connections far longer than this test runs: only the client closes them.
  server = await createHttpsServer({ identity: identityFor(SERVER_ID), logger, keepAliveTimeoutMs: 600_000 }, (_q, r) => r.end("ok"));
  server.on("secureConnection", (socket: Socket) => {
    accepted++;
    open.add(socket);
    socket.once("close", () => open.delete(socket));
  });
  port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
});
afterAll(async () => {
  await server?.meshward.close();
  pki?.cleanup();
});

describe("predicate expect agents", () => {
  it("300 requests with fresh inline predicates leave a bounded number of open connections", async () => {
    const client = identityFor(`spiffe://${TD}/ns/default/web`);
    for (let i = 0; i < 300; i++) {
      const res = await httpsRequest(`https://127.0.0.1:${port}/`, { identity: client, expect: (id: SpiffeId) => id.toString() === SERVER_ID, logger });
      expect(res.text()).toBe("ok");
    }
    await waitFor(`at most ${PREDICATE_AGENTS_PER_IDENTITY} open connections (now ${open.size})`, () => open.size <= PREDICATE_AGENTS_PER_IDENTITY, 15_000);
    expect(open.size).toBeLessThanOrEqual(PREDICATE_AGENTS_PER_IDENTITY);
    expect(open.size).toBeGreaterThan(0); // the most recent agents still pool
  });

  it("a predicate reused across calls keeps one pooled connection; a refusing predicate still refuses", async () => {
    const client = identityFor(`spiffe://${TD}/ns/default/worker`);
    const isServer = (id: SpiffeId) => id.toString() === SERVER_ID;
    const before = accepted;
    for (let i = 0; i < 20; i++) expect((await httpsRequest(`https://127.0.0.1:${port}/`, { identity: client, expect: isServer, logger })).text()).toBe("ok");
    expect(accepted - before).toBe(1);
    await expect(httpsRequest(`https://127.0.0.1:${port}/`, { identity: client, expect: (id: SpiffeId) => id.toString() === `${SERVER_ID}-other`, logger })).rejects.toMatchObject({ code: "E_SPIFFE_MISMATCH" });
  });
});
