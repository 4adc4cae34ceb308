import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { opensslServerRenegotiating } from "../helpers/openssl-renegotiate.ts";

// The JWKS validator's `jwksUrl` fetch (jose's createRemoteJWKSet with meshward's fetch) against
// real TLS servers. The client runs in a child process (test/ca/fixtures/jwks-url-client.ts) with
// NODE_EXTRA_CA_CERTS naming the test's self-signed certificate, because a jwksUrl server is
// trusted through the default store and Node reads that variable at start only.
// The renegotiating server is `openssl s_server` (TLS 1.2 HelloRequest with a client-certificate
// request once the GET has arrived); meshward refuses it as Envoy refuses server-initiated
// renegotiation upstream by default (envoyproxy/envoy
// api/envoy/extensions/transport_sockets/tls/v3/tls.proto, UpstreamTlsContext.allow_renegotiation).
const CLIENT = fileURLToPath(new URL("./fixtures/jwks-url-client.ts", import.meta.url));
const JWKS = JSON.stringify({ keys: [] });
const REPLY = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${JWKS.length}\r\nConnection: close\r\n\r\n${JWKS}`;
let dir: string;
let certFile: string;
let keyFile: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "meshward-jwks-url-"));
  certFile = join(dir, "jwks.crt");
  keyFile = join(dir, "jwks.key");
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "1", "-subj", "/CN=jwks", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
});

afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

/** Runs the client fixture; the child ends by itself (its fetch has jose's 5 s timeout) and is killed if the test gives up. */
function runClient(mode: "attest" | "fetch", url: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ["--import", "tsx", CLIENT, mode, url], { env: { ...process.env, NODE_EXTRA_CA_CERTS: certFile }, timeout: 60_000, killSignal: "SIGKILL" }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${error.message}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim().split("\n").pop()!) as Record<string, unknown>);
    });
  });
}

describe("jwksUrl: the JWKS fetch is TLS that refuses renegotiation", () => {
  it("fetches through meshward's fetch from a real HTTPS server: the (empty) JWKS is read, so the token's key is not found", async () => {
    const server: Server = createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JWKS);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      expect(await runClient("attest", `https://127.0.0.1:${port}/jwks.json`)).toMatchObject({ code: "E_TOKEN_SIGNATURE" });
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("a JWKS server that cannot be reached is E_JWKS_UNAVAILABLE naming the URL (not a malformed token)", async () => {
    const server: Server = createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((resolve) => server.close(() => resolve())); // bound and released: nothing listens there
    expect(await runClient("attest", `https://127.0.0.1:${port}/jwks.json`)).toMatchObject({ code: "E_JWKS_UNAVAILABLE", message: expect.stringContaining("ECONNREFUSED") });
  });

  it("a JWKS server that renegotiates is refused: E_JWKS_UNAVAILABLE, s_server saw the refusal", async () => {
    const server = await opensslServerRenegotiating(certFile, keyFile);
    try {
      const result = runClient("attest", `https://127.0.0.1:${server.port}/jwks.json`);
      const { refusedByClient } = await server.renegotiateThenReply("GET /jwks.json", REPLY);
      expect(refusedByClient).toBe(true);
      const outcome = await result;
      expect(outcome).toMatchObject({ code: "E_JWKS_UNAVAILABLE" });
      expect(outcome.message).toContain(`https://127.0.0.1:${server.port}/jwks.json`);
      // Named for what it likely is, with OpenSSL's own text kept.
      expect(outcome.message).toMatch(/the server's TLS connection failed after the handshake \(.*alert handshake failure.*\); meshward refuses TLS renegotiation/);
    } finally {
      await server.stop();
    }
  });

  it("control: the global fetch (jose's default) renegotiates with the same server and reads the JWKS", async () => {
    const server = await opensslServerRenegotiating(certFile, keyFile);
    try {
      const result = runClient("fetch", `https://127.0.0.1:${server.port}/jwks.json`);
      const { refusedByClient } = await server.renegotiateThenReply("GET /jwks.json", REPLY);
      expect(refusedByClient).toBe(false);
      expect(await result).toEqual({ status: 200, body: JWKS });
    } finally {
      await server.stop();
    }
  });
});

// Found by review (attestation): with jwksUrl, jose fetched the JWKS again for every token while
// it held no fresh key set, a failed fetch included (its cooldown spaces only unknown-kid refetches
// after a success), and a token that could never pass (expired, another audience) was fetched for
// too: the local pre-check ran only with jwks.kubernetes discovery.
const COOLDOWN_CLIENT = fileURLToPath(new URL("./fixtures/jwks-url-cooldown-client.ts", import.meta.url));

/** A JWKS server that answers 503 until POST /recover gives it a key set; counts /jwks.json requests. */
async function failingJwksServer(): Promise<{ base: string; stop(): Promise<void> }> {
  let jwks: string | undefined;
  let count = 0;
  const server: Server = createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      if (req.url === "/count") res.writeHead(200).end(String(count));
      else if (req.url === "/recover" && req.method === "POST") {
        jwks = Buffer.concat(chunks).toString("utf8");
        res.writeHead(204).end();
      } else if (req.url === "/jwks.json") {
        count += 1;
        if (jwks === undefined) res.writeHead(503, { "content-type": "text/plain" }).end("unavailable");
        else res.writeHead(200, { "content-type": "application/json" }).end(jwks);
      } else res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    base: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function runCooldownClient(mode: "attestor" | "jose-control", base: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ["--import", "tsx", COOLDOWN_CLIENT, mode, base], { env: { ...process.env, NODE_EXTRA_CA_CERTS: certFile }, timeout: 60_000, killSignal: "SIGKILL" }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${error.message}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim().split("\n").pop()!) as Record<string, unknown>);
    });
  });
}

describe("jwksUrl: a JWKS server that fails is asked at most once per cooldown; hopeless tokens never cause a fetch", () => {
  it("control: jose's remote JWKS set alone fetches again for every token after a failed fetch", async () => {
    const server = await failingJwksServer();
    try {
      expect(await runCooldownClient("jose-control", server.base)).toEqual({ fetches: 5 });
    } finally {
      await server.stop();
    }
  });

  it("expired and wrong-audience tokens are refused without a fetch; a burst of 20 while the server fails makes one fetch; after recovery and the cooldown, tokens are accepted", async () => {
    const server = await failingJwksServer();
    try {
      expect(await runCooldownClient("attestor", server.base)).toEqual({
        precheck: ["E_TOKEN_EXPIRED", "E_TOKEN_AUDIENCE"],
        fetchesAfterPrecheck: 0,
        burst: Array(20).fill("E_JWKS_UNAVAILABLE"),
        fetchesAfterBurst: 1,
        withinCooldown: "E_JWKS_UNAVAILABLE",
        fetchesWithinCooldown: 1,
        recovered: ["OK", "OK", "OK"],
        fetchesAfterRecovery: 2,
      });
    } finally {
      await server.stop();
    }
  });
});
