/**
 * RFC 5280 §4.2.1.10 name constraints, enforced for the name forms an SVID path carries: URIs
 * (the SPIFFE ID), DNS names and IP addresses in the subjectAltName. The X509-SVID spec (§4.2)
 * lets a signing certificate carry URI name constraints, so a CA in the path that has them is
 * checked, not refused. Forms meshward does not check are refused rather than ignored:
 * directoryName, otherName, x400Address, ediPartyName and registeredID subtrees (Go's
 * crypto/x509, which Dapr and SPIRE use, refuses a critical extension holding them too), email
 * subtrees once a certificate below carries an email address, and minimum/maximum other than
 * the defaults (RFC 5280: MUST be 0 and absent).
 *
 * Matching, where implementations differ, takes the stricter reading for permitted subtrees and
 * the wider for excluded ones:
 * - URI: the host of the URI's authority (case-insensitive); a URI without a host, or whose host
 *   is an IP address, is refused when URI constraints apply (RFC 5280). "host.example" permits
 *   that host only (RFC 5280, OpenSSL) but excludes it and its subdomains too (Go's reading);
 *   ".example" means subdomains only.
 * - DNS: "example.com" is the name and every subdomain, ".example.com" subdomains only (Go,
 *   OpenSSL), compared label by label, case-insensitive. An empty constraint matches every name.
 * - IP: address and mask of the same family; an IPv4-mapped IPv6 address counts as its IPv4
 *   address for an excluded IPv4 range.
 */
import { children, content, DerError, expectTag, readOid, readWhole, TAG } from "./der.ts";
import type { Tlv } from "./der.ts";
import { OID } from "./oids.ts";
import type { CertificateParts } from "./x509der.ts";

type Kind = "dns" | "uri" | "ip" | "email";

interface Subtree {
  readonly kind: Kind;
  /** DNS, URI, email: the text; IP: address then mask (8 or 32 bytes). */
  readonly text: string;
  readonly bytes: Buffer;
}

export interface NameConstraints {
  readonly permitted: readonly Subtree[];
  readonly excluded: readonly Subtree[];
}

/** Names of one certificate that name constraints apply to. */
interface Names {
  readonly dns: string[];
  readonly uri: string[];
  readonly ip: Buffer[];
  /** rfc822Name SANs and emailAddress attributes of the subject. */
  readonly email: string[];
}

/** A nameConstraints value meshward cannot (or will not) check, or one that is malformed. */
export class NameConstraintError extends Error {
  override readonly name = "NameConstraintError";
}

const UNSUPPORTED_FORMS: Record<number, string> = {
  0xa0: "otherName",
  0xa3: "x400Address",
  0xa4: "directoryName",
  0xa5: "ediPartyName",
  0x88: "registeredID",
};

const FORMS: Record<number, Kind> = { 0x81: "email", 0x82: "dns", 0x86: "uri", 0x87: "ip" };

function readSubtrees(value: Uint8Array, list: Tlv): Subtree[] {
  const out: Subtree[] = [];
  const subtrees = children(value, list);
  if (subtrees.length === 0) throw new DerError("empty GeneralSubtrees");
  for (const subtree of subtrees) {
    const [base, ...rest] = children(value, expectTag(subtree, TAG.SEQUENCE, "GeneralSubtree"));
    if (base === undefined) throw new DerError("GeneralSubtree without a base");
    if (rest.length > 0) throw new NameConstraintError("a subtree sets minimum or maximum (RFC 5280: minimum is 0 and maximum absent)");
    const unsupported = UNSUPPORTED_FORMS[base.tag];
    if (unsupported !== undefined) throw new NameConstraintError(`it constrains ${unsupported} names, which meshward does not check`);
    const kind = FORMS[base.tag];
    if (kind === undefined) throw new DerError(`unknown GeneralName tag 0x${base.tag.toString(16)}`);
    const bytes = content(value, base);
    if (kind === "ip" && bytes.length !== 8 && bytes.length !== 32) throw new DerError("an iPAddress subtree is not an address and mask of 4 or 16 bytes");
    out.push({ kind, text: bytes.toString("latin1"), bytes });
  }
  return out;
}

/** The nameConstraints extension value. Throws DerError (malformed) or NameConstraintError (unsupported). */
export function readNameConstraints(value: Uint8Array): NameConstraints {
  const fields = children(value, readWhole(value, TAG.SEQUENCE));
  let permitted: Subtree[] = [];
  let excluded: Subtree[] = [];
  let index = 0;
  if (fields[index]?.tag === 0xa0) permitted = readSubtrees(value, fields[index++]!);
  if (fields[index]?.tag === 0xa1) excluded = readSubtrees(value, fields[index++]!);
  if (index !== fields.length) throw new DerError("unexpected field in NameConstraints");
  if (index === 0) throw new DerError("NameConstraints holds neither permitted nor excluded subtrees");
  return { permitted, excluded };
}

/** The names of a certificate that constraints apply to: SANs of the four checked forms and the subject's email addresses. */
export function constrainedNames(parts: CertificateParts): Names {
  const names: Names = { dns: [], uri: [], ip: [], email: [] };
  const san = parts.extensions.get(OID.subjectAltName);
  if (san !== undefined) {
    for (const name of children(san.value, readWhole(san.value, TAG.SEQUENCE))) {
      const bytes = content(san.value, name);
      if (name.tag === 0x82) names.dns.push(bytes.toString("latin1"));
      else if (name.tag === 0x86) names.uri.push(bytes.toString("latin1"));
      else if (name.tag === 0x87) names.ip.push(bytes);
      else if (name.tag === 0x81) names.email.push(bytes.toString("latin1"));
    }
  }
  const subject = parts.subject;
  for (const rdn of children(subject, readWhole(subject, TAG.SEQUENCE))) {
    for (const attribute of children(subject, expectTag(rdn, TAG.SET, "RDN"))) {
      const [type, attributeValue] = children(subject, expectTag(attribute, TAG.SEQUENCE, "attribute"));
      if (readOid(subject, type, "attribute type") === OID.emailAddress && attributeValue !== undefined) {
        names.email.push(content(subject, attributeValue).toString("latin1"));
      }
    }
  }
  return names;
}

/** Lower-case labels of a DNS name, or undefined when it is not a usable name (empty label). */
function labels(name: string): string[] | undefined {
  const trimmed = name.endsWith(".") ? name.slice(0, -1) : name;
  const parts = trimmed.toLowerCase().split(".");
  return parts.some((part) => part.length === 0) ? undefined : parts;
}

/** `name` is `constraint` or a subdomain of it (label-wise); with a leading dot, a strict subdomain only. */
function domainMatches(name: string, constraint: string, exactUnlessDot: boolean, unusable: boolean): boolean {
  if (constraint.length === 0) return true;
  const subdomainsOnly = constraint.startsWith(".");
  const wanted = labels(subdomainsOnly ? constraint.slice(1) : constraint);
  const have = labels(name);
  if (wanted === undefined || have === undefined) return unusable;
  if (have.length < wanted.length || (subdomainsOnly && have.length === wanted.length)) return false;
  if (exactUnlessDot && !subdomainsOnly && have.length !== wanted.length) return false;
  const offset = have.length - wanted.length;
  return wanted.every((label, i) => label === have[offset + i]);
}

/** The host of a URI's authority (userinfo and port removed), or why there is none to check. */
function uriHost(uri: string): { host: string } | { problem: string } {
  const match = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(uri);
  if (match === null) return { problem: "has no authority (host)" };
  let authority = match[1]!;
  const at = authority.lastIndexOf("@");
  if (at >= 0) authority = authority.slice(at + 1);
  if (authority.startsWith("[")) return { problem: "names an IP address as its host" };
  const host = authority.replace(/:\d*$/, "");
  if (host.length === 0) return { problem: "has an empty host" };
  if (/^[0-9.]+$/.test(host)) return { problem: "names an IP address as its host" };
  // Percent-encoding or other characters would let one host be spelled in ways a suffix test misses.
  if (!/^[A-Za-z0-9._-]+$/.test(host)) return { problem: "has a host that is not a plain domain name" };
  return { host };
}

function ipMatches(ip: Buffer, subtree: Subtree, widen: boolean): boolean {
  const half = subtree.bytes.length / 2;
  let address = ip;
  // ::ffff:a.b.c.d is a.b.c.d to a TLS stack; an excluded IPv4 range covers it too.
  if (widen && half === 4 && ip.length === 16 && ip.subarray(0, 12).equals(Buffer.from("00000000000000000000ffff", "hex"))) address = ip.subarray(12);
  if (address.length !== half) return false;
  for (let i = 0; i < half; i++) {
    const mask = subtree.bytes[half + i]!;
    if ((address[i]! & mask) !== (subtree.bytes[i]! & mask)) return false;
  }
  return true;
}

function describeName(kind: Kind, name: string | Buffer): string {
  if (typeof name === "string") return `${kind === "dns" ? "DNS name" : kind === "uri" ? "URI" : "email address"} ${JSON.stringify(name)}`;
  const ip = name.length === 4 ? [...name].join(".") : (name.toString("hex").match(/.{4}/g) ?? []).join(":");
  return `IP address ${ip}`;
}

/**
 * Why `names` (of a certificate below the constraining CA) violate `constraints`, or undefined
 * when they do not. Throws NameConstraintError for constraints it does not check.
 */
export function nameConstraintViolation(constraints: NameConstraints, names: Names): string | undefined {
  const all = [...constraints.permitted, ...constraints.excluded];
  if (names.email.length > 0 && all.some((subtree) => subtree.kind === "email")) {
    throw new NameConstraintError("it constrains email addresses, which meshward does not check, and a certificate below it carries one");
  }
  for (const kind of ["uri", "dns", "ip"] as const) {
    const permitted = constraints.permitted.filter((subtree) => subtree.kind === kind);
    const excluded = constraints.excluded.filter((subtree) => subtree.kind === kind);
    if (permitted.length === 0 && excluded.length === 0) continue;
    for (const name of names[kind]) {
      let matches: (subtree: Subtree, widen: boolean) => boolean;
      if (kind === "uri") {
        const host = uriHost(name as string);
        if ("problem" in host) return `${describeName(kind, name)} ${host.problem}, so URI name constraints cannot be checked`;
        matches = (subtree, widen) => domainMatches(host.host, subtree.text, !widen, widen);
      } else if (kind === "dns") {
        matches = (subtree, widen) => domainMatches(name as string, subtree.text, false, widen);
      } else {
        matches = (subtree, widen) => ipMatches(name as Buffer, subtree, widen);
      }
      if (permitted.length > 0 && !permitted.some((subtree) => matches(subtree, false))) {
        return `${describeName(kind, name)} is outside its permitted subtrees (${permitted.map((s) => JSON.stringify(kind === "ip" ? s.bytes.toString("hex") : s.text)).join(", ")})`;
      }
      const hit = excluded.find((subtree) => matches(subtree, true));
      if (hit !== undefined) return `${describeName(kind, name)} is in its excluded subtree ${JSON.stringify(kind === "ip" ? hit.bytes.toString("hex") : hit.text)}`;
    }
  }
  return undefined;
}
