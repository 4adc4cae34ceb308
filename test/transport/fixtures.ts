import * as grpc from "@grpc/grpc-js";
import type { IdentityEvent, IdentitySnapshot, IdentitySource, TrustBundle } from "../../src/identity/source.ts";
import type { TestLeaf, TestPki } from "../helpers/openssl-pki.ts";

export function bundleOf(pkis: readonly TestPki[], revokedSerials: ReadonlySet<string> = new Set()): TrustBundle {
  return { trustDomain: pkis[0]!.trustDomain, rootsPem: pkis.map((p) => p.root.certPem).join(""), revokedSerials };
}

export function snapshotOf(leaf: TestLeaf, bundle: TrustBundle): IdentitySnapshot {
  return {
    svid: { spiffeId: leaf.spiffeId ?? "", certChainPem: leaf.chainPem, privateKey: leaf.key, notBefore: leaf.notBefore, notAfter: leaf.notAfter, serial: leaf.serial },
    bundle,
  };
}

/** An identity source the test drives by hand (a real source is exercised in test/identity). */
export class ManualIdentity implements IdentitySource {
  #snapshot: IdentitySnapshot | undefined;
  readonly #listeners = new Set<(event: IdentityEvent) => void>();
  constructor(snapshot: IdentitySnapshot) {
    this.#snapshot = snapshot;
  }
  ready = async (): Promise<IdentitySnapshot> => this.#snapshot!;
  current = (): IdentitySnapshot | undefined => this.#snapshot;
  subscribe(listener: (event: IdentityEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
  rotate(snapshot: IdentitySnapshot): void {
    this.#snapshot = snapshot;
    this.#emit({ type: "rotated", snapshot });
  }
  updateBundle(bundle: TrustBundle): void {
    this.#snapshot = { svid: this.#snapshot!.svid, bundle };
    this.#emit({ type: "bundle-updated", snapshot: this.#snapshot });
  }
  expire(): void {
    const spiffeId = this.#snapshot!.svid.spiffeId;
    this.#snapshot = undefined;
    this.#emit({ type: "expired", spiffeId });
  }
  #emit(event: IdentityEvent): void {
    for (const l of this.#listeners) l(event);
  }
  close = async (): Promise<void> => undefined;
}

export const silentLogger = { lines: [] as string[], info(m: string) { this.lines.push(`info ${m}`); }, warn(m: string) { this.lines.push(`warn ${m}`); }, error(m: string) { this.lines.push(`error ${m}`); } };

export function makeLogger() {
  const lines: string[] = [];
  return { lines, info: (m: string) => void lines.push(`info ${m}`), warn: (m: string) => void lines.push(`warn ${m}`), error: (m: string) => void lines.push(`error ${m}`) };
}

/** A gRPC service with one unary method, Who, on raw bytes (no protobuf needed). */
export const echoService: grpc.ServiceDefinition = {
  who: {
    path: "/test.Echo/Who",
    requestStream: false,
    responseStream: false,
    requestSerialize: (v: Buffer) => v,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (v: Buffer) => v,
    responseDeserialize: (b: Buffer) => b,
  },
};
export const EchoClient = grpc.makeGenericClientConstructor(echoService, "Echo");

/** One unary `who` call on an Echo client, with a 5 s deadline: its answer, or the call's error. */
export const callWho = (client: grpc.Client): Promise<string> =>
  new Promise<string>((resolve, reject) =>
    (client as unknown as { who(req: Buffer, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: Buffer) => void): void }).who(
      Buffer.from("hi"),
      { deadline: Date.now() + 5000 },
      (e, r) => (e ? reject(e) : resolve(r!.toString())),
    ),
  );
