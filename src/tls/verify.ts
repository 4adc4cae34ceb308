import type { X509Certificate } from "node:crypto";
import type { PeerCertificate, TLSSocket } from "node:tls";
import { MeshwardError } from "../errors.ts";
import { OID } from "../pki/oids.ts";
import { notLeafReason, parseCertificateParts, readGeneralNames } from "../pki/x509der.ts";
import { parseSpiffeId } from "../spiffe/id.ts";
import type { CompiledMatcher } from "../spiffe/match.ts";

/** The verified identity of the other side of a connection. */
export interface PeerIdentity {
  readonly spiffeId: string;
  readonly trustDomain: string;
  /** Set when the ID has the workload form spiffe://td/ns/<namespace>/<app-id>. */
  readonly namespace: string | undefined;
  readonly appId: string | undefined;
  /** Leaf serial, uppercase hex without leading zeros. */
  readonly serial: string;
  /**
   * Serials (normalised) of the other certificates the peer presented with its leaf on the full
   * handshake (its issuer), a self-issued root excepted; undefined when they could not be seen.
   * A peer is refused when one of them is revoked (an issuer retired with --now: revocationOf).
   */
  readonly issuerSerials?: readonly string[];
}

export interface PeerPolicy {
  readonly accepts: CompiledMatcher;
  /** For error messages: who was expected. */
  readonly expected: string;
  /** Current revoked serials (any case, any leading zeros). */
  readonly revokedSerials: () => ReadonlySet<string>;
  /** "server" when checking the server we connected to, "client" when checking a caller. */
  readonly peerRole: "server" | "client";
}

export function normalizeSerial(hex: string): string {
  return hex.toUpperCase().replace(/^0+(?=.)/, "");
}

/** Whether the policy's current revocations hold `serial` (a PeerIdentity's, normalised). */
export function isRevoked(policy: PeerPolicy, serial: string): boolean {
  return normalizedRevoked(policy.revokedSerials()).has(serial);
}

/**
 * Why `peer` is revoked under the policy's current revocations — its leaf, or a certificate of its
 * chain other than the root (its issuer) — or undefined. E_CERT_REVOKED names which.
 *
 * Issuers are matched by serial alone, in the same set as the leaves' serials, as OpenSSL's
 * whole-chain CRL check does with the root's CRL. That is safe: an issuer's serial is assigned at
 * random by the root that signed it (and listed by that root's CRL, verified against it before it
 * joins the set: ca-source.ts), leaf serials at random (≥ 64 bits) by the issuers; a collision
 * between a live issuer's serial and a revoked leaf's (or the reverse) is negligible, and could
 * only refuse more, never accept a revoked certificate. The set is normalised once per set
 * (normalizedRevoked); a check costs one lookup per certificate of the chain (usually two).
 */
export function revocationOf(policy: PeerPolicy, peer: PeerIdentity, what = `the ${policy.peerRole}`): MeshwardError | undefined {
  const revoked = normalizedRevoked(policy.revokedSerials());
  if (revoked.size === 0) return undefined;
  if (revoked.has(peer.serial)) {
    return new MeshwardError("E_CERT_REVOKED", `${what} certificate (serial ${peer.serial}, ${peer.spiffeId}) is revoked`, { details: { serial: peer.serial, spiffeId: peer.spiffeId } });
  }
  for (const serial of peer.issuerSerials ?? []) {
    if (revoked.has(serial)) {
      return new MeshwardError("E_CERT_REVOKED", `the peer's issuer certificate (serial ${serial}) is revoked: ${what} ${peer.spiffeId} (certificate serial ${peer.serial}) was signed by an issuer retired with --now (a leaked issuer key)`, {
        details: { serial: peer.serial, spiffeId: peer.spiffeId, issuerSerial: serial },
      });
    }
  }
  return undefined;
}

/**
 * The peer's certificate as verified, once per socket. Node builds the certificates the peer sent
 * (leaf first, all of them, in the order sent) into the first X509Certificate it returns; every
 * later `getPeerX509Certificate()` on the same socket shows the leaf alone (server side), or
 * nothing (client side: the first call takes the leaf out of OpenSSL's peer chain). Every check
 * of a socket's peer goes through here, so each sees the whole chain.
 */
const verifiedCertificates = new WeakMap<TLSSocket, X509Certificate | undefined>();
export function peerCertificateOf(socket: TLSSocket): X509Certificate | undefined {
  if (verifiedCertificates.has(socket)) return verifiedCertificates.get(socket);
  const cert = socket.getPeerX509Certificate();
  verifiedCertificates.set(socket, cert);
  return cert;
}

/**
 * Serials of the certificates the peer sent after its leaf, self-issued ones (a root) excepted,
 * normalised. These are read from the X509Certificate of the first getPeerX509Certificate()
 * (peerCertificateOf): it lists every certificate the peer sent, so it holds the issuer OpenSSL
 * verified the leaf with (the trust bundle holds roots only, so the issuer is always sent). The
 * detailed certificate (`getPeerCertificate(true)`, checkServerIdentity's) is not used: it links
 * the first certificate that *names* the leaf's issuer, and a peer holding a retired issuer's key
 * can send an expired look-alike of that issuer first (same name and key identifier, a fresh
 * serial), which OpenSSL passes over for the real one while the detailed chain shows the look-alike.
 */
export function issuerSerialsOf(cert: X509Certificate): string[] {
  const serials: string[] = [];
  const seen = new Set<X509Certificate>([cert]);
  for (let c = cert.issuerCertificate; c !== undefined && !seen.has(c); c = c.issuerCertificate) {
    // Every certificate sent is read: a cap that stopped early would let a peer put ten
    // look-alikes before the real (revoked) issuer. A chain this long is no SVID's: refused.
    if (seen.size > MAX_PEER_CHAIN) throw new MeshwardError("E_PEER_UNTRUSTED", `the peer sent more than ${MAX_PEER_CHAIN} certificates with its leaf; an X509-SVID chain is a leaf, its issuer and at most a few intermediates`);
    seen.add(c);
    if (c.subject === c.issuer) continue;
    serials.push(normalizeSerial(c.serialNumber));
  }
  return serials;
}

/**
 * Client side: the serials of the certificates the server sent after its leaf (issuerSerialsOf),
 * from the first getPeerX509Certificate() (peerCertificateOf), for a TLS client whose server was
 * checked by checkServerIdentity (which sees the detailed chain, not necessarily the issuer OpenSSL
 * verified the leaf with). On a client that call takes the leaf out of OpenSSL's peer chain
 * (nodejs/node#65579), after which getPeerCertificate() shows nothing: the socket answers it with
 * what it showed before, so that Node's checkServerIdentity on a refused renegotiation, grpc-js's
 * auth context and channelz still see the server's certificate. Undefined on a resumed session
 * (no chain to see).
 */
export function serverIssuerSerialsOf(socket: TLSSocket): readonly string[] | undefined {
  if (socket.isSessionReused()) return undefined;
  const plain = socket.getPeerCertificate();
  const detailed = socket.getPeerCertificate(true);
  const x509 = peerCertificateOf(socket);
  Object.defineProperty(socket, "getPeerCertificate", { value: (full?: boolean) => (full === true ? detailed : plain), configurable: true, writable: true });
  return x509 === undefined ? undefined : issuerSerialsOf(x509);
}

/**
 * For a TLS client's checkServerIdentity on a full handshake, once the SPIFFE ID check passed: why
 * the server is refused for a certificate it sent after its leaf (its issuer revoked: E_CERT_REVOKED;
 * more than MAX_PEER_CHAIN: E_PEER_UNTRUSTED), from every certificate sent (peerCertificateOf), or
 * undefined. Judged there, the refusal fails the handshake: no 'secureConnect' is emitted, so nothing
 * built on the socket starts on it (node:http2's client session, set up on 'secureConnect', aborts
 * the process on a socket destroyed by an earlier 'secureConnect' listener: "Assertion failed:
 * args[0]->IsObject()" in Http2Session::Consume).
 */
export function sentChainRefusal(socket: TLSSocket, policy: PeerPolicy): Error | undefined {
  try {
    const cert = peerCertificateOf(socket);
    // No certificate: refused after the handshake (verifyTlsPeerWithValidity), as before.
    if (cert === undefined) return undefined;
    return revocationOf(policy, { ...readSvidIdentity(cert.raw), issuerSerials: issuerSerialsOf(cert) });
  } catch (error) {
    return error as Error;
  }
}

/** The most certificates a peer may send after its leaf (issuerSerialsOf). */
export const MAX_PEER_CHAIN = 16;

/**
 * Issuer serials of the leaves verified on full handshakes, by leaf fingerprint (SHA-256): a
 * resumed session shows the server the leaf alone (a session keeps no intermediates), and a
 * gRPC call only its connection's leaf. Bounded; the least recently seen entry goes first. A
 * session ticket is only ever issued by the process that verified the full handshake (ticket keys
 * are per process), so a resumed session's leaf is found here unless REMEMBERED_CHAINS other
 * leaves were seen since it was last, and is then refused: meshward clients forget a session
 * whose resumed connection closes before any byte arrives (client-common.ts), so the next
 * connection is a full handshake.
 */
export const REMEMBERED_CHAINS = 10_000;
const rememberedChains = new Map<string, readonly string[]>();
function rememberChain(fingerprint: string, serials: readonly string[]): void {
  rememberedChains.delete(fingerprint);
  rememberedChains.set(fingerprint, serials);
  if (rememberedChains.size > REMEMBERED_CHAINS) rememberedChains.delete(rememberedChains.keys().next().value as string);
}

/**
 * The issuer serials remembered for a leaf seen on a full handshake (its `fingerprint256`), or
 * undefined. A leaf found is remembered afresh (least recently used goes first), so a client that
 * keeps resuming keeps its entry however many other leaves come and go.
 */
export function rememberedIssuerSerials(fingerprint256: string): readonly string[] | undefined {
  const serials = rememberedChains.get(fingerprint256);
  if (serials !== undefined) rememberChain(fingerprint256, serials);
  return serials;
}

const normalizedSets = new WeakMap<ReadonlySet<string>, ReadonlySet<string>>();
function normalizedRevoked(set: ReadonlySet<string>): ReadonlySet<string> {
  let out = normalizedSets.get(set);
  if (out === undefined) {
    out = new Set([...set].map(normalizeSerial));
    normalizedSets.set(set, out);
  }
  return out;
}

/**
 * The SPIFFE ID and serial read from the certificate DER. Exactly one URI SAN is required
 * (X509-SVID spec); display strings from node are not used (CVE-2021-44532 quoting).
 */
export function readSvidIdentity(der: Uint8Array): PeerIdentity {
  let uris: string[];
  let serialBytes: Buffer;
  let notLeaf: string | undefined;
  try {
    const parts = parseCertificateParts(der);
    serialBytes = parts.serial;
    const san = parts.extensions.get(OID.subjectAltName);
    uris = san === undefined ? [] : readGeneralNames(san.value).uris;
    notLeaf = notLeafReason(parts.extensions);
  } catch (error) {
    throw new MeshwardError("E_PEER_NO_SPIFFE_ID", "the peer certificate could not be parsed", { cause: error });
  }
  // OpenSSL accepts a CA certificate as the peer's own certificate when it chains to the bundle;
  // an X509-SVID is a leaf (X509-SVID spec §4.1), so a CA holding an ID is no caller or server.
  if (notLeaf !== undefined) {
    throw new MeshwardError("E_PEER_NOT_LEAF", `the peer certificate is not a leaf SVID: ${notLeaf}`);
  }
  if (uris.length !== 1) {
    throw new MeshwardError(
      "E_PEER_NO_SPIFFE_ID",
      uris.length === 0
        ? "the peer certificate carries no URI SAN, so it is not an X509-SVID"
        : `the peer certificate carries ${uris.length} URI SANs; an X509-SVID has exactly one`,
    );
  }
  let id;
  try {
    id = parseSpiffeId(uris[0]!);
  } catch (error) {
    throw new MeshwardError("E_PEER_NO_SPIFFE_ID", "the peer certificate's URI SAN is not a valid SPIFFE ID", { cause: error });
  }
  const [ns, namespace, appId, ...extra] = id.segments;
  const workload = ns === "ns" && namespace !== undefined && appId !== undefined && extra.length === 0;
  return {
    spiffeId: id.toString(),
    trustDomain: id.trustDomain,
    namespace: workload ? namespace : undefined,
    appId: workload ? appId : undefined,
    serial: normalizeSerial(serialBytes.toString("hex")),
  };
}

/**
 * Identity check + revocation (of the leaf, and of `issuerSerials`, the serials of the rest of its
 * chain when known: revocationOf); throws E_PEER_NO_SPIFFE_ID, E_PEER_NOT_LEAF, E_SPIFFE_MISMATCH or E_CERT_REVOKED.
 */
export function verifyPeerCertificate(der: Uint8Array, policy: PeerPolicy, issuerSerials?: readonly string[]): PeerIdentity {
  const leaf = readSvidIdentity(der);
  const peer: PeerIdentity = issuerSerials === undefined ? leaf : { ...leaf, issuerSerials };
  const revoked = revocationOf(policy, peer);
  if (revoked !== undefined) throw revoked;
  if (!policy.accepts(peer.spiffeId)) {
    throw new MeshwardError(
      "E_SPIFFE_MISMATCH",
      policy.peerRole === "server"
        ? `the server presented ${peer.spiffeId} but ${policy.expected} was expected`
        : `the caller ${peer.spiffeId} is not allowed (allowed: ${policy.expected})`,
      { details: { peer: peer.spiffeId, expected: policy.expected } },
    );
  }
  return peer;
}

/**
 * The certificates a peer's detailed certificate (`getPeerCertificate(true)`, or the one
 * checkServerIdentity receives) links to, leaf first, as DER: the chain the peer sent, with the
 * root Node may have appended from the trusted store. Kept per connection so that a root
 * leaving the bundle ends only connections whose chain rests on it (SecureContextHolder.chainTrusted).
 */
export function peerChainOf(cert: PeerCertificate | undefined): Buffer[] {
  const chain: Buffer[] = [];
  const seen = new Set<object>();
  for (let c = cert as (PeerCertificate & { issuerCertificate?: PeerCertificate }) | undefined; c?.raw !== undefined && !seen.has(c) && chain.length < 10; c = c.issuerCertificate) {
    seen.add(c);
    chain.push(c.raw);
  }
  return chain;
}

/**
 * As peerChainOf, from the X509Certificate `getPeerX509Certificate()` returned (its
 * issuerCertificate links). Node builds that chain once, and a later `getPeerCertificate(true)`
 * on the same socket shows the leaf alone: keep the object from the verification.
 */
export function x509ChainOf(cert: X509Certificate | undefined): Buffer[] {
  const chain: Buffer[] = [];
  const seen = new Set<X509Certificate>();
  for (let c = cert; c !== undefined && !seen.has(c) && chain.length < 10; c = c.issuerCertificate) {
    seen.add(c);
    chain.push(c.raw);
  }
  return chain;
}

/** For `tls.connect({ checkServerIdentity })`: host names are ignored, the SPIFFE ID decides. */
export function spiffeCheckServerIdentity(policy: PeerPolicy): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    if (!cert || !cert.raw) return new MeshwardError("E_PEER_NO_SPIFFE_ID", "the server sent no certificate");
    try {
      verifyPeerCertificate(cert.raw, policy);
      return undefined;
    } catch (error) {
      return error as Error;
    }
  };
}

/**
 * Verifies the peer of an established connection: authorized chain, SPIFFE ID, revocation,
 * and — for resumed sessions, where neither OpenSSL nor checkServerIdentity looked at the
 * certificate again — its validity period.
 */
export function verifyTlsPeer(socket: TLSSocket, policy: PeerPolicy, now: () => number = Date.now): PeerIdentity {
  return verifyTlsPeerWithValidity(socket, policy, now).peer;
}

/** As verifyTlsPeer, also returning the peer certificate's notAfter (for remembering resumable sessions). */
export function verifyTlsPeerWithValidity(socket: TLSSocket, policy: PeerPolicy, now: () => number = Date.now): { peer: PeerIdentity; notAfter: Date; certificate: X509Certificate } {
  if (!socket.authorized) {
    throw new MeshwardError("E_PEER_UNTRUSTED", `the ${policy.peerRole} certificate was not verified: ${String(socket.authorizationError ?? "no certificate")}`);
  }
  const cert = peerCertificateOf(socket);
  if (cert === undefined) throw new MeshwardError("E_PEER_NO_SPIFFE_ID", `the ${policy.peerRole} sent no certificate`);
  const reused = socket.isSessionReused();
  // A resumed session shows the leaf alone: its chain is the one remembered from the full
  // handshake that made the session (by this process: the ticket keys are its own).
  const issuerSerials = reused ? rememberedIssuerSerials(cert.fingerprint256) : issuerSerialsOf(cert);
  if (issuerSerials === undefined) {
    throw new MeshwardError("E_PEER_UNTRUSTED", `the resumed session's ${policy.peerRole} certificate was not verified by a full handshake this process remembers, so its issuer cannot be checked against the revocations; a new connection makes a full handshake`);
  }
  const peer = verifyPeerCertificate(cert.raw, policy, issuerSerials);
  if (!reused) rememberChain(cert.fingerprint256, issuerSerials);
  const notAfter = new Date(cert.validTo);
  if (reused) {
    const t = now();
    if (notAfter.getTime() <= t || Date.parse(cert.validFrom) > t) {
      throw new MeshwardError("E_CERT_EXPIRED", `the resumed session's ${policy.peerRole} certificate (${peer.spiffeId}) is outside its validity period`);
    }
  }
  return { peer, notAfter, certificate: cert };
}

/**
 * Re-checks a peer remembered from the full handshake that created a resumed session. Node
 * exposes no peer certificate on the client side of a resumed session (nor after a TLS 1.3
 * session ticket arrives), so the identity verified then is checked against the current
 * expectation, revocations and its certificate's validity.
 */
export function verifyRememberedPeer(peer: PeerIdentity, notAfter: Date, policy: PeerPolicy, now: () => number = Date.now): PeerIdentity {
  const revoked = revocationOf(policy, peer, `the resumed session's ${policy.peerRole}`);
  if (revoked !== undefined) throw revoked;
  if (!policy.accepts(peer.spiffeId)) {
    throw new MeshwardError("E_SPIFFE_MISMATCH", `the resumed session belongs to ${peer.spiffeId} but ${policy.expected} was expected`, {
      details: { peer: peer.spiffeId, expected: policy.expected },
    });
  }
  if (notAfter.getTime() <= now()) {
    throw new MeshwardError("E_CERT_EXPIRED", `the resumed session's ${policy.peerRole} certificate (${peer.spiffeId}) has expired`);
  }
  return peer;
}
