import * as grpc from "@grpc/grpc-js";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectMtls, createHttp2Server, createHttpsServer, createMtlsServer, grpcServerCredentials } from "../../src/transport/index.ts";
import { answeredOrClosed, buildLongChain, type LongChain } from "../helpers/long-chain.ts";
import { recordTlsServerStreams, tlsServerStreamsOn } from "../helpers/tls-server-streams.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, echoService, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// Every SDK server asks callers for a certificate (requestCert): a caller without credential made
// it verify a made-up 70-link chain on the event loop (~1 s per handshake). maxHandshakeBytes
// resets such a connection before OpenSSL has the chain, logged once as handshake_too_large. It is
// off by default (its stream costs every connection for its life): unset or 0, the servers keep
// Node's native TLS path (no counting stream) and such a chain is verified (a failed handshake).
const CAP = { maxHandshakeBytes: 16384 } as const;
const TD = "example.org";
const SERVER_ID = `spiffe://${TD}/ns/default/api`;
let pki: TestPki;
let chain: LongChain;
const closers: Array<() => unknown> = [];

beforeAll(() => {
  recordTlsServerStreams();
  pki = createTestPki({ trustDomain: TD });
  chain = buildLongChain(70);
});
afterAll(async () => {
  for (const close of closers.reverse()) await close();
  pki?.cleanup();
});

const identity = () => new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([pki])));
const listen = async (server: { listen(port: number, host: string, cb: () => void): unknown; address(): unknown }) => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
};
const attack = (port: number) => answeredOrClosed({ host: "127.0.0.1", port, cert: chain.certPem, key: chain.keyPem, ALPNProtocols: ["h2", "http/1.1"] });
const refusedLines = (lines: string[]) => ({
  tooLarge: lines.filter((l) => l.includes("maxHandshakeBytes")).length,
  failedHandshakes: lines.filter((l) => l.includes("TLS handshake from")).length,
});

const nativeOnly = (port: number) => {
  const streams = tlsServerStreamsOn(port);
  expect(streams.length).toBeGreaterThan(0);
  return streams.every((s) => s.native);
};

describe("SDK servers cap the bytes a caller sends before its handshake completes, when maxHandshakeBytes is set", () => {
  it("createMtlsServer: resets the 70-link chain, logs it once; a mesh caller still connects", async () => {
    const logger = makeLogger();
    const server = await createMtlsServer({ identity: identity(), logger, ...CAP }, (socket) => socket.end("hi"));
    closers.push(() => server.meshward.close());
    const port = await listen(server);
    expect(await attack(port)).toBe("closed");
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(refusedLines(logger.lines)).toEqual({ tooLarge: 1, failedHandshakes: 0 });
    const client = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }), bundleOf([pki])));
    const socket = await connectMtls({ host: "127.0.0.1", port, identity: client, expect: SERVER_ID, logger: makeLogger() });
    const reply = await new Promise<string>((resolve) => {
      let text = "";
      socket.on("data", (d: Buffer) => (text += d.toString()));
      socket.on("close", () => resolve(text));
    });
    expect(reply).toBe("hi");
    expect(nativeOnly(port)).toBe(false);
  });

  it("by default (maxHandshakeBytes unset, or 0) createMtlsServer, createHttpsServer and createHttp2Server install no cap: native TLS path, the chain is verified", async () => {
    for (const [make, extra] of [
      [(logger: ReturnType<typeof makeLogger>, o: object) => createMtlsServer({ identity: identity(), logger, ...o }, (socket) => socket.end("hi")), {}],
      [(logger: ReturnType<typeof makeLogger>, o: object) => createMtlsServer({ identity: identity(), logger, ...o }, (socket) => socket.end("hi")), { maxHandshakeBytes: 0 }],
      [(logger: ReturnType<typeof makeLogger>, o: object) => createHttpsServer({ identity: identity(), logger, ...o }, (_req, res) => res.end()), {}],
      [(logger: ReturnType<typeof makeLogger>, o: object) => createHttp2Server({ identity: identity(), logger, ...o }, (_req, res) => res.end()), {}],
    ] as const) {
      const logger = makeLogger();
      const server = await make(logger, extra);
      closers.push(() => server.meshward.close());
      const port = await listen(server);
      expect(await attack(port)).toBe("closed");
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(refusedLines(logger.lines)).toEqual({ tooLarge: 0, failedHandshakes: 1 });
      expect(nativeOnly(port)).toBe(true);
    }
  }, 30_000);

  it("a maxHandshakeBytes between 1 and 4095 is refused", async () => {
    await expect(createMtlsServer({ identity: identity(), logger: makeLogger(), maxHandshakeBytes: 4095 }, (socket) => socket.end())).rejects.toThrow(/maxHandshakeBytes/);
  });

  it("createHttpsServer and createHttp2Server: reset the 70-link chain, logged once each", async () => {
    for (const make of [
      (logger: ReturnType<typeof makeLogger>) => createHttpsServer({ identity: identity(), logger, ...CAP }, (_req, res) => res.end()),
      (logger: ReturnType<typeof makeLogger>) => createHttp2Server({ identity: identity(), logger, ...CAP }, (_req, res) => res.end()),
    ]) {
      const logger = makeLogger();
      const server = await make(logger);
      closers.push(() => server.meshward.close());
      const port = await listen(server);
      expect(await attack(port)).toBe("closed");
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(refusedLines(logger.lines)).toEqual({ tooLarge: 1, failedHandshakes: 0 });
      expect(nativeOnly(port)).toBe(false);
    }
  });

  it("gRPC server credentials: with maxHandshakeBytes set, reset the 70-link chain, logged once; by default (or raised) the chain is verified (a failed handshake), by default on the native TLS path", async () => {
    for (const [maxHandshakeBytes, expected, native] of [
      [16384, { tooLarge: 1, failedHandshakes: 0 }, false],
      [undefined, { tooLarge: 0, failedHandshakes: 1 }, true],
      [1 << 20, { tooLarge: 0, failedHandshakes: 1 }, false],
    ] as const) {
      const logger = makeLogger();
      const server = new grpc.Server();
      closers.push(() => server.forceShutdown());
      server.addService(echoService, { who: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from("x")) });
      const creds = await grpcServerCredentials(identity(), { logger, ...(maxHandshakeBytes === undefined ? {} : { maxHandshakeBytes }) });
      const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", creds, (e, p) => (e ? reject(e) : resolve(p))));
      expect(await attack(port)).toBe("closed");
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(refusedLines(logger.lines)).toEqual(expected);
      expect(nativeOnly(port)).toBe(native);
    }
  }, 30_000);
});
