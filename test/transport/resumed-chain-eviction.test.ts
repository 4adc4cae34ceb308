import { X509Certificate } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIdentity, type CaIdentitySource } from "../../src/identity/ca-source.ts";
import { certificatesFromPem } from "../../src/pki/pem.ts";
import { REMEMBERED_CHAINS, verifyTlsPeerWithValidity } from "../../src/tls/verify.ts";
import { connectMtls, createMtlsServer } from "../../src/transport/index.ts";
import { startMeshCa, TD, type MeshCa } from "../proxy/fixtures.ts";
import { makeLogger } from "./fixtures.ts";

// Found by review (rev2, HIGH-1): a server remembers the issuer serials of the leaves it verified
// on full handshakes (a resumed session shows the leaf alone) and refuses a resumed session whose
// chain it no longer remembers. Entries went oldest first whatever their use, and the client kept
// offering the refused ticket: once evicted, every later connection of that client was refused.
// Now a lookup remembers the leaf afresh, and a client forgets a session whose resumed connection
// closed before any byte arrived, so at most one connection is refused.
let ca: MeshCa;
let api: CaIdentitySource;
let web: CaIdentitySource;
const closers: (() => unknown)[] = [];
const apiId = `spiffe://${TD}/ns/default/api`;

/** Stands in for `count` other callers' full handshakes on this process: each leaf's chain is remembered. */
function otherCallers(count: number, from: number): void {
  const der = Buffer.from(certificatesFromPem(web.current()!.svid.certChainPem)[0]!);
  const policy = { accepts: () => true, expected: "*", revokedSerials: () => new Set<string>(), peerRole: "client" as const };
  const serialAt = der.indexOf(Buffer.from(new X509Certificate(der).serialNumber.slice(0, 8), "hex"));
  for (let i = 0; i < count; i++) {
    const copy = Buffer.from(der);
    copy.writeUInt32BE(from + i, serialAt + 1); // another serial: another leaf fingerprint
    const leaf = new X509Certificate(copy);
    verifyTlsPeerWithValidity({ authorized: true, isSessionReused: () => false, getPeerX509Certificate: () => leaf } as unknown as TLSSocket, policy);
  }
}

describe("a resumed session whose chain the server no longer remembers", () => {
  let port: number;
  beforeAll(async () => {
    ca = await startMeshCa();
    closers.push(() => ca.close());
    const identity = async (appId: string) => {
      const source = createIdentity({ ca: ca.server.address, bundlePem: ca.bundlePem, namespace: "default", appId, token: await ca.token("default", appId) });
      closers.unshift(() => source.close());
      await source.ready();
      return source;
    };
    api = await identity("api");
    web = await identity("web");
    const server = await createMtlsServer({ identity: api, logger: makeLogger() }, (socket) => {
      socket.on("error", () => undefined);
      socket.end("hello\n");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    closers.unshift(() => server.meshward.close());
    port = (server.address() as AddressInfo).port;
  }, 60_000);
  afterAll(async () => {
    for (const close of closers) await close();
  });

  /** One connection: whether it resumed a session, and what it read. */
  const dial = async (): Promise<{ resumed: boolean; read: string }> => {
    const socket = await connectMtls({ identity: web, expect: apiId, port, logger: makeLogger() });
    const resumed = socket.isSessionReused();
    const read = await new Promise<string>((resolve) => {
      let data = "";
      socket.on("data", (chunk: Buffer) => (data += chunk.toString()));
      socket.on("error", () => undefined);
      socket.on("close", () => resolve(data.trim()));
    });
    return { resumed, read };
  };

  it("a client that keeps resuming keeps its entry, however many other leaves come and go", async () => {
    expect(await dial()).toEqual({ resumed: false, read: "hello" });
    expect(await dial()).toEqual({ resumed: true, read: "hello" });
    otherCallers(REMEMBERED_CHAINS * 0.6, 0);
    expect(await dial()).toEqual({ resumed: true, read: "hello" }); // remembered afresh here
    otherCallers(REMEMBERED_CHAINS * 0.6, 1_000_000);
    expect(await dial()).toEqual({ resumed: true, read: "hello" });
  });

  it("once forgotten, one resumed connection is refused; the client then forgets the ticket and the next connection is a full handshake", async () => {
    otherCallers(REMEMBERED_CHAINS + 1, 2_000_000);
    expect(await dial()).toEqual({ resumed: true, read: "" });
    expect(await dial()).toEqual({ resumed: false, read: "hello" });
    expect(await dial()).toEqual({ resumed: true, read: "hello" });
  });
});
