/**
 * The public SDK surface of the `meshward` package. Everything else under src/ is
 * internal and may change; the CLI (`meshward …`) is the other public surface.
 */
export { MeshwardError, isMeshwardError } from "./errors.ts";
export type { ErrorCode } from "./errors.ts";

// SPIFFE IDs
export { parseSpiffeId, parseTrustDomain, formatWorkloadId, parseWorkloadId, isSpiffeId } from "./spiffe/id.ts";
export type { SpiffeId, WorkloadIdentity } from "./spiffe/id.ts";
export { compileMatcher, describeMatcher } from "./spiffe/match.ts";
export type { SpiffeIdMatcher } from "./spiffe/match.ts";

// Workload identity
export { createIdentity } from "./identity/ca-source.ts";
export { createJwtSvidValidator } from "./identity/jwt-svid.ts";
export type { JwtSvidValidator, JwtSvidValidatorOptions, ValidatedJwtSvid } from "./identity/jwt-svid.ts";
export type { CaIdentityOptions, CaIdentitySource } from "./identity/ca-source.ts";
export { staticIdentity } from "./identity/source.ts";
export type { IdentitySource, IdentitySnapshot, IdentityEvent, Svid, TrustBundle } from "./identity/source.ts";
export { fileIdentitySource } from "./identity/file-source.ts";
export type { FileIdentityOptions } from "./identity/file-source.ts";
export { startFileSink } from "./identity/file-sink.ts";
export type { FileSink, FileSinkOptions } from "./identity/file-sink.ts";
export { startWorkloadApiServer } from "./identity/workload-api/server.ts";
export { workloadApiSource, fetchX509Svid } from "./identity/workload-api/client.ts";

// mTLS transport
export * from "./transport/index.ts";

// Access policy (Dapr accessControl semantics)
export { parseAccessControl, compilePolicy } from "./policy/index.ts";
export type { AccessControlConfig, AccessPolicy, AccessRequest, Decision } from "./policy/index.ts";

// Configuration audit
export { auditPaths, auditSources } from "./audit/audit.ts";
export { driftPaths } from "./audit/drift.ts";
