/**
 * A made-up client certificate chain of the kind that stalls a TLS server's event loop
 * (docs/threat-model.md, "Resource exhaustion"): a real P-256 leaf (for CertificateVerify) under
 * `links` CA certificates whose RSA-3072 keys have ~3060-bit public exponents and whose signatures
 * are random bytes. Nothing chains to anything; OpenSSL still checks every signature (~15–23 ms
 * each) when Node's verify callback accepts every error. No key generation but the leaf's.
 */
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { connect as tlsConnect, type ConnectionOptions } from "node:tls";
import * as der from "../../src/pki/der.ts";
import { toPem } from "../../src/pki/pem.ts";

const name = (cn: string) => der.sequence(der.set(der.sequence(der.oid("2.5.4.3"), der.utf8String(cn))));
const sha256Rsa = der.sequence(der.oid("1.2.840.113549.1.1.11"), der.tlv(0x05, Buffer.alloc(0)));
const validity = () => der.sequence(der.time(new Date(Date.now() - 3600_000)), der.time(new Date(Date.now() + 86400_000)));
const caExtension = der.explicit(3, der.sequence(der.sequence(der.oid("2.5.29.19"), der.boolean(true), der.octetString(der.sequence(der.boolean(true))))));

function hugeExponentRsaSpki(): Buffer {
  const n = randomBytes(384);
  n[0] = 0xff;
  n[383]! |= 1;
  const e = randomBytes(383);
  e[0] = 0x7f;
  e[382]! |= 1;
  return der.sequence(der.sequence(der.oid("1.2.840.113549.1.1.1"), der.tlv(0x05, Buffer.alloc(0))), der.bitString(der.sequence(der.unsignedInteger(n), der.unsignedInteger(e))));
}

function randomSignature(): Buffer {
  const s = randomBytes(384);
  s[0] = 0x01;
  return der.bitString(s);
}

function certificate(subject: string, issuer: string, spki: Buffer, ca: boolean): Buffer {
  const serial = der.integer(BigInt(`0x1${randomBytes(8).toString("hex")}`));
  const tbs = der.sequence(der.explicit(0, der.integer(2)), serial, sha256Rsa, name(issuer), validity(), name(subject), spki, ...(ca ? [caExtension] : []));
  return der.sequence(tbs, sha256Rsa, randomSignature());
}

export interface LongChain {
  readonly certPem: string;
  readonly keyPem: string;
  /** DER bytes of all certificates. */
  readonly bytes: number;
  /** Certificates, the leaf included. */
  readonly count: number;
}

export function buildLongChain(links: number): LongChain {
  const leafKey = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const chain = [certificate("leaf", "link-1", leafKey.publicKey.export({ type: "spki", format: "der" }), false)];
  for (let i = 1; i <= links; i++) chain.push(certificate(`link-${i}`, `link-${i + 1}`, hugeExponentRsaSpki(), true));
  return {
    certPem: chain.map((c) => toPem(c, "CERTIFICATE")).join(""),
    keyPem: leafKey.privateKey.export({ type: "pkcs8", format: "pem" }) as string,
    bytes: chain.reduce((sum, c) => sum + c.length, 0),
    count: chain.length,
  };
}

/**
 * A TLS client that presents what `options` give (the long chain's leaf and links, say), without
 * checking the server: "answered" once the server sends anything after the handshake (HTTP/2
 * SETTINGS, a TLS 1.3 ticket), "closed" when the server closes first (a refused handshake).
 */
export function answeredOrClosed(options: ConnectionOptions): Promise<"answered" | "closed"> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ rejectUnauthorized: false, ...options });
    socket.on("error", () => undefined);
    socket.once("data", () => (socket.destroy(), resolve("answered")));
    socket.once("close", () => resolve("closed"));
  });
}
