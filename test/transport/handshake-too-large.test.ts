import * as grpc from "@grpc/grpc-js";
import type { AddressInfo } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectMtls, createHttp2Server, createHttpsServer, createMtlsServer, grpcServerCredentials } from "../../src/transport/index.ts";
import { buildLongChain, type LongChain } from "../helpers/long-chain.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, echoService, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// Every SDK server asks callers for a certificate (requestCert): a caller without credential made
// it verify a made-up 70-link chain on the event loop (~1 s per handshake). maxHandshakeBytes
// resets such a connection before OpenSSL has the chain, logged once as handshake_too_large.
const TD = "example.org";
const SERVER_ID = `spiffe://${TD}/ns/default/api`;
let pki: TestPki;
let chain: LongChain;
const closers: Array<() => unknown> = [];

beforeAll(() => {
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
const attack = (port: number) =>
  new Promise<string>((resolve) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, cert: chain.certPem, key: chain.keyPem, rejectUnauthorized: false, ALPNProtocols: ["h2", "http/1.1"] });
    socket.on("error", () => undefined);
    socket.once("data", () => (socket.destroy(), resolve("answered")));
    socket.once("close", () => resolve("closed"));
  });
const refusedLines = (lines: string[]) => ({
  tooLarge: lines.filter((l) => l.includes("maxHandshakeBytes")).length,
  failedHandshakes: lines.filter((l) => l.includes("TLS handshake from")).length,
});

describe("SDK servers cap the bytes a caller sends before its handshake completes", () => {
  it("createMtlsServer: resets the 70-link chain, logs it once; a mesh caller still connects", async () => {
    const logger = makeLogger();
    const server = await createMtlsServer({ identity: identity(), logger }, (socket) => socket.end("hi"));
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
  });

  it("createHttpsServer and createHttp2Server: reset the 70-link chain, logged once each", async () => {
    for (const make of [
      (logger: ReturnType<typeof makeLogger>) => createHttpsServer({ identity: identity(), logger }, (_req, res) => res.end()),
      (logger: ReturnType<typeof makeLogger>) => createHttp2Server({ identity: identity(), logger }, (_req, res) => res.end()),
    ]) {
      const logger = makeLogger();
      const server = await make(logger);
      closers.push(() => server.meshward.close());
      expect(await attack(await listen(server))).toBe("closed");
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(refusedLines(logger.lines)).toEqual({ tooLarge: 1, failedHandshakes: 0 });
    }
  });

  it("gRPC server credentials: reset the 70-link chain, logged once; with maxHandshakeBytes raised the chain is verified (a failed handshake)", async () => {
    for (const [maxHandshakeBytes, expected] of [
      [undefined, { tooLarge: 1, failedHandshakes: 0 }],
      [1 << 20, { tooLarge: 0, failedHandshakes: 1 }],
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
    }
  }, 30_000);
});
