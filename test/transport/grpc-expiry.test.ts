import * as grpc from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { TicketKeyRing } from "../../src/tls/ticket-keys.ts";
import type { IdentityHealth } from "../../src/tls/context.ts";
import { grpcChannelCredentials, grpcServerCredentials } from "../../src/transport/index.ts";
import type { MeshwardServerCredentials } from "../../src/transport/grpc.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";
import type { TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, EchoClient, echoService, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// When its SVID expires (or its source withdraws it), a gRPC server publishes null credentials and
// grpc-js drops every new connection; https/http2/raw TLS servers check expiry per connection
// instead. Session-ticket keys rotate on their own schedule (hourly by default) and each rotation
// republished the complete options, which grpc-js takes as valid credentials again: the server
// went back to accepting handshakes with the expired certificate while health() said unhealthy
// (found by review). Ticket keys rotate every 50 ms here; the tests wait for rotations to happen
// (counted on TicketKeyRing), not for a time.
const TD = "example.org";
const SERVER_ID = `spiffe://${TD}/ns/default/api`;
const CLIENT_ID = `spiffe://${TD}/ns/default/web`;
const logger = makeLogger();

let pki: TestPki;
const cleanups: (() => void)[] = [];

beforeAll(() => {
  pki = createTestPki({ trustDomain: TD });
});
afterEach(() => {
  while (cleanups.length > 0) cleanups.pop()!();
  vi.restoreAllMocks();
});
afterAll(() => pki?.cleanup());

/** Resolves after `count` more session-ticket key rotations (any TicketKeyRing). */
function ticketRotations(count: number): Promise<void> {
  const rotate = TicketKeyRing.prototype.rotate;
  let left = count;
  return new Promise((resolve) => {
    const spy = vi.spyOn(TicketKeyRing.prototype, "rotate").mockImplementation(function (this: TicketKeyRing, notify?: boolean) {
      const keys = rotate.call(this, notify); // listeners (the republish) run inside
      if (--left === 0) {
        spy.mockRestore();
        resolve();
      }
      return keys;
    });
  });
}

async function startServer(identity: ManualIdentity) {
  const health: boolean[] = [];
  const waiters: ((h: IdentityHealth) => void)[] = [];
  const creds: MeshwardServerCredentials = await grpcServerCredentials(identity, {
    logger,
    ticketKeyRotationMs: 50,
    authorize: { trustDomain: TD, namespace: "default" },
    onHealthChange: (h) => {
      health.push(h.healthy);
      for (const w of waiters.splice(0)) w(h);
    },
  });
  const server = new grpc.Server();
  cleanups.push(() => {
    server.forceShutdown();
    creds.close();
  });
  server.addService(echoService, { who: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from("ok")) });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", creds, (e, p) => (e ? reject(e) : resolve(p))));
  const unhealthy = () =>
    new Promise<IdentityHealth>((resolve) => {
      if (creds.health().healthy) waiters.push(resolve);
      else resolve(creds.health());
    });
  return { creds, port, health, unhealthy };
}

/** One call on a new channel with its own subchannel pool, so every call makes a new connection (a new handshake). */
async function callOnce(port: number, credentials: grpc.ChannelCredentials): Promise<{ ok: true } | { ok: false; code: grpc.status }> {
  // A DNS name as the TLS server name: grpc-js would send the IP (DEP0123); no check uses it here.
  const client = new EchoClient(`127.0.0.1:${port}`, credentials, { "grpc.use_local_subchannel_pool": 1, "grpc.ssl_target_name_override": "api.example.org" });
  try {
    return await new Promise((resolve) =>
      (client as unknown as { who(req: Buffer, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void): void }).who(Buffer.from("hi"), { deadline: Date.now() + 10_000 }, (e) =>
        resolve(e ? { ok: false, code: e.code } : { ok: true }),
      ),
    );
  } finally {
    client.close();
  }
}

describe("gRPC server credentials while the SVID is expired", () => {
  it("refuse new connections through session-ticket key rotations and bundle updates, and accept again with a valid certificate", async () => {
    // The caller does not check the server's validity dates (a skewed clock, a client that does not
    // verify): the server must refuse on its own. It does not trust the CA either, so the same
    // caller succeeding at the end shows the refusals are the server's.
    const clientLeaf = pki.issueLeaf({ spiffeId: CLIENT_ID });
    const lax = grpc.credentials.createSsl(Buffer.from(pki.root.certPem), Buffer.from(clientLeaf.keyPem), Buffer.from(clientLeaf.chainPem), {
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
    });
    const serverLeaf = pki.issueLeaf({ spiffeId: SERVER_ID, notAfter: new Date(Date.now() + 3_000) });
    const identity = new ManualIdentity(snapshotOf(serverLeaf, bundleOf([pki])));
    const { creds, port, health, unhealthy } = await startServer(identity);

    await unhealthy(); // the certificate's notAfter passed
    expect(creds.health().reason).toMatch(/expired/);
    await ticketRotations(2);
    expect(await callOnce(port, lax)).toEqual({ ok: false, code: grpc.status.UNAVAILABLE });
    expect(creds.health().healthy).toBe(false);

    // A bundle update (a CRL refresh) with the certificate still expired changes nothing either.
    identity.updateBundle(bundleOf([pki], new Set(["01"])));
    await ticketRotations(1);
    expect(await callOnce(port, lax)).toEqual({ ok: false, code: grpc.status.UNAVAILABLE });
    expect(health).toEqual([false]); // no "a valid certificate is back" in between

    identity.rotate(snapshotOf(pki.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([pki])));
    expect(health).toEqual([false, true]);
    expect(await callOnce(port, lax)).toEqual({ ok: true });
    await ticketRotations(1);
    expect(await callOnce(port, lax)).toEqual({ ok: true });
  });

  it("an identity withdrawn by its source (`expired`) stays refused to a verifying meshward client after a ticket-key rotation", async () => {
    const identity = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([pki])));
    const { creds, port } = await startServer(identity);
    const clientIdentity = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([pki])));
    const channel = await grpcChannelCredentials(clientIdentity, { expect: SERVER_ID, logger });
    expect(await callOnce(port, channel)).toEqual({ ok: true });

    identity.expire();
    expect(creds.health().healthy).toBe(false);
    expect(await callOnce(port, channel)).toEqual({ ok: false, code: grpc.status.UNAVAILABLE });
    await ticketRotations(2);
    expect(await callOnce(port, channel)).toEqual({ ok: false, code: grpc.status.UNAVAILABLE });
    expect(creds.health().healthy).toBe(false);
  });
});
