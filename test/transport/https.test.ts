import { execFile, spawn } from "node:child_process";
import { Agent } from "node:https";
import { connect as netConnect } from "node:net";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpsServer, createMtlsServer, connectMtls, httpsRequest, mtlsFetch, createMtlsAgent, resumableSession } from "../../src/transport/index.ts";
import { normalizeSerial } from "../../src/tls/verify.ts";
import type { MtlsHttpsServer, MtlsServer } from "../../src/transport/index.ts";
import { createTestPki } from "../helpers/openssl-pki.ts";
import type { TestLeaf, TestPki } from "../helpers/openssl-pki.ts";
import { bundleOf, makeLogger, ManualIdentity, snapshotOf } from "./fixtures.ts";
import { renegotiateWithSClient } from "../helpers/openssl-renegotiate.ts";

const TD = "example.org";
const SERVER_ID = `spiffe://${TD}/ns/default/api`;
const CLIENT_ID = `spiffe://${TD}/ns/default/web`;

function run(cmd: string, args: string[], input = ""): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}
void execFile;

let pki: TestPki;
let otherPki: TestPki;
let serverLeaf: TestLeaf;
let clientLeaf: TestLeaf;
let serverIdentity: ManualIdentity;
let server: MtlsHttpsServer;
let port: number;
const logger = makeLogger();

function curl(leaf: TestLeaf | undefined, extra: string[] = []) {
  const args = ["-sS", "--max-time", "5", "--cacert", pki.rootPath, ...extra];
  if (leaf) args.push("--cert", leaf.chainPath, "--key", leaf.keyPath);
  args.push(`https://localhost:${port}/who`);
  return run("curl", args);
}

beforeAll(async () => {
  pki = createTestPki({ trustDomain: TD });
  otherPki = createTestPki({ trustDomain: TD, name: "other ca" });
  serverLeaf = pki.issueLeaf({ spiffeId: SERVER_ID, dnsNames: ["localhost"] });
  clientLeaf = pki.issueLeaf({ spiffeId: CLIENT_ID });
  serverIdentity = new ManualIdentity(snapshotOf(serverLeaf, bundleOf([pki])));
  server = await createHttpsServer({ identity: serverIdentity, logger }, (req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ peer: req.peer.spiffeId, appId: req.peer.appId }));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  await server?.meshward.close();
  pki?.cleanup();
  otherPki?.cleanup();
});

describe("HTTPS server with curl (real peer, normal host-name verification via DNS SAN)", () => {
  it("serves a caller with a valid SVID and exposes req.peer", async () => {
    const r = await curl(clientLeaf);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ peer: CLIENT_ID, appId: "web" });
  });
  it("refuses a caller without a client certificate", async () => {
    const r = await curl(undefined);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe("");
  });
  it("refuses a certificate from another CA", async () => {
    const foreign = otherPki.issueLeaf({ spiffeId: CLIENT_ID });
    const r = await curl(foreign);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe("");
  });
  it("refuses an expired certificate and a not-yet-valid one", async () => {
    const expired = pki.issueLeaf({ spiffeId: CLIENT_ID, notBefore: new Date(Date.now() - 86_400_000), notAfter: new Date(Date.now() - 3_600_000) });
    const future = pki.issueLeaf({ spiffeId: CLIENT_ID, notBefore: new Date(Date.now() + 3_600_000), notAfter: new Date(Date.now() + 86_400_000) });
    for (const leaf of [expired, future]) {
      const r = await curl(leaf);
      expect(r.code).not.toBe(0);
      expect(r.stdout).toBe("");
    }
  });
  it("refuses a caller from another trust domain by default (authorize = same trust domain)", async () => {
    const outsider = pki.issueLeaf({ spiffeId: "spiffe://evil.example/ns/default/web" });
    const r = await curl(outsider);
    expect(r.code).not.toBe(0);
    expect(logger.lines.some((l) => l.includes("E_SPIFFE_MISMATCH") && l.includes("evil.example"))).toBe(true);
  });
  it("refuses a certificate without a URI SAN and one with two", async () => {
    const none = pki.issueLeaf({ dnsNames: ["client.local"] });
    const two = pki.issueLeaf({ spiffeId: CLIENT_ID, extraUris: [`spiffe://${TD}/ns/default/other`] });
    for (const leaf of [none, two]) expect((await curl(leaf)).code).not.toBe(0);
    expect(logger.lines.filter((l) => l.includes("E_PEER_NO_SPIFFE_ID")).length).toBeGreaterThanOrEqual(2);
  });
  // Issue 14: OpenSSL accepts a CA certificate that chains to the bundle as a client certificate;
  // an X509-SVID is a leaf (spiffe/spiffe standards/X509-SVID.md §4.1), so the SDK refuses it.
  it.each([
    ["CA:TRUE", "ca"],
    ["keyCertSign", "cert-sign"],
  ] as const)("refuses a %s client certificate chained to the bundle (openssl s_client and curl), and a leaf still passes", async (_name, notLeaf) => {
    const ca = pki.issueLeaf({ spiffeId: CLIENT_ID, notLeaf });
    const request = "GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    const before = logger.lines.filter((l) => l.includes("E_PEER_NOT_LEAF")).length;
    const refused = await run("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-cert", ca.certPath, "-key", ca.keyPath, "-cert_chain", pki.issuer.certPath, "-CAfile", pki.rootPath, "-verify_return_error", "-ign_eof"], request);
    // The handshake completes (OpenSSL itself accepts the chain), then the server drops the connection unanswered.
    expect(refused.stdout).toContain("TLSv1.3");
    expect(refused.stdout).not.toContain("HTTP/1.1 200");
    expect(refused.stdout).not.toContain(CLIENT_ID);
    expect((await curl(ca)).stdout).toBe("");
    expect(logger.lines.filter((l) => l.includes("E_PEER_NOT_LEAF")).length).toBeGreaterThanOrEqual(before + 2);
    const ok = await run("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-cert", clientLeaf.certPath, "-key", clientLeaf.keyPath, "-cert_chain", pki.issuer.certPath, "-CAfile", pki.rootPath, "-verify_return_error", "-ign_eof"], request);
    expect(ok.stdout).toContain(CLIENT_ID);
  });
  it("refuses a revoked certificate once the bundle carries the CRL, and closes its open connection", async () => {
    const victim = pki.issueLeaf({ spiffeId: CLIENT_ID });
    expect((await curl(victim)).code).toBe(0);
    const { revokedSerials } = pki.revoke(victim);
    expect(revokedSerials.has(victim.serial)).toBe(true);
    serverIdentity.updateBundle(bundleOf([pki], revokedSerials));
    const r = await curl(victim);
    expect(r.code).not.toBe(0);
    expect(logger.lines.some((l) => l.includes("E_CERT_REVOKED"))).toBe(true);
    expect((await curl(clientLeaf)).code).toBe(0);
  });
  it("refuses TLS 1.1 (openssl s_client -tls1_1) and accepts TLS 1.3 with s_client", async () => {
    const old = await run("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-tls1_1", "-cert", clientLeaf.certPath, "-key", clientLeaf.keyPath, "-CAfile", pki.rootPath], "Q\n");
    expect(old.stdout + old.stderr).toMatch(/alert|no protocols available|unsupported|wrong version/i);
    expect(old.stdout).toContain("no peer certificate available");
    expect(old.stdout).not.toMatch(/New, TLSv1\.1/);
    const ok = await run("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-cert", clientLeaf.certPath, "-key", clientLeaf.keyPath, "-cert_chain", pki.issuer.certPath, "-CAfile", pki.rootPath, "-verify_return_error", "-ign_eof"], "GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    expect(ok.stdout).toContain("TLSv1.3");
    expect(ok.stdout).toContain(CLIENT_ID);
  });
  it("refuses a client-initiated TLS 1.2 renegotiation (openssl s_client, R): the identity checked at the handshake cannot be swapped", async () => {
    const r = await renegotiateWithSClient(`127.0.0.1:${port}`, ["-cert", clientLeaf.certPath, "-key", clientLeaf.keyPath, "-cert_chain", pki.issuer.certPath, "-CAfile", pki.rootPath], "GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    expect(r.output).toContain("Protocol  : TLSv1.2");
    expect(r.output).toContain("RENEGOTIATING");
    expect(r.output).toMatch(/no renegotiation/);
    expect(r.output).not.toContain(CLIENT_ID);
  });
  it("s_client without a certificate gets no HTTP response", async () => {
    const r = await run("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-CAfile", pki.rootPath, "-ign_eof"], "GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    expect(r.stdout).not.toContain(CLIENT_ID);
    expect(r.stdout + r.stderr).toMatch(/alert|certificate required/i);
  });
  it("refuses plaintext HTTP on the TLS port", async () => {
    const r = await run("curl", ["-sS", "--max-time", "5", `http://127.0.0.1:${port}/who`]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).not.toContain(CLIENT_ID);
    const raw = await new Promise<string>((resolve) => {
      const s = netConnect(port, "127.0.0.1", () => s.write("GET /who HTTP/1.1\r\nHost: x\r\n\r\n"));
      let got = "";
      s.on("data", (d) => (got += d.toString("latin1")));
      s.on("close", () => resolve(got));
      s.on("error", () => resolve(got));
    });
    expect(raw).not.toContain("HTTP/1.1 200");
  });
});

describe("SDK clients against the SDK HTTPS server", () => {
  let clientIdentity: ManualIdentity;
  beforeAll(() => {
    clientIdentity = new ManualIdentity(snapshotOf(clientLeaf, bundleOf([pki])));
  });
  it("mtlsFetch verifies the server's SPIFFE ID and returns JSON", async () => {
    const res = await mtlsFetch(`https://127.0.0.1:${port}/who`, { identity: clientIdentity, expect: SERVER_ID, logger });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ peer: CLIENT_ID, appId: "web" });
    expect(res.peer?.spiffeId).toBe(SERVER_ID);
  });
  it("refuses a server that is not the expected identity", async () => {
    await expect(httpsRequest(`https://127.0.0.1:${port}/who`, { identity: clientIdentity, expect: `spiffe://${TD}/ns/default/billing`, logger })).rejects.toMatchObject({ code: "E_SPIFFE_MISMATCH" });
    await expect(httpsRequest(`https://127.0.0.1:${port}/who`, { identity: clientIdentity, expect: { trustDomain: TD, namespace: "prod" }, logger })).rejects.toMatchObject({ code: "E_SPIFFE_MISMATCH" });
  });
  it("accepts matcher forms: list, namespace pattern, predicate", async () => {
    for (const expectId of [[SERVER_ID, "spiffe://x/y"], { trustDomain: TD, namespace: "default" }, (id: { path: string }) => id.path.endsWith("/api")] as const) {
      const res = await httpsRequest(`https://127.0.0.1:${port}/who`, { identity: clientIdentity, expect: expectId as never, logger });
      expect(res.status).toBe(200);
    }
  });
  it("a server whose authorize refuses the caller closes the connection", async () => {
    const strict = await createHttpsServer({ identity: serverIdentity, logger, authorize: `spiffe://${TD}/ns/default/admin` }, (_q, r) => r.end("secret"));
    await new Promise<void>((r) => strict.listen(0, "127.0.0.1", r));
    try {
      const p = (strict.address() as AddressInfo).port;
      await expect(httpsRequest(`https://127.0.0.1:${p}/`, { identity: clientIdentity, expect: SERVER_ID, logger })).rejects.toThrow();
      const admin = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: `spiffe://${TD}/ns/default/admin` }), bundleOf([pki])));
      expect((await httpsRequest(`https://127.0.0.1:${p}/`, { identity: admin, expect: SERVER_ID, logger })).text()).toBe("secret");
    } finally {
      await strict.meshward.close();
    }
  });
  it("fails closed on insecure configurations", async () => {
    await expect(createHttpsServer({} as never, () => undefined)).rejects.toMatchObject({ code: "E_INSECURE_CONFIG" });
    await expect(createHttpsServer({ identity: serverIdentity, rejectUnauthorized: false } as never, () => undefined)).rejects.toMatchObject({ code: "E_INSECURE_CONFIG" });
    await expect(createHttpsServer({ identity: serverIdentity, requestCert: false } as never, () => undefined)).rejects.toMatchObject({ code: "E_INSECURE_CONFIG" });
    await expect(mtlsFetch(`https://127.0.0.1:${port}/`, { identity: clientIdentity } as never)).rejects.toMatchObject({ code: "E_INSECURE_CONFIG" });
    await expect(mtlsFetch(`http://127.0.0.1:${port}/`, { identity: clientIdentity, expect: SERVER_ID })).rejects.toMatchObject({ code: "E_INSECURE_CONFIG" });
    await expect(mtlsFetch(`https://127.0.0.1:${port}/`, { identity: clientIdentity, expect: SERVER_ID, insecure: true } as never)).rejects.toMatchObject({ code: "E_INSECURE_CONFIG" });
  });
  it("the named insecure escape hatch works and warns on every use", async () => {
    const warnLog = makeLogger();
    const agent = await createMtlsAgent({ identity: clientIdentity, expect: "spiffe://nobody/x", insecure: { iUnderstandThisDisablesSecurity: true }, logger: warnLog, keepAlive: false });
    for (let i = 0; i < 2; i++) {
      const res = await httpsRequest(`https://127.0.0.1:${port}/who`, { identity: clientIdentity, expect: "spiffe://nobody/x", insecure: { iUnderstandThisDisablesSecurity: true }, agent });
      expect(res.status).toBe(200);
    }
    expect(warnLog.lines.filter((l) => l.includes("INSECURE")).length).toBeGreaterThanOrEqual(2);
    // The insecure agent does not serve a request that does not say so itself.
    await expect(httpsRequest(`https://127.0.0.1:${port}/who`, { identity: clientIdentity, expect: "spiffe://nobody/x", agent })).rejects.toMatchObject({ code: "E_INSECURE_CONFIG" });
    agent.destroy();
  });
  it("takes a given agent only for the identity and expected server it was made for (found by review, stop 32)", async () => {
    // Before, a given agent skipped every check of the request's options: an agent for the whole
    // trust domain sent a request that expected ns/payments/api (and its Authorization header)
    // to whichever workload answered, and a plain https.Agent verified nothing at all.
    const wide = await createMtlsAgent({ identity: clientIdentity, expect: { trustDomain: TD }, logger });
    const url = `https://127.0.0.1:${port}/who`;
    try {
      expect((await httpsRequest(url, { identity: clientIdentity, expect: { trustDomain: TD }, agent: wide, logger })).status).toBe(200);
      await expect(httpsRequest(url, { identity: clientIdentity, expect: `spiffe://${TD}/ns/payments/api`, agent: wide, logger })).rejects.toMatchObject({ code: "E_INSECURE_CONFIG", message: expect.stringMatching(/another identity or expected server/) });
      await expect(mtlsFetch(url, { identity: clientIdentity, expect: `spiffe://${TD}/ns/payments/api`, agent: wide, logger })).rejects.toMatchObject({ code: "E_INSECURE_CONFIG" });
      await expect(httpsRequest(url, { identity: clientIdentity, agent: wide, rejectUnauthorized: false } as never)).rejects.toMatchObject({ code: "E_INSECURE_CONFIG" });
      const other = new ManualIdentity(snapshotOf(clientLeaf, bundleOf([pki])));
      await expect(httpsRequest(url, { identity: other, expect: { trustDomain: TD }, agent: wide, logger })).rejects.toMatchObject({ code: "E_INSECURE_CONFIG" });
      const plain = new Agent({ rejectUnauthorized: false });
      await expect(httpsRequest(url, { identity: clientIdentity, expect: SERVER_ID, agent: plain as never, logger })).rejects.toMatchObject({ code: "E_INSECURE_CONFIG", message: expect.stringMatching(/must be a MtlsAgent/) });
      plain.destroy();
    } finally {
      wide.destroy();
    }
  });
});

describe("session resumption across a server certificate's end of life", () => {
  // Each answer closes its connection, so every request is a new handshake from the same
  // agent; the server reports whether it resumed the session.
  const serveWith = async (leaf: TestLeaf) => {
    const s = await createHttpsServer({ identity: new ManualIdentity(snapshotOf(leaf, bundleOf([pki]))), logger }, (req, res) => {
      res.setHeader("connection", "close");
      res.end(JSON.stringify({ resumed: (req.socket as import("node:tls").TLSSocket).isSessionReused() }));
    });
    await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
    return s;
  };
  const resumedOnEachCall = async (s: MtlsHttpsServer) => {
    const client = new ManualIdentity(snapshotOf(clientLeaf, bundleOf([pki])));
    const agent = await createMtlsAgent({ identity: client, expect: SERVER_ID, logger });
    try {
      const url = `https://127.0.0.1:${(s.address() as AddressInfo).port}/`;
      const seen: boolean[] = [];
      for (let i = 0; i < 3; i++) seen.push((await httpsRequest(url, { identity: client, expect: SERVER_ID, logger, agent })).json<{ resumed: boolean }>().resumed);
      return seen;
    } finally {
      agent.destroy();
      s.close();
    }
  };

  it("resumes sessions of a server whose certificate has life left", async () => {
    expect(await resumedOnEachCall(await serveWith(serverLeaf))).toEqual([false, true, true]);
  });

  it("does not offer a session whose server certificate expires within seconds: full handshakes see the current certificate", async () => {
    const ending = pki.issueLeaf({ spiffeId: SERVER_ID, dnsNames: ["localhost"], notAfter: new Date(Date.now() + 4_000) });
    expect(await resumedOnEachCall(await serveWith(ending))).toEqual([false, false, false]);
  });
});

describe("hot swap and session resumption (raw TLS server)", () => {
  let tlsServer: MtlsServer;
  let tlsPort: number;
  let identity: ManualIdentity;
  let clientIdentity: ManualIdentity;
  beforeAll(async () => {
    identity = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([pki])));
    clientIdentity = new ManualIdentity(snapshotOf(clientLeaf, bundleOf([pki])));
    tlsServer = await createMtlsServer({ identity, logger }, (socket, peer) => {
      socket.on("data", (d) => socket.write(`${peer.spiffeId} ${d.toString()}`));
    });
    await new Promise<void>((r) => tlsServer.listen(0, "127.0.0.1", r));
    tlsPort = (tlsServer.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await tlsServer?.meshward.close();
  });
  const echo = (socket: import("node:tls").TLSSocket, text: string) =>
    new Promise<string>((resolve, reject) => {
      socket.once("data", (d) => resolve(d.toString()));
      socket.once("error", reject);
      socket.once("close", () => reject(new Error("closed")));
      socket.write(text);
    });

  it("after `rotated`, new handshakes see the new serial while an open connection keeps working", async () => {
    const before = await connectMtls({ identity: clientIdentity, expect: SERVER_ID, port: tlsPort, logger });
    const oldSerial = before.peer.serial;
    const next = pki.issueLeaf({ spiffeId: SERVER_ID });
    const generation = tlsServer.meshward.generation();
    identity.rotate(snapshotOf(next, bundleOf([pki])));
    expect(tlsServer.meshward.generation()).toBe(generation + 1);
    const after = await connectMtls({ identity: clientIdentity, expect: SERVER_ID, port: tlsPort, logger, resumeSessions: false });
    expect(after.peer.serial).toBe(normalizeSerial(next.serial));
    expect(oldSerial).not.toBe(next.serial);
    expect(await echo(before, "still-open")).toBe(`${CLIENT_ID} still-open`);
    before.destroy();
    after.destroy();
  });

  it("a bundle update with two roots lets a client of the new root in without restart", async () => {
    const newRoot = createTestPki({ trustDomain: TD, name: "new root" });
    try {
      const newClient = new ManualIdentity(snapshotOf(newRoot.issueLeaf({ spiffeId: CLIENT_ID }), bundleOf([newRoot, pki])));
      await expect(connectMtls({ identity: newClient, expect: SERVER_ID, port: tlsPort, logger, resumeSessions: false }).then((s) => echo(s, "x"))).rejects.toThrow();
      identity.updateBundle(bundleOf([pki, newRoot]));
      const s = await connectMtls({ identity: newClient, expect: SERVER_ID, port: tlsPort, logger, resumeSessions: false });
      expect(await echo(s, "y")).toBe(`${CLIENT_ID} y`);
      s.destroy();
    } finally {
      newRoot.cleanup();
    }
  });

  it("a session resumed for one identity is refused when another identity is expected", async () => {
    const first = await connectMtls({ identity: clientIdentity, expect: SERVER_ID, port: tlsPort, logger, resumeSessions: false });
    await echo(first, "hello");
    const session = resumableSession(first);
    first.destroy();
    expect(session).toBeDefined();
    // Same identity expected: the session resumes (proves the ticket is usable).
    const resumed = await connectMtls({ identity: clientIdentity, expect: SERVER_ID, port: tlsPort, logger, session: session! });
    expect(resumed.isSessionReused()).toBe(true);
    expect(resumed.peer.spiffeId).toBe(SERVER_ID);
    resumed.destroy();
    // Another expected identity with the same session: Node skips checkServerIdentity, we don't.
    await expect(connectMtls({ identity: clientIdentity, expect: `spiffe://${TD}/ns/default/billing`, port: tlsPort, logger, session: session! })).rejects.toMatchObject({ code: "E_SPIFFE_MISMATCH" });
  });

  it("on `expired` the server refuses new handshakes, reports unhealthy, and recovers on rotation", async () => {
    const health: boolean[] = [];
    const expiring = new ManualIdentity(snapshotOf(pki.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([pki])));
    const s = await createMtlsServer({ identity: expiring, logger, onHealthChange: (h) => health.push(h.healthy) }, (sock) => sock.end("ok"));
    await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
    try {
      const p = (s.address() as AddressInfo).port;
      expiring.expire();
      expect(s.meshward.health().healthy).toBe(false);
      await expect(connectMtls({ identity: clientIdentity, expect: SERVER_ID, port: p, logger, resumeSessions: false })).rejects.toThrow();
      expect(logger.lines.some((l) => l.startsWith("error refusing a new connection") && l.includes("expired"))).toBe(true);
      expiring.rotate(snapshotOf(pki.issueLeaf({ spiffeId: SERVER_ID }), bundleOf([pki])));
      const ok = await connectMtls({ identity: clientIdentity, expect: SERVER_ID, port: p, logger, resumeSessions: false });
      ok.destroy();
      expect(health).toEqual([false, true]);
    } finally {
      await s.meshward.close();
    }
  });
});
