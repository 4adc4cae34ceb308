import type { AddressInfo } from "node:net";
import { connect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMtlsServer, type MtlsServer } from "../../src/transport/index.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";
import type { TestLeaf, TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";

// Found by review (stop 33): every failed handshake and every refused caller wrote a warn line,
// so anyone who could reach a meshward server (a failed handshake needs no certificate; a refused
// caller, any certificate of the mesh, a revoked one included) grew its logs without bound. They
// are now logged 5 per reason and address every 10 s, the next line saying how many were left out.
const TD = "example.org";
const logger = makeLogger();
let pki: TestPki;
let server: MtlsServer;
let port = 0;

beforeAll(async () => {
  pki = createTestPki({ trustDomain: TD });
  const identity = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/api` }), bundleOf([pki])));
  server = await createMtlsServer({ identity, logger, authorize: [`spiffe://${TD}/ns/default/web`] }, (socket) => socket.end("hello\n"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  await server?.meshward.close();
  pki?.cleanup();
});

/** One connection: what the server sent before it closed ("" when it refused). */
const attempt = (leaf?: TestLeaf) =>
  new Promise<string>((resolve) => {
    const socket = connect({ host: "127.0.0.1", port, ca: pki.root.certPem, servername: "localhost", checkServerIdentity: () => undefined, ...(leaf ? { key: leaf.keyPem, cert: leaf.chainPem } : {}) });
    let text = "";
    socket.on("data", (chunk: Buffer) => (text += chunk.toString()));
    socket.on("error", () => undefined);
    socket.once("close", () => resolve(text));
  });
const warned = (pattern: RegExp) => logger.lines.filter((line) => line.startsWith("warn") && pattern.test(line)).length;

describe("a meshward server logs refusals rate-limited", () => {
  it("refused callers (a SPIFFE ID outside authorize): 5 lines for 20 refusals; the allowed caller is served", async () => {
    const other = pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/other` });
    for (let i = 0; i < 20; i++) expect(await attempt(other)).toBe("");
    expect(warned(/refused a connection from 127\.0\.0\.1/)).toBe(5);
    expect(await attempt(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/web` }))).toBe("hello\n");
  });

  it("failed handshakes (no client certificate): 5 lines for 20 failures", async () => {
    for (let i = 0; i < 20; i++) expect(await attempt()).toBe("");
    expect(warned(/TLS handshake from 127\.0\.0\.1 failed/)).toBe(5);
  });
});
