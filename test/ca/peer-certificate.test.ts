import { createPrivateKey, sign as signBytes, type KeyObject } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { createCsr } from "../../src/pki/csr.ts";
import * as der from "../../src/pki/der.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { toPem } from "../../src/pki/pem.ts";
import { spkiOf } from "../../src/pki/spki.ts";
import { callUnary } from "../../src/protocol/grpc-unary.ts";
import { encodeSignRequest, SIGN_CERTIFICATE_PATH, TokenValidator } from "../../src/protocol/sentry.ts";
import { startTestCa, type TestCa } from "../helpers/ca-server.ts";

// Review ca-api HIGH-2: the API port takes any client certificate (first-time workloads have
// none), and the CA parsed it on its event loop for every call, before attestation, whatever the
// validator: a 64 KB OID in it blocked the whole CA ~0.4 s per connection. Only svid renewal
// reads it now; the others never parse it.

const TD = "peer-cert.test";

/** A self-signed P-256 certificate with one extension of id `extensionOid` (DER content) and value `extensionValue`. */
function selfSigned(privateKey: KeyObject, publicKey: KeyObject, extensionOid: Uint8Array, extensionValue: Uint8Array = der.NULL): string {
  const alg = der.sequence(der.oid("1.2.840.10045.4.3.2"));
  const name = der.sequence(der.set(der.sequence(der.oid("2.5.4.3"), der.utf8String("crafted"))));
  const now = Date.now();
  const extensions = der.explicit(3, der.sequence(der.sequence(der.tlv(der.TAG.OID, extensionOid), der.octetString(extensionValue))));
  const tbs = der.sequence(der.explicit(0, der.integer(2)), der.integer(7), alg, name, der.sequence(der.time(new Date(now - 60_000)), der.time(new Date(now + 3_600_000))), name, spkiOf(publicKey), extensions);
  return toPem(der.sequence(tbs, alg, der.bitString(signBytes("sha256", tbs, privateKey))), "CERTIFICATE");
}

describe("the CA reads a caller's TLS client certificate only for svid renewal", () => {
  let ca: TestCa;
  const keys = generateKeyPair();
  const keyPem = keys.privateKey.export({ type: "pkcs8", format: "pem" }) as string;
  // An extension id of 200 bytes: OpenSSL takes it in a client certificate; the CA's DER reader refuses it (over MAX_OID_BYTES).
  const longOid = Buffer.concat([Buffer.from([0x2a]), Buffer.alloc(198, 0x81), Buffer.from([0x01])]);
  const crafted = selfSigned(createPrivateKey(keyPem), keys.publicKey, longOid);

  beforeAll(async () => {
    // maxHandshakeBytes raised past the 20 KB certificate below: at the default 16 KiB the
    // connection is reset before the certificate is read at all (the last test); the svid
    // validator's own bound is what this file tests, for a CA configured with a larger cap.
    ca = await startTestCa(TD, { maxHandshakeBytes: 64 * 1024 });
  });
  afterAll(async () => {
    await ca?.close();
  });

  const call = async (certPem: string, validator: number, token: string) => {
    const result = await callUnary({
      url: `https://${ca.server.address}`,
      tls: { ca: ca.bundlePem, cert: certPem, key: keyPem, checkServerIdentity: () => undefined },
      path: SIGN_CERTIFICATE_PATH,
      authority: ca.server.address,
      message: encodeSignRequest({ id: "", token, trustDomain: "", namespace: "", certificateSigningRequest: Buffer.from(await createCsr({ keyPair: generateKeyPair() })), tokenValidator: validator }),
      timeoutMs: 20_000,
    });
    return { status: result.status, code: result.metadata["meshward-error-code"], details: result.details };
  };

  it("signs a join-token request whatever certificate the caller presents, without reading it", async () => {
    const { token } = await issueJoinToken(ca.server.store, { spiffeId: `spiffe://${TD}/ns/orders/api`, ttlMs: 60_000 });
    // Before: E_CERT_INVALID (the certificate was parsed for every call, before attestation).
    expect(await call(crafted, TokenValidator.JOIN_TOKEN, token)).toMatchObject({ status: 0, code: undefined });
  });

  it("refuses that certificate for svid renewal with UNAUTHENTICATED / E_ATTESTATION_UNTRUSTED naming the OID", async () => {
    const answer = await call(crafted, TokenValidator.SVID, "");
    expect(answer).toMatchObject({ status: 16, code: "E_ATTESTATION_UNTRUSTED" });
    expect(answer.details).toMatch(/OID too long \(200 bytes; at most 128 are read\)/);
  });

  it("refuses a client certificate over MAX_PEER_CERTIFICATE_BYTES for svid renewal before parsing it", async () => {
    const big = selfSigned(createPrivateKey(keyPem), keys.publicKey, Buffer.from([0x2a, 0x03]), der.octetString(Buffer.alloc(20_000, 0x41)));
    const answer = await call(big, TokenValidator.SVID, "");
    expect(answer).toMatchObject({ status: 16, code: "E_ATTESTATION_UNTRUSTED" });
    expect(answer.details).toMatch(/more than the 16384 this CA reads/);
  });

  it("at the default maxHandshakeBytes the same certificate never reaches the CA: its connection is reset during the handshake (handshake_too_large)", async () => {
    const defaults = await startTestCa(TD);
    try {
      const big = selfSigned(createPrivateKey(keyPem), keys.publicKey, Buffer.from([0x2a, 0x03]), der.octetString(Buffer.alloc(20_000, 0x41)));
      const call = callUnary({
        url: `https://${defaults.server.address}`,
        tls: { ca: defaults.bundlePem, cert: big, key: keyPem, checkServerIdentity: () => undefined },
        path: SIGN_CERTIFICATE_PATH,
        authority: defaults.server.address,
        message: encodeSignRequest({ id: "", token: "", trustDomain: "", namespace: "", certificateSigningRequest: Buffer.from(await createCsr({ keyPair: generateKeyPair() })), tokenValidator: TokenValidator.SVID }),
        timeoutMs: 20_000,
      });
      await expect(call).rejects.toThrow(/ECONNRESET|socket hang up|closed/);
      expect(await defaults.metric("meshward_ca_connections_refused_total", { reason: "handshake_too_large" })).toBe(1);
    } finally {
      await defaults.close();
    }
  });
});
