import type { X509Certificate } from "node:crypto";
import { MeshwardError } from "../errors.ts";
import { DerError } from "./der.ts";
import { certificateParts, toX509 } from "./inspect.ts";
import { constrainedNames, NameConstraintError, nameConstraintViolation, readNameConstraints } from "./name-constraints.ts";
import type { NameConstraints } from "./name-constraints.ts";
import { OID } from "./oids.ts";
import { KEY_USAGE_BITS, readBasicConstraints, readKeyUsage } from "./x509der.ts";
import type { BasicConstraints } from "./x509der.ts";

export type CertificateInput = Uint8Array | string | X509Certificate;

export interface ChainVerification {
  readonly leaf: CertificateInput;
  readonly intermediates?: readonly CertificateInput[];
  readonly roots: readonly CertificateInput[];
  readonly at?: Date;
}

function describe(certificate: X509Certificate): string {
  return `${JSON.stringify(certificate.subject.replace(/\n/g, ", "))} (serial ${certificate.serialNumber})`;
}

function chainInvalid(message: string): MeshwardError {
  return new MeshwardError("E_CHAIN_INVALID", message);
}

function basicConstraintsOf(certificate: X509Certificate): BasicConstraints {
  const ext = certificateParts(certificate).extensions.get(OID.basicConstraints);
  if (ext === undefined) return { ca: false, pathLength: undefined };
  try {
    return readBasicConstraints(ext.value);
  } catch (error) {
    throw chainInvalid(`certificate ${describe(certificate)} has a malformed basicConstraints extension${error instanceof DerError ? `: ${error.message}` : ""}`);
  }
}

function keyUsageOf(certificate: X509Certificate): Set<number> | undefined {
  const ext = certificateParts(certificate).extensions.get(OID.keyUsage);
  if (ext === undefined) return undefined;
  try {
    return readKeyUsage(ext.value);
  } catch {
    throw chainInvalid(`certificate ${describe(certificate)} has a malformed keyUsage extension`);
  }
}

function checkValidity(certificate: X509Certificate, at: Date): void {
  const { notBefore, notAfter } = certificateParts(certificate);
  if (at.getTime() < notBefore.getTime()) {
    throw new MeshwardError("E_CERT_NOT_YET_VALID", `certificate ${describe(certificate)} is not valid before ${notBefore.toISOString()} (checked at ${at.toISOString()}); check the clocks`);
  }
  if (at.getTime() > notAfter.getTime()) {
    throw new MeshwardError("E_CERT_EXPIRED", `certificate ${describe(certificate)} expired at ${notAfter.toISOString()} (checked at ${at.toISOString()})`);
  }
}

/** Same issuer name (byte-exact DER, or node's text form) and a signature that verifies with the candidate's key. */
function signedBy(child: X509Certificate, candidate: X509Certificate): boolean {
  const sameName = certificateParts(child).issuer.equals(certificateParts(candidate).subject) || child.issuer === candidate.subject;
  if (!sameName) return false;
  try {
    return child.verify(candidate.publicKey);
  } catch {
    return false;
  }
}

/** A CA in the path: CA:TRUE, keyCertSign when keyUsage is present, pathLen >= CAs below it. */
function checkCa(certificate: X509Certificate, casBelow: number, role: string): void {
  const basic = basicConstraintsOf(certificate);
  if (!basic.ca) throw chainInvalid(`${role} ${describe(certificate)} signed a certificate but is not a CA (basicConstraints CA:FALSE or missing)`);
  const usage = keyUsageOf(certificate);
  if (usage !== undefined && !usage.has(KEY_USAGE_BITS.keyCertSign)) {
    throw chainInvalid(`${role} ${describe(certificate)} is not allowed to sign certificates (keyUsage lacks keyCertSign)`);
  }
  if (basic.pathLength !== undefined && casBelow > basic.pathLength) {
    throw chainInvalid(`${role} ${describe(certificate)} allows ${basic.pathLength} CA certificate(s) below it (pathLen), found ${casBelow}`);
  }
}

function nameConstraintsOf(certificate: X509Certificate, role: string): NameConstraints | undefined {
  const ext = certificateParts(certificate).extensions.get(OID.nameConstraints);
  if (ext === undefined) return undefined;
  try {
    return readNameConstraints(ext.value);
  } catch (error) {
    if (error instanceof NameConstraintError) throw chainInvalid(`${role} ${describe(certificate)} has a nameConstraints extension meshward does not accept: ${error.message}`);
    throw chainInvalid(`${role} ${describe(certificate)} has a malformed nameConstraints extension${error instanceof DerError ? `: ${error.message}` : ""}`);
  }
}

/**
 * RFC 5280 §6.1.3 (b)/(c): every CA's name constraints hold for every certificate below it (the
 * root's too, as OpenSSL and Go apply them). Without this, a sub-CA that an organisation root
 * confined to other names (say, URI other.example) could sign an SVID for any SPIFFE ID, and
 * this check would pass it. See name-constraints.ts for the forms checked and those refused.
 */
function checkNameConstraints(chain: readonly X509Certificate[]): void {
  for (let i = 1; i < chain.length; i++) {
    const ca = chain[i]!;
    const role = i === chain.length - 1 ? "root" : "intermediate";
    const constraints = nameConstraintsOf(ca, role);
    if (constraints === undefined) continue;
    for (let j = 0; j < i; j++) {
      const below = chain[j]!;
      let violation: string | undefined;
      try {
        violation = nameConstraintViolation(constraints, constrainedNames(certificateParts(below)));
      } catch (error) {
        if (error instanceof NameConstraintError) throw chainInvalid(`${role} ${describe(ca)} has a nameConstraints extension meshward does not accept: ${error.message}`);
        throw chainInvalid(`certificate ${describe(below)} has a malformed subjectAltName or subject${error instanceof DerError ? `: ${error.message}` : ""}`);
      }
      if (violation !== undefined) {
        throw chainInvalid(`${j === 0 ? "leaf" : "intermediate"} ${describe(below)} violates the name constraints of ${role} ${describe(ca)}: ${violation}`);
      }
    }
  }
}

/**
 * Verifies leaf → intermediates → one of the roots: signatures, validity at `at`, CA flags,
 * path lengths and name constraints. Returns the chain leaf first, root last. Errors:
 * E_CHAIN_UNTRUSTED, E_CERT_EXPIRED, E_CERT_NOT_YET_VALID, E_CHAIN_INVALID.
 */
export function verifyChain(input: ChainVerification): X509Certificate[] {
  const at = input.at ?? new Date();
  const leaf = toX509(input.leaf);
  const intermediates = (input.intermediates ?? []).map(toX509);
  const roots = input.roots.map(toX509);
  if (roots.length === 0) throw new MeshwardError("E_CHAIN_UNTRUSTED", "no trusted roots were given");

  if (basicConstraintsOf(leaf).ca) throw chainInvalid(`leaf ${describe(leaf)} is a CA certificate; a CA must not be used as a leaf`);
  const leafUsage = keyUsageOf(leaf);
  if (leafUsage?.has(KEY_USAGE_BITS.keyCertSign) || leafUsage?.has(KEY_USAGE_BITS.cRLSign)) {
    throw chainInvalid(`leaf ${describe(leaf)} has keyCertSign or cRLSign key usage`);
  }
  checkValidity(leaf, at);

  const chain = [leaf];
  const unused = new Set(intermediates);
  let current = leaf;
  for (;;) {
    const casBelow = chain.length - 1;
    const root = roots.find((candidate) => signedBy(current, candidate));
    if (root !== undefined) {
      checkCa(root, casBelow, "root");
      checkValidity(root, at);
      chain.push(root);
      checkNameConstraints(chain);
      return chain;
    }
    let next: X509Certificate | undefined;
    for (const candidate of unused) {
      if (candidate.raw.equals(current.raw)) continue;
      if (signedBy(current, candidate)) {
        next = candidate;
        break;
      }
    }
    if (next === undefined) {
      throw new MeshwardError(
        "E_CHAIN_UNTRUSTED",
        `no trusted root or given intermediate signed ${describe(current)} (issuer ${JSON.stringify(current.issuer.replace(/\n/g, ", "))}); is the right trust bundle configured?`,
      );
    }
    checkCa(next, casBelow, "intermediate");
    checkValidity(next, at);
    unused.delete(next);
    chain.push(next);
    current = next;
  }
}
