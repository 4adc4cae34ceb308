import { execFileSync } from "node:child_process";
import { constants } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import { RenegotiationRefusingClient } from "../../src/store/postgres-client.ts";
import { openPostgresStore } from "../../src/store/postgres.ts";
import { opensslServerRenegotiating, type RenegotiatingServer } from "../helpers/openssl-renegotiate.ts";

// The CA's PostgreSQL store refuses a server-initiated TLS renegotiation, as every meshward TLS
// client does (Envoy's upstream default: envoyproxy/envoy
// api/envoy/extensions/transport_sockets/tls/v3/tls.proto, UpstreamTlsContext.allow_renegotiation).
// PostgreSQL itself has never renegotiated since 9.5 (it removed ssl_renegotiation_limit), so
// the server here is a stand-in: a Node TCP front answers the client's SSLRequest (length 8, code
// 80877103) with 'S', as PostgreSQL does, then pipes the connection to a real
// `openssl s_server -tls1_2` that asks for a renegotiation once pg's startup message arrived.
// s_server does not speak PostgreSQL; what is observed is the TLS: whether the client refused
// (s_server logs "no renegotiation") and, for the control, that the client read what s_server
// sent after the renegotiation (a PostgreSQL ErrorResponse whose text pg reports).
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
let dir: string;
let certFile: string;
let keyFile: string;
let otherCertFile: string;

function selfSigned(name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", `/CN=${name}`, "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
  return { cert, key };
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "meshward-pg-reneg-"));
  ({ cert: certFile, key: keyFile } = selfSigned("db"));
  otherCertFile = selfSigned("other").cert;
});

afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

interface Front {
  readonly port: number;
  /** What each client's first 8 bytes were: "ssl-request", or "other" (a plaintext startup message). */
  readonly seen: string[];
  close(): Promise<void>;
}

/** PostgreSQL's side of the SSLRequest, then a pipe to `backendPort` (s_server). */
async function startFront(backendPort: number): Promise<Front> {
  const seen: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      if (head.length < 8) return;
      socket.off("data", onData);
      if (!head.subarray(0, 8).equals(SSL_REQUEST)) {
        seen.push("other");
        socket.destroy();
        return;
      }
      seen.push("ssl-request");
      socket.pause();
      const backend = connect({ host: "127.0.0.1", port: backendPort }, () => {
        socket.write("S");
        if (head.length > 8) backend.write(head.subarray(8));
        socket.pipe(backend).pipe(socket);
        socket.resume();
      });
      sockets.add(backend);
      backend.on("close", () => {
        sockets.delete(backend);
        socket.destroy();
      });
      backend.on("error", () => socket.destroy());
      socket.on("close", () => backend.destroy());
    };
    socket.on("data", onData);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A PostgreSQL ErrorResponse ('E'): what the control client reads after the renegotiation. */
function errorResponse(text: string): string {
  const fields = `SFATAL\0VFATAL\0C28000\0M${text}\0\0`;
  const length = Buffer.alloc(4);
  length.writeUInt32BE(4 + fields.length);
  return `E${length.toString("latin1")}${fields}`;
}

async function withRenegotiatingDb(fn: (server: RenegotiatingServer, front: Front) => Promise<void>): Promise<void> {
  const server = await opensslServerRenegotiating(certFile, keyFile);
  let front: Front | undefined;
  try {
    front = await startFront(server.port);
    await fn(server, front);
  } finally {
    await front?.close();
    await server.stop();
  }
}

const url = (port: number, query: string) => `postgres://meshward@127.0.0.1:${port}/meshward?${query}`;

describe("the PostgreSQL store refuses a server that renegotiates (real openssl s_server behind an SSLRequest front)", () => {
  it("sslmode=verify-full: opening the store fails with E_STORE_OPEN naming the refusal; s_server saw it", async () => {
    await withRenegotiatingDb(async (server, front) => {
      const store = openPostgresStore({ connectionString: url(front.port, `sslmode=verify-full&sslrootcert=${certFile}`), connectionTimeoutMillis: 20_000 });
      try {
        const opened = store.migrate().then(
          () => new Error("expected a refusal"),
          (error: unknown) => error,
        );
        const { refusedByClient } = await server.renegotiateThenReply("meshward-ca", errorResponse("reply-after-renegotiation"));
        expect(refusedByClient).toBe(true);
        expect(server.output()).toContain("SSL3 alert read:warning:no renegotiation");
        const error = await opened;
        expect(isMeshwardError(error, "E_STORE_OPEN"), String(error)).toBe(true);
        expect((error as Error).message).toContain(`127.0.0.1:${front.port}`);
        expect((error as Error).message).toMatch(/the server's TLS connection failed after the handshake \(.*alert handshake failure.*\); meshward refuses TLS renegotiation, which the server may have asked for/);
        expect((error as Error).message).not.toContain("reply-after-renegotiation");
        expect(front.seen).toEqual(["ssl-request"]);
      } finally {
        await store.close();
      }
    });
  });

  it("control: pg's own Client with the same connection string renegotiates and reads what the server sent after it", async () => {
    await withRenegotiatingDb(async (server, front) => {
      const client = new pg.Client({ connectionString: url(front.port, `sslmode=verify-full&sslrootcert=${certFile}`), application_name: "renegotiation-control", connectionTimeoutMillis: 20_000 });
      client.on("error", () => undefined);
      try {
        const connected = client.connect().then(
          () => new Error("expected the server's ErrorResponse"),
          (error: unknown) => error,
        );
        const { refusedByClient } = await server.renegotiateThenReply("renegotiation-control", errorResponse("reply-after-renegotiation"));
        expect(refusedByClient).toBe(false);
        // pg read the ErrorResponse sent after the renegotiation: the connection outlived it.
        expect(((await connected) as Error).message).toBe("reply-after-renegotiation");
        expect(server.output()).not.toContain("no renegotiation");
      } finally {
        await client.end().catch(() => undefined);
      }
    });
  });

  it("sslmode=verify-full still verifies: a server the sslrootcert does not trust fails at the handshake, not named a renegotiation", async () => {
    await withRenegotiatingDb(async (_server, front) => {
      const store = openPostgresStore({ connectionString: url(front.port, `sslmode=verify-full&sslrootcert=${otherCertFile}`), connectionTimeoutMillis: 20_000 });
      try {
        const error = await store.migrate().then(() => undefined, (e: unknown) => e);
        expect(isMeshwardError(error, "E_STORE_OPEN"), String(error)).toBe(true);
        expect((error as Error).message).toMatch(/self-signed certificate/);
        expect((error as Error).message).not.toContain("renegotiation");
      } finally {
        await store.close();
      }
    });
  });

  it("sslmode=disable stays plaintext: no SSLRequest is sent", async () => {
    await withRenegotiatingDb(async (_server, front) => {
      const store = openPostgresStore({ connectionString: url(front.port, "sslmode=disable"), connectionTimeoutMillis: 20_000 });
      try {
        const error = await store.migrate().then(() => undefined, (e: unknown) => e);
        expect(isMeshwardError(error, "E_STORE_OPEN"), String(error)).toBe(true);
        expect(front.seen).toEqual(["other"]);
      } finally {
        await store.close();
      }
    });
  });
});

describe("RenegotiationRefusingClient adds SSL_OP_NO_RENEGOTIATION to the TLS options pg resolved, and changes nothing else", () => {
  /** pg's resolved TLS options (pg/lib/connection.js `ssl`), functions shown by kind. */
  const resolved = (client: pg.Client): unknown => {
    const ssl = (client as unknown as { connection: { ssl: unknown } }).connection.ssl;
    if (typeof ssl !== "object" || ssl === null) return ssl;
    const keys = Object.getOwnPropertyNames(ssl);
    return Object.fromEntries(keys.map((k) => [k, typeof (ssl as Record<string, unknown>)[k] === "function" ? "function" : (ssl as Record<string, unknown>)[k]]));
  };
  const cases: [string, pg.ClientConfig][] = [
    ["sslmode=disable", { connectionString: "postgres://u@127.0.0.1/db?sslmode=disable" }],
    ["no TLS parameter", { connectionString: "postgres://u@127.0.0.1/db" }],
    ["sslmode=require", { connectionString: "postgres://u@127.0.0.1/db?sslmode=require" }],
    ["sslmode=no-verify", { connectionString: "postgres://u@127.0.0.1/db?sslmode=no-verify" }],
    ["ssl=true", { connectionString: "postgres://u@127.0.0.1/db?ssl=true" }],
    ["sslmode=verify-ca + sslrootcert (libpq semantics)", { connectionString: "postgres://u@127.0.0.1/db?uselibpqcompat=true&sslmode=verify-ca&sslrootcert=CERT" }],
    ["sslmode=verify-full + sslrootcert + sslcert/sslkey", { connectionString: "postgres://u@127.0.0.1/db?sslmode=verify-full&sslrootcert=CERT&sslcert=CERT&sslkey=CERT" }],
    ["an ssl object", { host: "127.0.0.1", ssl: { ca: "roots", key: "k", cert: "c", rejectUnauthorized: true, secureOptions: constants.SSL_OP_NO_TICKET } }],
    ["ssl: false", { host: "127.0.0.1", ssl: false }],
  ];
  it.each(cases)("%s", (_name, config) => {
    const withFiles = (c: pg.ClientConfig): pg.ClientConfig => (c.connectionString === undefined ? c : { ...c, connectionString: c.connectionString.replaceAll("CERT", certFile) });
    const pgSsl = resolved(new pg.Client(withFiles(config))) as Record<string, unknown> | boolean | undefined;
    const ours = resolved(new RenegotiationRefusingClient(withFiles(config)));
    if (typeof pgSsl !== "object" || pgSsl === null) {
      if (pgSsl) expect(ours).toEqual({ secureOptions: constants.SSL_OP_NO_RENEGOTIATION });
      else expect(ours).toBe(pgSsl);
      return;
    }
    expect(ours).toEqual({ ...pgSsl, secureOptions: ((pgSsl.secureOptions as number | undefined) ?? 0) | constants.SSL_OP_NO_RENEGOTIATION });
  });

  it("keeps the private key out of enumeration, as pg does", () => {
    const client = new RenegotiationRefusingClient({ host: "127.0.0.1", ssl: { key: "secret-key", ca: "roots" } });
    const ssl = (client as unknown as { connection: { ssl: Record<string, unknown> } }).connection.ssl;
    expect(ssl.key).toBe("secret-key");
    expect(Object.keys(ssl)).not.toContain("key");
    expect(JSON.stringify(ssl)).not.toContain("secret-key");
  });
});
