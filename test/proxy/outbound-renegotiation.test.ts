import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIdentity, type CaIdentitySource } from "../../src/identity/ca-source.ts";
import { httpsRequest } from "../../src/transport/https.ts";
import { opensslServerRenegotiating } from "../helpers/openssl-renegotiate.ts";
import { refusal } from "../helpers/refusal.ts";
import { callThroughOutbound, metricValue, startMeshCa, startTestSidecar, type MeshCa } from "./fixtures.ts";

/**
 * A peer that asks to renegotiate mid-connection (a TLS 1.2 HelloRequest with a client-certificate
 * request: `openssl s_server`'s "R") is refused by meshward's clients (SSL_OP_NO_RENEGOTIATION, as
 * Envoy's upstream default `allow_renegotiation: false`, envoyproxy/envoy
 * api/envoy/extensions/transport_sockets/tls/v3/tls.proto). OpenSSL then closes with a fatal
 * alert, which the client reads as a bare "sslv3 alert handshake failure" on a connection that
 * had been verified and was working. The SDK's HTTPS client and the sidecar's outbound
 * connection to a peer (both dial through src/transport's dialTls) now name it, as the CA client
 * and egress already did (test/proxy/egress.test.ts). Before, both reported E_PEER_NO_SPIFFE_ID
 * "the server sent no certificate" instead and cut the connection before refusing: Node re-ran
 * checkServerIdentity on the renegotiation request, with the leaf already gone from the socket's
 * peer chain (nodejs/node#65579; see dialTls). The peer is a real s_server presenting a meshward
 * SVID with the SPIFFE ID the client expects, so the handshake itself passes.
 */
let ca: MeshCa;
let peer: { cert: string; key: string; chain: string; spiffeId: string };
const AFTER_HANDSHAKE = /the server's TLS connection failed after the handshake \(.*alert handshake failure.*\); meshward refuses TLS renegotiation, which the server may have asked for/;
const REPLY = "HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\nreply-after-reneg-ok";

beforeAll(async () => {
  ca = await startMeshCa();
  peer = await ca.clientFiles("default", "legacy");
}, 60_000);
afterAll(async () => {
  await ca?.close();
});

/** s_server with the peer's SVID, for one connection: `run` gets its port; s_server is always stopped. */
async function withRenegotiatingPeer(run: (port: number, renegotiate: () => Promise<void>) => Promise<void>): Promise<void> {
  const server = await opensslServerRenegotiating(peer.cert, peer.key, ["-cert_chain", peer.chain]);
  try {
    await run(server.port, async () => {
      const { refusedByClient } = await server.renegotiateThenReply("GET /hello", REPLY);
      expect(refusedByClient, server.output()).toBe(true);
      expect(server.output()).toContain("SSL3 alert read:warning:no renegotiation");
    });
  } finally {
    await server.stop();
  }
}

describe("a peer that renegotiates after the handshake: the failure is named", () => {
  it("the SDK's httpsRequest rejects with E_TLS_AFTER_HANDSHAKE, OpenSSL's text kept, not the reply", async () => {
    let identity: CaIdentitySource | undefined;
    try {
      identity = createIdentity({ ca: ca.server.address, bundlePem: ca.bundlePem, namespace: "default", appId: "sdk-caller", token: await ca.token("default", "sdk-caller"), logger: pino({ level: "silent" }) });
      await identity.ready();
      await withRenegotiatingPeer(async (port, renegotiate) => {
        const refused = refusal(httpsRequest(`https://127.0.0.1:${port}/hello`, { identity: identity!, expect: peer.spiffeId, timeoutMs: 10_000 }), "the reply after the renegotiation arrived");
        await renegotiate();
        const { code, message } = await refused;
        expect(code).toBe("E_TLS_AFTER_HANDSHAKE");
        expect(message).toMatch(new RegExp(`^the server at 127\\.0\\.0\\.1:${port}: ${AFTER_HANDSHAKE.source}$`));
      });
    } finally {
      await identity?.close();
    }
  });

  it("the sidecar's outbound answers 502 and logs one line naming it (not as an identity failure)", async () => {
    await withRenegotiatingPeer(async (port, renegotiate) => {
      const caller = await startTestSidecar(ca, { appId: "caller", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { legacy: `127.0.0.1:${port}` } });
      try {
        const answer = callThroughOutbound(caller.addresses.outbound!.port, "legacy");
        await renegotiate();
        const { status, body } = await answer;
        expect(status).toBe(502);
        expect(body).not.toContain("reply-after-reneg-ok");
        expect(JSON.parse(body)).toMatchObject({ error: "E_PEER_UNREACHABLE", message: expect.stringMatching(new RegExp(`^the connection to the sidecar of legacy at 127\\.0\\.0\\.1:${port} failed: ${AFTER_HANDSHAKE.source}$`)) });
        const logged = caller.logs.lines.filter((line) => line.msg === "outbound call failed");
        expect(logged).toEqual([expect.objectContaining({ level: 40, event: "peer-unreachable", app: "legacy", expected: peer.spiffeId, err: expect.stringMatching(new RegExp(`^${AFTER_HANDSHAKE.source}$`)) })]);
        // The peer's identity was verified at the handshake: no identity failure is counted.
        const metrics = await (await fetch(`http://127.0.0.1:${caller.addresses.status!.port}/metrics`)).text();
        expect(metricValue(metrics, "meshward_tls_handshake_failures_total", { direction: "outbound" })).toBe(0);
      } finally {
        await caller.close();
      }
    });
  });
});
