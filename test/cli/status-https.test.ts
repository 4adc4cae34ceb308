import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.ts";
import { opensslServerRenegotiating } from "../helpers/openssl-renegotiate.ts";

// `meshward status --status-url https://…` as an operator runs it: a real process against real
// TLS servers. The status feed is plain HTTP on loopback by design; an https:// URL (a status port
// behind a TLS-terminating proxy) is trusted through Node's default store, which
// NODE_EXTRA_CA_CERTS extends: the command has no option of its own for a CA.
// The renegotiating server is `openssl s_server -tls1_2` sending a HelloRequest (with a
// client-certificate request) once the GET has arrived; meshward refuses it as Envoy refuses
// server-initiated renegotiation upstream by default (envoyproxy/envoy
// api/envoy/extensions/transport_sockets/tls/v3/tls.proto, UpstreamTlsContext.allow_renegotiation).
const FEED = JSON.stringify({
  component: "identity",
  name: "orders",
  identities: [{ spiffeId: "spiffe://status.test/ns/shop/orders", serial: "01", notAfter: new Date(Date.now() + 86_400_000).toISOString(), kind: "workload" }],
  rotations: [],
  health: { ok: true, checks: {} },
});
const REPLY = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(FEED)}\r\nConnection: close\r\n\r\n${FEED}`;
let dir: string;
let certFile: string;
let keyFile: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "meshward-status-https-"));
  certFile = join(dir, "status.crt");
  keyFile = join(dir, "status.key");
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "1", "-subj", "/CN=status", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
});

afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

const trusted = () => ({ env: { NODE_EXTRA_CA_CERTS: certFile } });

describe("meshward status --status-url https://…", () => {
  it("reads the feed of an HTTPS status endpoint trusted through NODE_EXTRA_CA_CERTS, and refuses it untrusted", async () => {
    const server: Server = createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (req, res) => {
      res.writeHead(req.url === "/status.json" ? 200 : 404, { "content-type": "application/json" });
      res.end(FEED);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const ok = await runCli(["status", "--status-url", url, "--json"], trusted());
      expect(ok.code, ok.stdout + ok.stderr).toBe(0);
      expect(JSON.parse(ok.stdout)).toEqual([expect.objectContaining({ component: "identity", identity: "spiffe://status.test/ns/shop/orders", healthy: true })]);
      const untrusted = await runCli(["status", "--status-url", url]);
      expect(untrusted.code).toBe(1);
      expect(untrusted.stdout).toMatch(/unreachable: fetch failed: self-signed certificate/);
      expect(untrusted.stderr).not.toMatch(/\n\s+at /);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("refuses a status endpoint that renegotiates: exit 1, the refusal named in the table, no stack trace, the feed never read", async () => {
    const server = await opensslServerRenegotiating(certFile, keyFile);
    try {
      const result = runCli(["status", "--status-url", `https://127.0.0.1:${server.port}`], trusted());
      const { refusedByClient } = await server.renegotiateThenReply("GET /status.json", REPLY);
      expect(refusedByClient).toBe(true);
      expect(server.output()).toContain("SSL3 alert read:warning:no renegotiation");
      const { code, stdout, stderr } = await result;
      expect(code).toBe(1);
      expect(stdout).not.toContain("spiffe://status.test");
      expect(stdout).toMatch(/unreachable: the server's TLS connection failed after the handshake \(.*alert handshake failure.*\); meshward refuses TLS renegotiation, which the server may have asked for/);
      expect(stderr).not.toMatch(/\n\s+at /);
    } finally {
      await server.stop();
    }
  });

  it("control: Node's global fetch (what the command used before) with the same trust renegotiates with the same server and reads the feed", async () => {
    const server = await opensslServerRenegotiating(certFile, keyFile);
    try {
      const script = "const r = await fetch(process.argv[1]); process.stdout.write(await r.text());";
      const fetched = new Promise<string>((resolve, reject) => {
        execFile(process.execPath, ["--input-type=module", "-e", script, `https://127.0.0.1:${server.port}/status.json`], { env: { ...process.env, NODE_EXTRA_CA_CERTS: certFile }, timeout: 30_000, killSignal: "SIGKILL" }, (error, stdout, stderr) =>
          error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout),
        );
      });
      const { refusedByClient } = await server.renegotiateThenReply("GET /status.json", REPLY);
      expect(refusedByClient).toBe(false);
      expect(await fetched).toBe(FEED);
      expect(server.output()).not.toContain("no renegotiation");
    } finally {
      await server.stop();
    }
  });
});
