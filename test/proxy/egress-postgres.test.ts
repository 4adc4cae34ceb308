import { connect as netConnect, createServer, type Server } from "node:net";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CaIdentitySource } from "../../src/identity/ca-source.ts";
import { startEgress, type Egress, type EgressEntry } from "../../src/proxy/egress.ts";
import { quietTlsLogger, startMeshCa, type MeshCa } from "../backends/fixtures.ts";
import { startMeshPostgres, type MeshPostgres } from "../backends/pg-mesh.ts";
import { exec } from "../helpers/exec.ts";
import { until, waitFor } from "../helpers/wait.ts";
import { createMetrics } from "../../src/telemetry/metrics.ts";
import { POSTGRES_BIN } from "../helpers/postgres.ts";

// protocol "postgres": the app's plaintext pg client → egress → SSLRequest, 'S', mTLS → a real
// PostgreSQL 15 (ssl=on, hostssl cert auth against the meshward bundle).
const TD = "egress-pg.test";
let ca: MeshCa | undefined;
let db: MeshPostgres | undefined;
let app: CaIdentitySource;
const egresses: Egress[] = [];
const fakes: Server[] = [];

beforeAll(async () => {
  ca = await startMeshCa(TD);
  db = await startMeshPostgres(ca);
  app = await ca.identity("app");
});

afterAll(async () => {
  for (const egress of egresses) await egress.close().catch(() => undefined);
  for (const fake of fakes) fake.close();
  await db?.stop();
  await ca?.close();
});

async function egress(entry: Omit<EgressEntry, "listen">, withIdentity = true): Promise<Egress> {
  const started = await startEgress({ listen: "127.0.0.1:0", protocol: "postgres", ...entry }, { ...(withIdentity ? { identity: app } : {}), logger: quietTlsLogger });
  egresses.push(started);
  return started;
}

const port = (e: Egress) => Number(e.address.split(":").pop());

async function query(p: number, ssl: pg.ClientConfig["ssl"] = false): Promise<{ row?: Record<string, unknown>; error?: string }> {
  const client = new pg.Client({ host: "127.0.0.1", port: p, user: "app", database: "postgres", ssl, connectionTimeoutMillis: 5_000 });
  client.on("error", () => undefined);
  try {
    await client.connect();
    const result = await client.query("SELECT current_user AS role, ssl_is_used() AS ssl, (SELECT value FROM ssl_extension_info() WHERE name = 'subjectAltName') AS san");
    return { row: result.rows[0] };
  } catch (error) {
    return { error: (error as Error).message };
  } finally {
    // pg's end() can wait forever after a failed connect (its stream is already gone).
    await Promise.race([client.end().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 2_000).unref())]);
  }
}

/**
 * A stand-in that answers the SSLRequest with `answer` (a real PostgreSQL never sends bytes after 'S'),
 * or with its FIN only when `answer` is "close" (a TCP load balancer with no healthy endpoint).
 */
async function fakeBackend(answer: Buffer | "close"): Promise<number> {
  const server = createServer((socket) => {
    socket.on("error", () => undefined);
    socket.once("data", () => (answer === "close" ? socket.end() : socket.write(answer)));
  });
  fakes.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as { port: number }).port;
}

describe("egress to PostgreSQL (protocol: postgres)", () => {
  it("a plaintext pg client (ssl: false) reaches PostgreSQL over mTLS and logs in with the egress's meshward certificate", async () => {
    const e = await egress({ backend: `127.0.0.1:${db!.server.port}`, serverName: "localhost", mtls: true });
    const result = await query(port(e));
    expect(result.error, db!.server.log()).toBeUndefined();
    expect(result.row).toEqual({ role: "app", ssl: true, san: `URI:spiffe://${TD}/ns/backends/app` });
    expect(e.stats()).toMatchObject({ established: 1, failed: {} });
  });

  it("psql with sslmode=prefer: its SSLRequest (and GSSENCRequest) are answered 'N', then it goes on in plaintext to the egress", async () => {
    const e = await egress({ backend: `127.0.0.1:${db!.server.port}`, serverName: "localhost", mtls: true });
    const out = await exec(`${POSTGRES_BIN}/psql`, [
      `host=127.0.0.1 port=${port(e)} user=app dbname=postgres sslmode=prefer gssencmode=prefer`,
      "-Atc",
      "SELECT current_user || ' ' || ssl_is_used()",
    ]);
    expect(out.stdout.trim(), out.stderr).toBe("app true");
  });

  // Found by review (stop 33): a client streaming SSLRequests without reading had an 'N' queued
  // in memory per 8 bytes (480 MiB sent: +87 MiB RSS). libpq sends one of each kind at most.
  it("refuses a third SSLRequest/GSSENCRequest before the startup message with an ErrorResponse, and closes", async () => {
    const e = await egress({ backend: `127.0.0.1:${db!.server.port}`, serverName: "localhost", mtls: true });
    const sslRequest = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
    const answer = await new Promise<Buffer>((resolve, reject) => {
      const socket = netConnect({ host: "127.0.0.1", port: port(e) });
      const chunks: Buffer[] = [];
      socket.on("data", (chunk: Buffer) => chunks.push(chunk));
      socket.on("error", reject);
      socket.on("close", () => resolve(Buffer.concat(chunks)));
      socket.write(Buffer.concat(Array.from({ length: 50 }, () => sslRequest)));
    });
    expect(answer.subarray(0, 2).toString("latin1")).toBe("NN");
    expect(answer.subarray(2, 3).toString("latin1")).toBe("E"); // ErrorResponse
    expect(answer.toString("latin1")).toContain("more than 2 SSLRequest/GSSENCRequest messages");
    expect(e.stats().failed).toMatchObject({ client_error: 1 });
  });

  // Found by review (egress, LOW-2): the same refusal once the backend was verified counted the one
  // connection twice, `ok` and `client_error` (the preamble timeout already counted it once).
  it("an app whose preamble is refused after its backend was verified is counted once (ok), not also as client_error", async () => {
    const metrics = createMetrics();
    const backend = `127.0.0.1:${db!.server.port}`;
    const e = await startEgress({ listen: "127.0.0.1:0", protocol: "postgres", backend, serverName: "localhost", mtls: true }, { identity: app, logger: quietTlsLogger, metrics });
    egresses.push(e);
    const sslRequest = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
    const socket = netConnect({ host: "127.0.0.1", port: port(e) });
    socket.on("error", () => undefined);
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    await waitFor("the backend to be verified", () => e.stats().established === 1);
    socket.write(Buffer.concat([sslRequest, sslRequest, sslRequest]));
    await closed;
    expect(Buffer.concat(chunks).toString("latin1")).toContain("more than 2 SSLRequest/GSSENCRequest messages");
    expect(e.stats().established).toBe(1);
    expect(e.stats().failed).toEqual({});
    const text = await metrics.text();
    const count = (result: string) => text.match(new RegExp(`^meshward_egress_connections_total\\{backend="${backend}",result="${result}"\\} (\\d+)$`, "m"))?.[1];
    expect([count("ok"), count("client_error")]).toEqual(["1", "0"]);
  });

  it("a pg client that insists on TLS to the egress is told 'N' (the app side is plaintext on loopback)", async () => {
    const e = await egress({ backend: `127.0.0.1:${db!.server.port}`, serverName: "localhost", mtls: true });
    expect((await query(port(e), { rejectUnauthorized: false })).error).toMatch(/does not support SSL/);
  });

  it("refuses a PostgreSQL whose certificate does not carry serverName, and tells the pg client why", async () => {
    const e = await egress({ backend: `127.0.0.1:${db!.server.port}`, serverName: "db.example.org", mtls: true });
    const result = await query(port(e));
    expect(result.row).toBeUndefined();
    expect(result.error).toMatch(/meshward egress could not reach .* securely \(tls_failed\).*altnames/);
    expect(e.stats().failed).toEqual({ tls_failed: 1 });
  });

  it("without mtls PostgreSQL itself refuses (hostssl cert needs a client certificate)", async () => {
    const e = await egress({ backend: `127.0.0.1:${db!.server.port}`, serverName: "localhost", caFile: db!.serverFiles.bundle }, false);
    const result = await query(port(e));
    expect(result.row).toBeUndefined();
    expect(result.error).toMatch(/requires a valid client certificate/);
  });

  it("refuses a backend that answers 'N' to SSLRequest (no plaintext fallback)", async () => {
    const e = await egress({ backend: `127.0.0.1:${await fakeBackend(Buffer.from("N"))}`, serverName: "localhost", mtls: true });
    const result = await query(port(e));
    expect(result.error).toMatch(/does not accept TLS/);
    expect(e.stats().failed).toEqual({ backend_no_tls: 1 });
  });

  it("refuses a backend that sends plaintext bytes after 'S' (injection before the handshake)", async () => {
    const injected = Buffer.concat([Buffer.from("S"), Buffer.from("R\0\0\0\x08\0\0\0\0", "latin1")]);
    const e = await egress({ backend: `127.0.0.1:${await fakeBackend(injected)}`, serverName: "localhost", mtls: true });
    const result = await query(port(e));
    expect(result.error).toMatch(/unencrypted bytes after 'S'/);
    expect(e.stats().failed).toEqual({ backend_no_tls: 1 });
  });

  // Found by review (egress, LOW-1): nothing listened for the backend's FIN while the egress waited
  // for the answer to its SSLRequest, so the app waited for connectTimeoutMs and was told `timeout`.
  it("refuses at once a backend that closes without answering the SSLRequest (backend_no_tls, not the connect timeout)", async () => {
    const e = await egress({ backend: `127.0.0.1:${await fakeBackend("close")}`, serverName: "localhost", mtls: true, connectTimeoutMs: 120_000 });
    const result = await query(port(e)); // the pg client gives up after 5 s: only a prompt answer is seen
    expect(result.error).toMatch(/securely \(backend_no_tls\): E_BACKEND_NO_TLS: the backend closed the connection without answering the SSLRequest/);
    expect(e.stats().failed).toEqual({ backend_no_tls: 1 });
  });

  // Found by review (egress, MEDIUM-1): tokio-postgres cancels with write, flush, shutdown(SHUT_WR):
  // the app's FIN came while the backend's TLS handshake was still running, and the egress threw
  // the held CancelRequest away, so the query went on running.
  it("a CancelRequest followed at once by the app's FIN (tokio-postgres) reaches PostgreSQL and cancels the query", async () => {
    const e = await egress({ backend: `127.0.0.1:${db!.server.port}`, serverName: "localhost", mtls: true });
    const client = new pg.Client({ host: "127.0.0.1", port: port(e), user: "app", database: "postgres", ssl: false });
    client.on("error", () => undefined);
    await client.connect();
    try {
      const { processID, secretKey } = client as unknown as { processID: number; secretKey: number };
      const outcome = client.query("SELECT pg_sleep(20)").then(
        () => "completed",
        (error: Error) => `error: ${error.message}`,
      );
      await until("the query to run", 10_000, async () => {
        const r = await db!.server.adminQuery(`SELECT 1 FROM pg_stat_activity WHERE pid = ${processID} AND state = 'active' AND query LIKE 'SELECT pg_sleep%'`);
        return r.rowCount === 1 ? true : undefined;
      });
      const cancel = Buffer.alloc(16);
      cancel.writeInt32BE(16, 0);
      cancel.writeInt32BE(80877102, 4);
      cancel.writeInt32BE(processID, 8);
      cancel.writeInt32BE(secretKey | 0, 12);
      const cancelClosed = new Promise<void>((resolve) => {
        const socket = netConnect({ host: "127.0.0.1", port: port(e) }, () => socket.end(cancel));
        socket.on("error", () => undefined);
        socket.resume();
        socket.once("close", () => resolve());
      });
      expect(await outcome).toBe("error: canceling statement due to user request");
      await cancelClosed; // PostgreSQL closes a cancel connection; the egress then closes the app's
    } finally {
      await client.end().catch(() => undefined);
    }
  }, 60_000);

  it("leaves no relay open once the apps and backends are done (successes and refusals alike)", async () => {
    const deadline = Date.now() + 10_000;
    while (egresses.some((e) => e.stats().active > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    expect(egresses.map((e) => e.stats().active)).toEqual(egresses.map(() => 0));
  });
});
