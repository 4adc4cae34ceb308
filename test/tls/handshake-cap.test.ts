import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as netConnect, type AddressInfo, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, createServer as createTlsServer, type ConnectionOptions, type Server as TlsServer, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_MAX_HANDSHAKE_BYTES as CONFIG_DEFAULT } from "../../src/config/ca.ts";
import { capHandshakeBytes, capOf, DEFAULT_MAX_HANDSHAKE_BYTES, rawSocketOf, refusedByHandshakeCap } from "../../src/tls/handshake-cap.ts";
import { buildLongChain, type LongChain } from "../helpers/long-chain.ts";

// Node exposes neither SSL_CTX_set_max_cert_list nor a verify depth, and its verify callback
// accepts every error, so OpenSSL verifies every link of whatever chain a client sends, on the
// event loop. capHandshakeBytes bounds what a client may send before its handshake completes.

let dir: string;
let chain: LongChain;
const file = (name: string) => join(dir, name);
const pem = (name: string) => readFileSync(file(name), "utf8");
const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "meshward-handshake-cap-"));
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl("req", "-x509", ...ec, "-subj", "/CN=test root", "-keyout", "root.key", "-out", "root.crt", "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign");
  for (const n of ["server", "client"]) {
    openssl("req", ...ec, "-subj", `/CN=${n}`, "-keyout", `${n}.key`, "-out", `${n}.csr`);
    openssl("x509", "-req", "-in", `${n}.csr`, "-CA", "root.crt", "-CAkey", "root.key", "-set_serial", n === "server" ? "2" : "3", "-days", "2", "-out", `${n}.crt`);
  }
  // An RSA-4096 chain as a client sends it: leaf + two intermediates (one key for all four: the
  // sizes are those of four keys, without generating them).
  openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096", "-out", "rsa.key");
  openssl("req", "-x509", "-key", "rsa.key", "-subj", "/CN=rsa root", "-out", "rsa-root.crt", "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign");
  writeFileSync(file("ca.ext"), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n");
  let issuer = "rsa-root";
  for (const n of ["rsa-int1", "rsa-int2", "rsa-leaf"]) {
    openssl("req", "-new", "-key", "rsa.key", "-subj", `/CN=${n}`, "-out", `${n}.csr`);
    openssl("x509", "-req", "-in", `${n}.csr`, "-CA", `${issuer}.crt`, "-CAkey", "rsa.key", "-set_serial", String(10 + n.length + issuer.length), "-days", "2", "-out", `${n}.crt`, ...(n === "rsa-leaf" ? [] : ["-extfile", "ca.ext"]));
    issuer = n;
  }
  writeFileSync(file("rsa-chain.crt"), pem("rsa-leaf.crt") + pem("rsa-int2.crt") + pem("rsa-int1.crt"));
  writeFileSync(file("roots.crt"), pem("root.crt") + pem("rsa-root.crt"));
  chain = buildLongChain(70);
}, 120_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Harness {
  readonly server: TlsServer;
  readonly port: number;
  readonly refused: string[];
  readonly secured: TLSSocket[];
  /** tlsClientError events that were not the cap's own reset. */
  readonly clientErrors: Array<{ code: string | undefined; remote: string | undefined }>;
  close(): Promise<void>;
}

async function start(options: { maxBytes?: number; handshakeTimeout?: number; maxVersion?: "TLSv1.2" | "TLSv1.3" } = {}): Promise<Harness> {
  const server = createTlsServer({
    key: pem("server.key"),
    cert: pem("server.crt"),
    ca: pem("roots.crt"),
    // As the CA's API port: a certificate is asked for, and a handshake without a trusted one is allowed.
    requestCert: true,
    rejectUnauthorized: false,
    ...(options.handshakeTimeout === undefined ? {} : { handshakeTimeout: options.handshakeTimeout }),
    ...(options.maxVersion === undefined ? {} : { maxVersion: options.maxVersion }),
  });
  const refused: string[] = [];
  const secured: TLSSocket[] = [];
  const clientErrors: Harness["clientErrors"] = [];
  server.on("secureConnection", (socket: TLSSocket) => {
    secured.push(socket);
    socket.on("error", () => undefined);
  });
  server.on("tlsClientError", (error: NodeJS.ErrnoException, socket: TLSSocket) => {
    if (!refusedByHandshakeCap(socket)) clientErrors.push({ code: error.code, remote: socket.remoteAddress });
    socket.destroy();
  });
  capHandshakeBytes(server, { maxBytes: options.maxBytes ?? DEFAULT_MAX_HANDSHAKE_BYTES, onRefused: (raw) => refused.push(`${raw.remoteAddress}`) });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const sockets = new Set<Socket>();
  server.on("connection", (s: Socket) => (sockets.add(s), s.once("close", () => sockets.delete(s))));
  return {
    server,
    port: (server.address() as AddressInfo).port,
    refused,
    secured,
    clientErrors,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        for (const s of secured) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Connects and waits for the end of the connection attempt: the server's first application byte, or close. */
function attempt(port: number, options: ConnectionOptions): Promise<{ outcome: "answered" | "closed"; error?: string }> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, rejectUnauthorized: false, ...options });
    let error: string | undefined;
    socket.on("error", (e) => (error = e.message));
    socket.once("data", () => {
      socket.destroy();
      resolve({ outcome: "answered" });
    });
    socket.once("close", () => resolve({ outcome: "closed", ...(error === undefined ? {} : { error }) }));
  });
}

const untilClosed = (socket: { once(event: "close", listener: () => void): unknown; destroyed: boolean }) =>
  new Promise<void>((resolve) => (socket.destroyed ? resolve() : socket.once("close", () => resolve())));

describe("capHandshakeBytes", () => {
  it("has the default the config schemas use", () => {
    expect(DEFAULT_MAX_HANDSHAKE_BYTES).toBe(CONFIG_DEFAULT);
  });

  it.each(["TLSv1.3", "TLSv1.2"] as const)("resets a client that sends a 70-link chain (%s) before the server verifies any of it", async (maxVersion) => {
    expect(chain.count).toBe(71);
    expect(chain.bytes).toBeGreaterThan(90_000);
    const h = await start();
    try {
      // The server answers every completed handshake (authorized or not) with a byte.
      h.server.on("secureConnection", (socket: TLSSocket) => socket.write("x"));
      const result = await attempt(h.port, { cert: chain.certPem, key: chain.keyPem, maxVersion });
      expect(result.outcome).toBe("closed");
      expect(h.refused).toEqual(["127.0.0.1"]);
      expect(h.secured).toHaveLength(0); // never reached secureConnection, so never authorized
      expect(h.clientErrors).toEqual([]); // counted once, as the cap's refusal
    } finally {
      await h.close();
    }
  });

  it("control: with the cap raised, the same chain reaches OpenSSL's verification (and the handshake completes unauthorized)", async () => {
    const h = await start({ maxBytes: 1 << 20 });
    try {
      h.server.on("secureConnection", (socket: TLSSocket) => socket.write("x"));
      const result = await attempt(h.port, { cert: chain.certPem, key: chain.keyPem });
      expect(result.outcome).toBe("answered");
      expect(h.refused).toEqual([]);
      expect(h.secured).toHaveLength(1);
      const socket = h.secured[0]!;
      expect(socket.authorized).toBe(false);
      // OpenSSL went through the chain: the signature checks failed (made-up signatures).
      expect(String(socket.authorizationError)).toMatch(/SIGNATURE|ISSUER|UNTRUSTED|CHAIN/);
      expect(capOf(socket)!.received).toBeGreaterThan(chain.bytes);
    } finally {
      await h.close();
    }
  }, 60_000);

  it.each([["-tls1_3"], ["-tls1_2"]])("lets openssl s_client %s with a certificate connect, authorized", async (version) => {
    const h = await start();
    try {
      h.server.on("secureConnection", (socket: TLSSocket) => socket.end("hello from server\n"));
      const client = spawn("openssl", ["s_client", "-connect", `127.0.0.1:${h.port}`, version, "-cert", file("client.crt"), "-key", file("client.key"), "-CAfile", file("root.crt"), "-quiet"], { stdio: ["pipe", "pipe", "pipe"] });
      let out = "";
      client.stdout.on("data", (d: Buffer) => (out += d.toString()));
      client.stderr.resume();
      await new Promise<void>((resolve) => client.once("close", () => resolve()));
      expect(out).toContain("hello from server");
      expect(h.refused).toEqual([]);
      expect(h.secured.map((s) => s.authorized)).toEqual([true]);
    } finally {
      await h.close();
    }
  });

  it.each(["TLSv1.3", "TLSv1.2"] as const)("lets a Node client with an RSA-4096 chain (leaf + 2 intermediates) connect, authorized (%s), within the default cap", async (maxVersion) => {
    const h = await start();
    try {
      h.server.on("secureConnection", (socket: TLSSocket) => socket.write("x"));
      const result = await attempt(h.port, { cert: pem("rsa-chain.crt"), key: pem("rsa.key"), maxVersion });
      expect(result.outcome).toBe("answered");
      expect(h.secured.map((s) => [s.authorized, s.authorizationError])).toEqual([[true, null]]);
      // What this client sent before its handshake completed (docs/threat-model.md quotes it).
      expect(capOf(h.secured[0]!)!.received).toBeLessThan(DEFAULT_MAX_HANDSHAKE_BYTES / 2);
    } finally {
      await h.close();
    }
  });

  it.each(["TLSv1.3", "TLSv1.2"] as const)("passes a 1 MiB request written right behind the client's Finished, intact, when the cap falls inside it (%s)", async (maxVersion) => {
    // 4 KiB: the client's flight fits, the request behind it does not.
    const h = await start({ maxBytes: 4096, maxVersion });
    try {
      const body = Buffer.alloc(1 << 20);
      for (let i = 0; i < body.length; i++) body[i] = (i * 7 + (i >> 11)) & 0xff;
      const received = new Promise<{ digest: string; length: number; counted: number }>((resolve) => {
        h.server.on("secureConnection", (socket: TLSSocket) => {
          const hash = createHash("sha256");
          let length = 0;
          socket.on("data", (d: Buffer) => (hash.update(d), (length += d.length)));
          socket.on("end", () => {
            socket.end("done");
            resolve({ digest: hash.digest("hex"), length, counted: capOf(socket)!.received });
          });
        });
      });
      const client = tlsConnect({ host: "127.0.0.1", port: h.port, cert: pem("client.crt"), key: pem("client.key"), ca: pem("root.crt"), checkServerIdentity: () => undefined, maxVersion });
      client.on("secureConnect", () => client.end(body));
      let reply = "";
      client.on("data", (d: Buffer) => (reply += d.toString()));
      const got = await received;
      await untilClosed(client);
      expect(got.length).toBe(body.length);
      expect(got.digest).toBe(createHash("sha256").update(body).digest("hex"));
      expect(reply).toBe("done"); // half-close both ways: the client's end, then the server's answer
      expect(h.refused).toEqual([]);
      expect(got.counted).toBeLessThanOrEqual(4096);
    } finally {
      await h.close();
    }
  });

  it("gives the TLSSocket the raw socket's addresses, on success and on a failed handshake", async () => {
    const h = await start({ handshakeTimeout: 300 });
    try {
      h.server.on("secureConnection", (socket: TLSSocket) => socket.write("x"));
      const client = tlsConnect({ host: "127.0.0.1", port: h.port, cert: pem("client.crt"), key: pem("client.key"), ca: pem("root.crt"), checkServerIdentity: () => undefined });
      await new Promise<void>((resolve) => client.once("data", () => resolve()));
      const socket = h.secured[0]!;
      expect([socket.remoteAddress, socket.remotePort, socket.remoteFamily]).toEqual([client.localAddress, client.localPort, "IPv4"]);
      expect([socket.localAddress, socket.localPort]).toEqual(["127.0.0.1", h.port]);
      expect(socket.address()).toMatchObject({ address: "127.0.0.1", port: h.port });
      expect(rawSocketOf(socket)!.remotePort).toBe(client.localPort);
      client.destroy();
      // The handshake timeout still fires on a capped connection, and its error names the peer.
      const silent = netConnect({ host: "127.0.0.1", port: h.port });
      silent.on("error", () => undefined);
      await new Promise<void>((resolve) => silent.once("connect", () => resolve()));
      await untilClosed(silent);
      expect(h.clientErrors).toEqual([{ code: "ERR_TLS_HANDSHAKE_TIMEOUT", remote: "127.0.0.1" }]);
    } finally {
      await h.close();
    }
  });

  it("closes each side when the other is destroyed", async () => {
    const h = await start();
    try {
      h.server.on("secureConnection", (socket: TLSSocket) => socket.write("x"));
      const connectOptions = { host: "127.0.0.1", port: h.port, cert: pem("client.crt"), key: pem("client.key"), ca: pem("root.crt"), checkServerIdentity: () => undefined };
      // The server destroys its TLSSocket: the raw socket closes, the client sees it.
      const first = tlsConnect(connectOptions);
      first.on("error", () => undefined);
      await new Promise<void>((resolve) => first.once("data", () => resolve()));
      const raw1 = rawSocketOf(h.secured[0]!)!;
      h.secured[0]!.destroy();
      await untilClosed(first);
      await untilClosed(raw1);
      // The client goes: the server's TLSSocket closes.
      const second = tlsConnect(connectOptions);
      await new Promise<void>((resolve) => second.once("data", () => resolve()));
      second.destroy();
      await untilClosed(h.secured[1]!);
      expect(rawSocketOf(h.secured[1]!)!.destroyed).toBe(true);
    } finally {
      await h.close();
    }
  });

  it("holds no more than a few reads for a caller whose server side does not read (backpressure reaches the sender)", async () => {
    const h = await start();
    try {
      h.server.on("secureConnection", (socket: TLSSocket) => socket.pause());
      const client = tlsConnect({ host: "127.0.0.1", port: h.port, cert: pem("client.crt"), key: pem("client.key"), ca: pem("root.crt"), checkServerIdentity: () => undefined });
      await new Promise<void>((resolve) => client.once("secureConnect", () => resolve()));
      const total = 48 << 20;
      const chunk = Buffer.alloc(256 * 1024);
      for (let sent = 0; sent < total; sent += chunk.length) client.write(chunk);
      // Wait until the client's buffer stops shrinking: the server has taken all it will take.
      let last = -1;
      while (client.writableLength !== last) {
        last = client.writableLength;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      const socket = h.secured[0]!;
      const cap = capOf(socket)!;
      // The kernel's buffers hold some MiB; the process holds at most a few reads' worth.
      expect(client.writableLength).toBeGreaterThan(16 << 20);
      expect(cap.readableLength + cap.raw.readableLength + socket.readableLength).toBeLessThan(1 << 20);
      client.destroy();
    } finally {
      await h.close();
    }
  }, 60_000);
});

describe("capHandshakeBytes on a Node release whose node:tls internals it cannot hook", () => {
  it("throws E_RUNTIME_UNSUPPORTED and leaves the server as it was (the CA then serves without the cap and says so)", () => {
    const server = createTlsServer({});
    const listeners = server.listeners("connection");
    // What a release that renamed node:tls's connection listener would look like to the cap.
    for (const listener of listeners) server.removeListener("connection", listener as (...args: unknown[]) => void);
    const renamed = function renamedConnectionListener() {};
    server.on("connection", renamed);
    expect(() => capHandshakeBytes(server, { maxBytes: DEFAULT_MAX_HANDSHAKE_BYTES, onRefused: () => undefined })).toThrow(expect.objectContaining({ code: "E_RUNTIME_UNSUPPORTED", message: expect.stringMatching(/maxHandshakeBytes cannot be enforced on Node v\d+/) }));
    expect(server.listeners("connection")).toEqual([renamed]);
  });
});
