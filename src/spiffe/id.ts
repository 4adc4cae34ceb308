import { MeshwardError, shownValue } from "../errors.ts";

/**
 * SPIFFE IDs per the SPIFFE-ID specification (spiffe/standards, SPIFFE-ID.md):
 * `spiffe://<trust-domain><path>`; the trust domain is lowercase `a-z 0-9 . - _`; each path
 * segment is `a-z A-Z 0-9 . - _`, never empty, `.` or `..`; no port, user info, query or
 * fragment; the whole ID is at most 2048 bytes.
 */
export interface SpiffeId {
  readonly trustDomain: string;
  /** "" for the trust domain's own ID, otherwise "/seg/seg". */
  readonly path: string;
  readonly segments: readonly string[];
  toString(): string;
}

export const SPIFFE_SCHEME = "spiffe://";
export const MAX_SPIFFE_ID_BYTES = 2048;
const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[a-zA-Z0-9._-]+$/;

function invalid(input: string, reason: string): MeshwardError {
  return new MeshwardError("E_SPIFFE_ID_INVALID", `invalid SPIFFE ID ${shown(input)}: ${reason}`, {
    details: { reason },
  });
}

/** An ID or name as its error shows it: up to 120 characters (IDs are long by nature), never a PEM block. */
function shown(value: string): string {
  return shownValue(value, 120);
}

/** Validates a trust domain name and returns it; throws E_TRUST_DOMAIN_INVALID. */
export function parseTrustDomain(name: string): string {
  const fail = (reason: string) =>
    new MeshwardError("E_TRUST_DOMAIN_INVALID", `invalid trust domain ${shown(name)}: ${reason}`, {
      details: { reason },
    });
  if (typeof name !== "string" || name.length === 0) throw fail("it is empty");
  if (name.startsWith(SPIFFE_SCHEME)) throw fail("give the trust domain name alone, without spiffe://");
  if (name.includes(":")) throw fail("a trust domain has no port");
  if (name.includes("@")) throw fail("a trust domain has no user info");
  if (name.includes("/")) throw fail("a trust domain has no path");
  if (!TRUST_DOMAIN_CHARS.test(name)) {
    throw fail(/[A-Z]/.test(name) ? "it must be lowercase" : "only a-z, 0-9, '.', '-' and '_' are allowed");
  }
  if (Buffer.byteLength(name) > 255) throw fail("it is longer than 255 bytes");
  return name;
}

/**
 * IDs already parsed: a CA parses the same few IDs on every renewal (attestation, the request
 * check, the leaf template), each parse ~2 µs. The results are frozen, so they are shared;
 * bounded in count and length, emptied when full; only valid IDs are kept.
 */
const parsedIds = new Map<string, SpiffeId>();
const PARSED_IDS_MAX = 1024;
const PARSED_ID_MAX_LENGTH = 256;

export function parseSpiffeId(input: string): SpiffeId {
  const known = typeof input === "string" ? parsedIds.get(input) : undefined;
  if (known !== undefined) return known;
  const id = parseSpiffeIdUncached(input);
  if (input.length <= PARSED_ID_MAX_LENGTH) {
    if (parsedIds.size >= PARSED_IDS_MAX) parsedIds.clear();
    parsedIds.set(input, id);
  }
  return id;
}

function parseSpiffeIdUncached(input: string): SpiffeId {
  if (typeof input !== "string" || input.length === 0) throw invalid(String(input), "it is empty");
  if (Buffer.byteLength(input, "utf8") > MAX_SPIFFE_ID_BYTES) throw invalid(input, `it is longer than ${MAX_SPIFFE_ID_BYTES} bytes`);
  if (!input.startsWith(SPIFFE_SCHEME)) {
    throw invalid(input, input.toLowerCase().startsWith(SPIFFE_SCHEME) ? "the scheme must be lowercase spiffe://" : "it must start with spiffe://");
  }
  if (input.includes("?")) throw invalid(input, "a query is not allowed");
  if (input.includes("#")) throw invalid(input, "a fragment is not allowed");
  const rest = input.slice(SPIFFE_SCHEME.length);
  const slash = rest.indexOf("/");
  const authority = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? "" : rest.slice(slash);
  if (authority.length === 0) throw invalid(input, "the trust domain is missing");
  if (authority.includes("@")) throw invalid(input, "user info is not allowed");
  if (authority.includes(":")) throw invalid(input, "a port is not allowed");
  if (!TRUST_DOMAIN_CHARS.test(authority)) {
    throw invalid(
      input,
      /[A-Z]/.test(authority) ? "the trust domain must be lowercase" : "the trust domain may hold only a-z, 0-9, '.', '-' and '_'",
    );
  }
  const segments = path === "" ? [] : path.slice(1).split("/");
  for (const segment of segments) {
    if (segment === "") throw invalid(input, path.endsWith("/") ? "a trailing slash is not allowed" : "empty path segments are not allowed");
    if (segment === "." || segment === "..") throw invalid(input, "'.' and '..' path segments are not allowed");
    if (!SEGMENT_CHARS.test(segment)) throw invalid(input, `path segment ${shown(segment)} may hold only a-z, A-Z, 0-9, '.', '-' and '_'`);
  }
  return makeId(authority, segments);
}

function makeId(trustDomain: string, segments: readonly string[]): SpiffeId {
  const path = segments.length === 0 ? "" : `/${segments.join("/")}`;
  const text = `${SPIFFE_SCHEME}${trustDomain}${path}`;
  return Object.freeze({ trustDomain, path, segments: Object.freeze([...segments]), toString: () => text });
}

export function isSpiffeId(input: string): boolean {
  try {
    parseSpiffeId(input);
    return true;
  } catch {
    return false;
  }
}

/** Workload identity in Dapr's form: spiffe://<trust-domain>/ns/<namespace>/<app-id>. */
export interface WorkloadIdentity {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly appId: string;
}

export function formatWorkloadId(identity: WorkloadIdentity): string {
  const td = parseTrustDomain(identity.trustDomain);
  checkWorkloadSegment("namespace", identity.namespace);
  checkWorkloadSegment("app id", identity.appId);
  return parseSpiffeId(`${SPIFFE_SCHEME}${td}/ns/${identity.namespace}/${identity.appId}`).toString();
}

/** Checks a namespace or app id as a path segment of a workload ID; throws E_SPIFFE_ID_INVALID. */
export function checkWorkloadSegment(label: "namespace" | "app id", value: unknown): void {
  if (typeof value !== "string" || value.length === 0) {
    throw new MeshwardError("E_SPIFFE_ID_INVALID", `the ${label} is empty`);
  }
  if (value === "." || value === ".." || !SEGMENT_CHARS.test(value)) {
    throw new MeshwardError(
      "E_SPIFFE_ID_INVALID",
      `the ${label} ${shown(value)} may hold only a-z, A-Z, 0-9, '.', '-' and '_' (and is not '.' or '..')`,
    );
  }
}

/** Parses spiffe://td/ns/<namespace>/<app-id>; throws E_SPIFFE_ID_NOT_WORKLOAD for other shapes. */
export function parseWorkloadId(input: string): WorkloadIdentity {
  const id = parseSpiffeId(input);
  const [ns, namespace, appId, ...extra] = id.segments;
  if (ns !== "ns" || namespace === undefined || appId === undefined || extra.length > 0) {
    throw new MeshwardError(
      "E_SPIFFE_ID_NOT_WORKLOAD",
      `SPIFFE ID ${shown(input)} is not a workload ID of the form spiffe://<trust-domain>/ns/<namespace>/<app-id>`,
    );
  }
  return { trustDomain: id.trustDomain, namespace, appId };
}
