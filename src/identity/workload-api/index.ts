export { listenWorkloadApi, startWorkloadApiServer, socketPathFrom, x509BundlesResponse, x509SvidResponse } from "./server.ts";
export type { WorkloadApiListener, WorkloadApiServer, WorkloadApiServerOptions } from "./server.ts";
export { DEFAULT_WORKLOAD_API_BACKOFF, fetchX509Svid, snapshotFromResponse, workloadApiSource, workloadApiTarget } from "./client.ts";
export type { WorkloadApiClientOptions, WorkloadApiSourceOptions } from "./client.ts";
export { buildSnapshot, splitDerCertificates } from "./material.ts";
export type { IdentityMaterial } from "./material.ts";
export { ENDPOINT_SOCKET_ENV, SECURITY_HEADER, SECURITY_HEADER_VALUE } from "./proto.ts";
