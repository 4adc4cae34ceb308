import { KeyObject } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect, type ClientHttp2Session } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { activateRoot, prepareRoot, retireRoot } from "../../src/ca/rotation.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { requestCertificate } from "../../src/identity/ca-client.ts";
import { encodePrivateKey, generateKeyPair } from "../../src/pki/keys.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { frameMessage } from "../../src/protocol/grpc-unary.ts";
import { encodeSignRequest, SIGN_CERTIFICATE_PATH, TokenValidator } from "../../src/protocol/sentry.ts";

// Node verifies a client certificate once, at the handshake, against the roots of that moment;
// setSecureContext changes nothing for open connections (NODE-TLS-FACTS.md). A workload that
// connected while a root was trusted and keeps its HTTP/2 connection busy must not renew with a
// certificate of that root once it is retired — the case that matters is a leaked root key, whose
// holder can forge any SVID under it (and a forced retire is how an operator cuts it off). SPIRE
// verifies the presented SVID against the current bundle on every renewal call
// (spiffe/spire pkg/server/api/svid/v1/service.go, via the x509svid verifier).
const TD = "renewal-retire.test";

describe("renewal over a connection opened before the root was retired", () => {
  let work: string;
  let dir: string;
  let server: CaServer;
  const sessions: ClientHttp2Session[] = [];
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-renewal-retire-"));
    dir = join(work, "ca");
    await initAnchors({ dir, trustDomain: TD, now: new Date() });
    server = await startCaServer({ dir, config: caConfigSchema.parse({ listen: "127.0.0.1:0", signingWorkers: 0, anchorPoll: "100ms", crlRefresh: "100ms" }), logger: pino({ level: "silent" }) });
  });
  afterAll(async () => {
    for (const session of sessions) session.destroy();
    await server?.close();
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  const bundle = () => readFileSync(join(dir, "bundle.pem"), "utf8");
  const enroll = async (appId: string) => {
    const keyPair = generateKeyPair();
    const { token } = await issueJoinToken(server.store, { spiffeId: `spiffe://${TD}/ns/shop/${appId}`, ttlMs: 60_000 });
    const signed = await requestCertificate({ address: server.address, bundlePem: bundle(), trustDomain: TD }, { csrPem: await createCsr({ keyPair }), token, validator: "JOIN_TOKEN", namespace: "", appId: "" });
    return { certChainPem: signed.certChainPem, privateKey: keyPair.privateKey };
  };
  /** One mTLS HTTP/2 connection presenting the certificate, kept open for several calls. */
  const renewalConnection = (identity: { certChainPem: string; privateKey: KeyObject }) => {
    const session = connect(`https://${server.address}`, { ca: bundle(), cert: identity.certChainPem, key: encodePrivateKey(identity.privateKey), checkServerIdentity: () => undefined });
    session.on("error", () => undefined);
    sessions.push(session);
    return async () => {
      const body = frameMessage(encodeSignRequest({ id: "", token: "", trustDomain: "", namespace: "", certificateSigningRequest: Buffer.from(await createCsr({ keyPair: generateKeyPair() })), tokenValidator: TokenValidator.SVID }));
      return new Promise<{ status: string; code: string }>((resolve, reject) => {
        const call = session.request({ ":method": "POST", ":path": SIGN_CERTIFICATE_PATH, "content-type": "application/grpc", te: "trailers" });
        call.on("trailers", (t) => resolve({ status: String(t["grpc-status"]), code: String(t["meshward-error-code"] ?? "") }));
        call.on("error", reject);
        call.resume();
        call.end(body);
      });
    };
  };

  it("refuses the old root's SVID on that connection once the root is retired, and the new root's renews", async () => {
    const old = await enroll("cart");
    const renew = renewalConnection(old);
    expect(await renew()).toEqual({ status: "0", code: "" });

    const newRoot = await prepareRoot({ dir, now: new Date() });
    await activateRoot({ dir, now: new Date() });
    await retireRoot({ dir, store: server.store, now: new Date(), force: true });
    // The CA has reloaded its anchors once a new join token is signed under the new root.
    await vi.waitFor(async () => {
      const fresh = await enroll("probe");
      expect(fresh.certChainPem).toContain(readFileSync(join(dir, "issuer.pem"), "utf8").trim().split("\n")[1]);
    }, { timeout: 20_000, interval: 200 });
    expect(bundle()).toContain(newRoot.toString().split("\n")[1]);

    expect(await renew()).toEqual({ status: "16", code: "E_ATTESTATION_UNTRUSTED" });
    const current = await enroll("cart");
    expect(await renewalConnection(current)()).toEqual({ status: "0", code: "" });
  });
});
