/** The CA API wire format (proto/sentry.proto), shared by the CA server and its clients. */
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";

/** proto/sentry.proto, loaded once; the same file feeds our gRPC server codec and clients. */
export const SENTRY_PROTO_PATH = fileURLToPath(new URL("../../proto/sentry.proto", import.meta.url));
export const SIGN_CERTIFICATE_PATH = "/dapr.proto.sentry.v1.CA/SignCertificate";

export const TokenValidator = {
  UNKNOWN: 0,
  INSECURE: 1,
  KUBERNETES: 2,
  JWKS: 3,
  JOIN_TOKEN: 1001,
  SVID: 1002,
} as const;

export interface SignCertificateRequestMessage {
  id: string;
  token: string;
  trustDomain: string;
  namespace: string;
  certificateSigningRequest: Uint8Array;
  tokenValidator: number;
}

export interface SignCertificateResponseMessage {
  workloadCertificate: Uint8Array;
  trustChainCertificates: Uint8Array[];
  validUntil: { seconds: number; nanos: number };
}

let types: { request: protobuf.Type; response: protobuf.Type } | undefined;

function loadTypes() {
  if (types === undefined) {
    const root = protobuf.loadSync(SENTRY_PROTO_PATH);
    types = {
      request: root.lookupType("dapr.proto.sentry.v1.SignCertificateRequest"),
      response: root.lookupType("dapr.proto.sentry.v1.SignCertificateResponse"),
    };
  }
  return types;
}

export function decodeSignRequest(bytes: Uint8Array): SignCertificateRequestMessage {
  const { request } = loadTypes();
  const message = request.decode(bytes);
  return request.toObject(message, { defaults: true, enums: Number, bytes: Buffer as unknown as typeof String }) as SignCertificateRequestMessage;
}

export function encodeSignResponse(message: SignCertificateResponseMessage): Uint8Array {
  const { response } = loadTypes();
  return response.encode(response.fromObject(message)).finish();
}

export function encodeSignRequest(message: SignCertificateRequestMessage): Uint8Array {
  const { request } = loadTypes();
  return request.encode(request.fromObject(message)).finish();
}

export function decodeSignResponse(bytes: Uint8Array): SignCertificateResponseMessage {
  const { response } = loadTypes();
  return response.toObject(response.decode(bytes), { defaults: true, longs: Number, bytes: Buffer as unknown as typeof String }) as SignCertificateResponseMessage;
}
