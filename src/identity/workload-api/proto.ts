import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { packageFile } from "../../util/package-files.ts";

/** proto/workload.proto, written from the SPIFFE Workload API spec (no protobuf package); read when first needed. */
const WORKLOAD_PROTO = "proto/workload.proto";

/** The SSRF guard every call must carry (Workload Endpoint spec, section 3). */
export const SECURITY_HEADER = "workload.spiffe.io";
export const SECURITY_HEADER_VALUE = "true";

/** Conventional environment variable naming the endpoint (Workload Endpoint spec, section 4). */
export const ENDPOINT_SOCKET_ENV = "SPIFFE_ENDPOINT_SOCKET";

// Message shapes as @grpc/proto-loader presents them with keepCase and defaults.
export interface X509SvidMessage {
  spiffe_id: string;
  x509_svid: Buffer;
  x509_svid_key: Buffer;
  bundle: Buffer;
  hint: string;
}

export interface X509SvidResponseMessage {
  svids: X509SvidMessage[];
  crl: Buffer[];
  federated_bundles: Record<string, Buffer>;
}

export interface X509BundlesResponseMessage {
  crl: Buffer[];
  bundles: Record<string, Buffer>;
}

export interface WorkloadApiDefinition {
  readonly service: grpc.ServiceDefinition;
  readonly Client: grpc.ServiceClientConstructor;
}

let loaded: WorkloadApiDefinition | undefined;

export function workloadApiDefinition(): WorkloadApiDefinition {
  if (loaded === undefined) {
    const packageDefinition = loadSync(packageFile(WORKLOAD_PROTO), { keepCase: true, longs: String, enums: String, defaults: true, arrays: true, objects: true });
    const Client = grpc.loadPackageDefinition(packageDefinition)["SpiffeWorkloadAPI"] as grpc.ServiceClientConstructor;
    loaded = { service: Client.service, Client };
  }
  return loaded;
}
