/** The CA API wire format (proto/sentry.proto), shared by the CA server and its clients. */
import { ProtobufError, ProtobufWriter, readFields, type FieldValue } from "./protobuf-wire.ts";

// proto/sentry.proto is the contract the codec below implements (test/protocol checks it against protobufjs).
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
  /** Field 7: audiences of the JWT-SVIDs asked for (none: no JWT-SVID). */
  jwtAudiences?: string[];
}

export interface SignCertificateResponseMessage {
  workloadCertificate: Uint8Array;
  trustChainCertificates: Uint8Array[];
  validUntil: { seconds: number; nanos: number };
  /** Field 4 (google.protobuf.StringValue): one JWT-SVID for every requested audience (and the trust domain). */
  jwt?: string;
  /** Field 5 (map<string, google.protobuf.StringValue>): one JWT-SVID per requested audience. */
  perAudienceJwts?: Record<string, string>;
}

/** google.protobuf.StringValue: { string value = 1; } */
function stringValue(value: string): Buffer {
  return new ProtobufWriter().string(1, value).finish();
}

function readStringValue(bytes: Buffer, what: string): string {
  let value = "";
  readFields(bytes, (field, v) => {
    if (field === 1) {
      expectWire(field, v, 2, what);
      value = (v.value as Buffer).toString("utf8");
    }
  });
  return value;
}

function expectWire(field: number, value: FieldValue, wireType: 0 | 2, what: string): void {
  if (value.wireType !== wireType) throw new ProtobufError(`field ${field} (${what}) has the wrong wire type`);
}

export function encodeSignRequest(message: SignCertificateRequestMessage): Uint8Array {
  return new ProtobufWriter()
    .string(1, message.id)
    .string(2, message.token)
    .string(3, message.trustDomain)
    .string(4, message.namespace)
    .bytes(5, message.certificateSigningRequest)
    .varint(6, message.tokenValidator)
    .repeatedBytes(7, (message.jwtAudiences ?? []).map((a) => Buffer.from(a, "utf8")))
    .finish();
}

/** Throws ProtobufError when the bytes are not a SignCertificateRequest. */
export function decodeSignRequest(bytes: Uint8Array): SignCertificateRequestMessage {
  const jwtAudiences: string[] = [];
  const message: SignCertificateRequestMessage = { id: "", token: "", trustDomain: "", namespace: "", certificateSigningRequest: Buffer.alloc(0), tokenValidator: 0, jwtAudiences };
  readFields(bytes, (field, value) => {
    switch (field) {
      case 1:
      case 2:
      case 3:
      case 4: {
        const key = (["id", "token", "trustDomain", "namespace"] as const)[field - 1]!;
        expectWire(field, value, 2, key);
        message[key] = (value.value as Buffer).toString("utf8");
        break;
      }
      case 5:
        expectWire(field, value, 2, "certificate_signing_request");
        message.certificateSigningRequest = value.value as Buffer;
        break;
      case 6:
        expectWire(field, value, 0, "token_validator");
        message.tokenValidator = value.value as number;
        break;
      case 7:
        expectWire(field, value, 2, "jwt_audiences");
        jwtAudiences.push((value.value as Buffer).toString("utf8"));
        break;
      default:
        break; // unknown fields are skipped, as protobuf requires
    }
  });
  return message;
}

export function encodeSignResponse(message: SignCertificateResponseMessage): Uint8Array {
  const validUntil = new ProtobufWriter().varint(1, message.validUntil.seconds).varint(2, message.validUntil.nanos).finish();
  const writer = new ProtobufWriter().bytes(1, message.workloadCertificate).repeatedBytes(2, message.trustChainCertificates).message(3, validUntil);
  if (message.jwt !== undefined) writer.message(4, stringValue(message.jwt));
  for (const [audience, jwt] of Object.entries(message.perAudienceJwts ?? {})) {
    writer.message(5, new ProtobufWriter().string(1, audience).message(2, stringValue(jwt)).finish());
  }
  return writer.finish();
}

/** Throws ProtobufError when the bytes are not a SignCertificateResponse. */
export function decodeSignResponse(bytes: Uint8Array): SignCertificateResponseMessage {
  const message: SignCertificateResponseMessage = { workloadCertificate: Buffer.alloc(0), trustChainCertificates: [], validUntil: { seconds: 0, nanos: 0 } };
  readFields(bytes, (field, value) => {
    if (field === 1) {
      expectWire(field, value, 2, "workload_certificate");
      message.workloadCertificate = value.value as Buffer;
    } else if (field === 2) {
      expectWire(field, value, 2, "trust_chain_certificates");
      message.trustChainCertificates.push(value.value as Buffer);
    } else if (field === 3) {
      expectWire(field, value, 2, "valid_until");
      readFields(value.value as Buffer, (inner, v) => {
        if (inner === 1 && v.wireType === 0) message.validUntil.seconds = v.value;
        else if (inner === 2 && v.wireType === 0) message.validUntil.nanos = v.value;
      });
    } else if (field === 4) {
      expectWire(field, value, 2, "jwt");
      message.jwt = readStringValue(value.value as Buffer, "jwt");
    } else if (field === 5) {
      expectWire(field, value, 2, "per_audience_jwts");
      let audience = "";
      let jwt = "";
      readFields(value.value as Buffer, (inner, v) => {
        if (inner === 1) {
          expectWire(inner, v, 2, "per_audience_jwts key");
          audience = (v.value as Buffer).toString("utf8");
        } else if (inner === 2) {
          expectWire(inner, v, 2, "per_audience_jwts value");
          jwt = readStringValue(v.value as Buffer, "per_audience_jwts value");
        }
      });
      (message.perAudienceJwts ??= {})[audience] = jwt;
    }
  });
  return message;
}
