import type { X509Certificate } from "node:crypto";
import { MeshwardError } from "../errors.ts";
import { DerError } from "../pki/der.ts";
import { certificateParts } from "../pki/inspect.ts";
import { NameConstraintError, readNameConstraints } from "../pki/name-constraints.ts";
import { OID } from "../pki/oids.ts";
import type { AnchorMode, CaState } from "./anchors.ts";
import { formatCertificateTime } from "../util/duration.ts";

/**
 * An imported root is the trust anchor of every workload: OpenSSL accepts a path from any CA under
 * it, and the identity is read from the leaf's URI SAN alone. So every CA the root has signed or
 * will sign (an organisation's other issuing CAs) could mint any identity of the trust domain.
 * SPIRE (UpstreamAuthority "disk" with bundle_file_path) and Istio (plugged-in CA certificates)
 * trust an upstream root that way; meshward treats a sibling CA as hostile (a renewal proof must be
 * a certificate this CA issued), so it imports only a root whose nameConstraints confine URI names
 * to the trust domain, or one the operator accepted with --trust-every-ca-under-root.
 */
export const TRUST_EVERY_CA_FLAG = "--trust-every-ca-under-root";

/** A root accepted with --trust-every-ca-under-root, as ca.json records it. */
export interface RootTrustChoice {
  readonly rootFingerprint: string;
  readonly subject: string;
  readonly acceptedAt: string;
}

function subjectOf(certificate: X509Certificate): string {
  return certificate.subject.replace(/\n/g, ", ");
}

/**
 * Why `root` does not confine the URI names below it to `spiffe://<trustDomain>`, or undefined when
 * it does: its nameConstraints must permit URI subtrees, each exactly the trust domain's host.
 * RFC 5280 §4.2.1.10 matches a URI constraint against the URI's host; "td" permits that host only
 * (OpenSSL; Go also lets it cover subdomains, which are other trust domains, never this one), and
 * ".td" permits only subdomains. Excluded subtrees alone confine nothing.
 */
export function rootScopeGap(root: X509Certificate, trustDomain: string): string | undefined {
  const extension = certificateParts(root).extensions.get(OID.nameConstraints);
  if (extension === undefined) return "it has no nameConstraints extension";
  let permitted: string[];
  try {
    permitted = readNameConstraints(extension.value).permitted.filter((subtree) => subtree.kind === "uri").map((subtree) => subtree.text);
  } catch (error) {
    if (error instanceof DerError || error instanceof NameConstraintError) return `its nameConstraints cannot be read (${error.message})`;
    throw error;
  }
  if (permitted.length === 0) return "its nameConstraints permit no URI subtree, so they leave URI names (SPIFFE IDs) free";
  const others = permitted.filter((host) => host.toLowerCase() !== trustDomain);
  if (others.length > 0) return `its nameConstraints also permit URI names under ${others.map((host) => JSON.stringify(host)).join(", ")}, not only ${JSON.stringify(trustDomain)}`;
  return undefined;
}

/**
 * Refuses (E_ROOT_UNCONSTRAINED) a root about to be imported that does not confine URI names to the
 * trust domain, unless the operator accepted it (`trustEveryCa`). `issuerChain` (issuer first) only
 * sharpens the message: a constrained intermediate does not help, since the bundle trusts the root.
 * Returns the choice to record in ca.json when the root was accepted that way.
 */
export function checkRootScope(options: {
  root: X509Certificate;
  trustDomain: string;
  what: string;
  trustEveryCa: boolean;
  now: Date;
  issuerChain?: readonly X509Certificate[];
}): RootTrustChoice | undefined {
  const gap = rootScopeGap(options.root, options.trustDomain);
  if (gap === undefined) return undefined;
  if (options.trustEveryCa) return { rootFingerprint: options.root.fingerprint256, subject: subjectOf(options.root), acceptedAt: options.now.toISOString() };
  const td = options.trustDomain;
  const confinedBelow = (options.issuerChain ?? []).find((certificate) => rootScopeGap(certificate, td) === undefined);
  throw new MeshwardError(
    "E_ROOT_UNCONSTRAINED",
    `${options.what} ${JSON.stringify(subjectOf(options.root))} does not confine identities to spiffe://${td}: ${gap}. ` +
      `Workloads trust every certificate that chains to a root in their bundle and take its identity from the URI SAN, so every CA this root has signed or will sign ` +
      `(your organisation's other issuing CAs, and any CA below them) could mint a certificate for any workload of ${td}, and sidecars and SDK peers would accept it as that workload. ` +
      (confinedBelow === undefined
        ? ""
        : `${JSON.stringify(subjectOf(confinedBelow))} in the issuer chain is confined to ${td}, but that does not protect the mesh: the bundle holds the root, and CAs the root signs beside it are not bound by its constraints. `) +
      `Either import a root whose nameConstraints permit only this trust domain's URIs (a permitted URI subtree "${td}"; openssl: nameConstraints=critical,permitted;URI:${td}), ` +
      `or accept that every CA under this root can act as any workload of ${td} with ${TRUST_EVERY_CA_FLAG}, which ca.json records ('meshward ca status' shows it and 'meshward ca serve' warns at every start). Nothing was written`,
    { details: { root: options.root.fingerprint256, trustDomain: td, reason: gap } },
  );
}

/** A root of the bundle under which any CA can mint identities of the trust domain. */
export interface RootTrustingEveryCa {
  readonly root: X509Certificate;
  /** When the operator accepted it; undefined for a root imported before meshward checked (older directories). */
  readonly acceptedAt?: string;
}

/**
 * Roots of the bundle that every CA under can mint identities with: those accepted with
 * --trust-every-ca-under-root, and (external-root CAs, whose every root was imported) unconfined
 * roots imported before this was checked. A root meshward generated has no other CA under it.
 */
export function rootsTrustingEveryCa(anchors: { roots: readonly X509Certificate[]; state: CaState; mode: AnchorMode; trustDomain: string }): RootTrustingEveryCa[] {
  const accepted = new Map((anchors.state.trustEveryCaUnderRoot ?? []).map((choice) => [choice.rootFingerprint, choice]));
  return anchors.roots.flatMap((root) => {
    const choice = accepted.get(root.fingerprint256);
    if (choice !== undefined) return [{ root, acceptedAt: choice.acceptedAt }];
    if (anchors.mode === "external-root" && rootScopeGap(root, anchors.trustDomain) !== undefined) return [{ root }];
    return [];
  });
}

/** A time kept as ISO 8601 (with milliseconds), shown as the CLI shows times: whole seconds. */
function shownTime(iso: string): string {
  const time = new Date(iso);
  return Number.isNaN(time.getTime()) ? iso : formatCertificateTime(time);
}

/** How such a root came to be trusted. */
export function howTrusted(entry: RootTrustingEveryCa): string {
  return entry.acceptedAt !== undefined ? `accepted with ${TRUST_EVERY_CA_FLAG} at ${shownTime(entry.acceptedAt)}` : "imported before meshward checked root name constraints";
}

/** One sentence on such a root, for the serve warning and the status page. */
export function describeRootTrustingEveryCa(entry: RootTrustingEveryCa, trustDomain: string): string {
  return `root ${JSON.stringify(subjectOf(entry.root))} (${entry.root.fingerprint256}) does not confine identities to spiffe://${trustDomain} (${howTrusted(entry)}): every CA under it can mint certificates for any workload of ${trustDomain} that the mesh accepts`;
}
