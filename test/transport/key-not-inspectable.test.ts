import { connect as tlsConnect } from "node:tls";
import { inspect } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  connectHttp2,
  connectMtls,
  createHttp2Server,
  createHttpsServer,
  createMtlsServer,
  grpcChannelCredentials,
  grpcServerCredentials,
  httpsRequest,
  peerIdentity,
} from "../../src/transport/index.ts";
import type { MtlsHttp2Server, MtlsHttpsServer, MtlsServer } from "../../src/transport/index.ts";
import type { MeshwardServerCredentials } from "../../src/transport/grpc.ts";
import { normalizeSerial } from "../../src/tls/verify.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";
import type { TestLeaf, TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, EchoClient, echoService, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// Node stores a server's `key` option on the server (and http2/grpc-js the whole option object),
// so inspecting a server, a request or the gRPC credentials printed the workload's private key.
const TD = "example.org";
const SERVER_ID = `spiffe://${TD}/ns/default/api`;
const CLIENT_ID = `spiffe://${TD}/ns/default/web`;
const logger = makeLogger();

let pki: TestPki;
let first: TestLeaf;
let second: TestLeaf;
let client: ManualIdentity;
let clientLeaf: TestLeaf;
let identity: ManualIdentity;
let https: MtlsHttpsServer;
let h2: MtlsHttp2Server;
let raw: MtlsServer;
let creds: MeshwardServerCredentials;
let grpcServer: grpc.Server;
const ports: Record<string, number> = {};

/** Every way a secret of the key could show: PEM, its base64 lines, Node's hex view of a PEM or DER buffer. */
function secretMarkers(leaf: TestLeaf): string[] {
  const der = leaf.key.export({ format: "der", type: "pkcs8" });
  const hexView = (b: Buffer) => [...b.subarray(0, 12)].map((x) => x.toString(16).padStart(2, "0")).join(" ");
  const base64Lines = leaf.keyPem.split("\n").filter((l) => l.length > 20 && !l.startsWith("-----"));
  return ["PRIVATE KEY", hexView(Buffer.from(leaf.keyPem)), hexView(der), der.toString("base64").slice(0, 40), ...base64Lines];
}

function dumps(value: unknown): string {
  const seen = new WeakSet();
  let json: string;
  try {
    json = JSON.stringify(value, (_k, v: unknown) => {
      if (v !== null && typeof v === "object") {
        if (seen.has(v)) return undefined;
        seen.add(v);
      }
      return v;
    });
  } catch (error) {
    json = String(error);
  }
  return `${inspect(value, { depth: 6 })}\n${inspect(value, { depth: 4, showHidden: true })}\n${json}`;
}

function expectNoKey(label: string, value: unknown): void {
  const text = dumps(value);
  for (const leaf of [first, second]) for (const marker of secretMarkers(leaf)) expect(text.includes(marker), `${label} shows "${marker}"`).toBe(false);
}

const listen = (server: { listen(port: number, host: string, cb: () => void): unknown; address(): unknown }) =>
  new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));

const who = (c: grpc.Client) =>
  new Promise<string>((resolve, reject) =>
    (c as unknown as { who(req: Buffer, opts: grpc.CallOptions, cb: (e: Error | null, r?: Buffer) => void): void }).who(Buffer.from("hi"), { deadline: Date.now() + 5000 }, (e, r) =>
      e ? reject(e) : resolve(r!.toString()),
    ),
  );

/** The certificate a server presents to a plain TLS client holding the client certificate. */
function presentedSerial(port: number, alpn: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, ca: pki.root.certPem, cert: clientLeaf.chainPem, key: clientLeaf.keyPem, ALPNProtocols: alpn, checkServerIdentity: () => undefined });
    socket.once("secureConnect", () => {
      resolve(normalizeSerial(socket.getPeerCertificate().serialNumber));
      socket.destroy();
    });
    socket.once("error", reject);
  });
}

/** A real request on each server kind through the SDK clients; then the serial each one presents to a new connection. */
async function serials(): Promise<Record<string, string>> {
  const expectServer = { identity: client, expect: SERVER_ID, logger };
  const res = await httpsRequest(`https://127.0.0.1:${ports.https}/`, expectServer);
  expect(res.text()).toBe(CLIENT_ID);
  const session = await connectHttp2(`https://127.0.0.1:${ports.h2}`, expectServer);
  expect(session.peer?.spiffeId).toBe(SERVER_ID);
  session.destroy();
  const socket = await connectMtls({ ...expectServer, port: ports.raw!, resumeSessions: false });
  expect(socket.peer.spiffeId).toBe(SERVER_ID);
  socket.destroy();
  const c = new EchoClient(`127.0.0.1:${ports.grpc}`, await grpcChannelCredentials(client, { expect: SERVER_ID, logger }));
  try {
    expect(await who(c)).toBe(CLIENT_ID);
  } finally {
    c.close();
  }
  return {
    https: await presentedSerial(ports.https!, ["http/1.1"]),
    h2: await presentedSerial(ports.h2!, ["h2"]),
    raw: await presentedSerial(ports.raw!, []),
    grpc: await presentedSerial(ports.grpc!, ["h2"]),
  };
}

beforeAll(async () => {
  pki = createTestPki({ trustDomain: TD });
  first = pki.issueLeaf({ spiffeId: SERVER_ID });
  second = pki.issueLeaf({ spiffeId: SERVER_ID });
  identity = new ManualIdentity(snapshotOf(first, bundleOf([pki])));
  clientLeaf = pki.issueLeaf({ spiffeId: CLIENT_ID });
  client = new ManualIdentity(snapshotOf(clientLeaf, bundleOf([pki])));
  https = await createHttpsServer({ identity, logger }, (req, res) => {
    expectNoKey("inspect(req) in a handler", req);
    res.end(req.peer.spiffeId);
  });
  ports.https = await listen(https);
  h2 = await createHttp2Server({ identity, logger });
  ports.h2 = await listen(h2);
  raw = await createMtlsServer({ identity, logger }, (socket) => socket.end());
  ports.raw = await listen(raw);
  creds = await grpcServerCredentials(identity, { logger });
  grpcServer = new grpc.Server();
  grpcServer.addService(echoService, {
    who: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from(peerIdentity(call)?.spiffeId ?? "none")),
  });
  ports.grpc = await new Promise<number>((resolve, reject) => grpcServer.bindAsync("127.0.0.1:0", creds, (e, p) => (e ? reject(e) : resolve(p))));
});

afterAll(async () => {
  grpcServer?.forceShutdown();
  creds?.close();
  await https?.meshward.close();
  await h2?.meshward.close();
  await raw?.meshward.close();
  pki?.cleanup();
});

describe("the private key is not readable on SDK server objects", () => {
  it("before and after a hot swap, inspect/JSON of every server kind and of the gRPC credentials show no key, and handshakes use the current certificate", async () => {
    expect(secretMarkers(first).length).toBeGreaterThan(4);
    const kinds = () => ({ https, h2, raw, creds, grpcServer });
    for (const [label, value] of Object.entries(kinds())) expectNoKey(`${label} before the swap`, value);
    expect(JSON.stringify(creds)).not.toContain("KEY");
    expect(inspect(creds)).toContain(SERVER_ID);
    const before = await serials();
    for (const serial of Object.values(before)) expect(serial).toBe(normalizeSerial(first.serial));

    identity.rotate(snapshotOf(second, bundleOf([pki])));
    for (const [label, value] of Object.entries(kinds())) expectNoKey(`${label} after the swap`, value);
    const after = await serials();
    for (const serial of Object.values(after)) expect(serial).toBe(normalizeSerial(second.serial));
  });
});
