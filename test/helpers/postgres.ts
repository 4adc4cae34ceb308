import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { appendFileSync, chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import pg from "pg";

/**
 * A real PostgreSQL 15 for tests: initdb into a temporary directory, one `postgres` process
 * listening on 127.0.0.1:<free port> and on a unix socket in its own directory.
 *
 * PostgreSQL refuses to run as root, so when the tests run as root the server runs as an
 * unprivileged user (`nobody`, or a `meshward-test` system user created on first use) and
 * its directories are chowned to it. As a normal user it simply runs as that user.
 */

export const POSTGRES_BIN = "/usr/lib/postgresql/15/bin";
const SUPERUSER = "postgres";
const MAX_PORT_ATTEMPTS = 5;
const START_TIMEOUT_MS = 30_000;

export interface PostgresSslOptions {
  /** Server certificate (PEM). Copied into the data directory. */
  readonly certFile: string;
  /** Server private key (PEM). Copied into the data directory, 0600, owned by the server user. */
  readonly keyFile: string;
  /** CA bundle used to verify client certificates (`ssl_ca_file`). */
  readonly caFile: string;
}

export interface StartPostgresOptions {
  /** Turns on TLS (`ssl = on`) with these files. */
  readonly ssl?: PostgresSslOptions;
  /**
   * pg_hba.conf rules for TCP connections, first match wins. They REPLACE the default
   * `host all all 127.0.0.1/32 trust`; `local all all trust` (the unix socket, used by this
   * harness for readiness and createDatabase) is always kept first.
   * e.g. ["hostssl all all 127.0.0.1/32 cert", "hostnossl all all 0.0.0.0/0 reject"].
   */
  readonly hbaLines?: readonly string[];
  /** Extra postgresql.conf settings, e.g. { log_connections: "on" }. */
  readonly settings?: Readonly<Record<string, string>>;
}

export interface RunningPostgres {
  /** Superuser `postgres`, trust auth, over TCP to 127.0.0.1 (database `postgres`). */
  readonly connectionString: string;
  readonly host: "127.0.0.1";
  readonly port: number;
  /** Directory holding the unix socket `.s.PGSQL.<port>` (pg: `{ host: socketDir, port }`). */
  readonly socketDir: string;
  readonly dataDir: string;
  readonly superuser: string;
  /** Creates an empty database and returns a TCP connection string to it. */
  createDatabase(name?: string): Promise<string>;
  /** Runs SQL as the superuser over the unix socket (fixtures: roles, grants, sabotage). */
  adminQuery(sql: string, database?: string): Promise<pg.QueryResult>;
  /** Server log (its stderr) so far, for failure messages. */
  log(): string;
  /** pg_ctl stop -m immediate, SIGKILL fallback, then removes every directory. Idempotent. */
  stop(): Promise<void>;
}

interface ServerUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

/**
 * The account the test PostgreSQL runs as: the unprivileged user when the tests run as root,
 * else undefined (it runs as the current user). For tests that hand files to the server's user.
 */
export function postgresServerAccount(): ServerUser | undefined {
  return serverUser();
}

const cleanups = new Set<() => void>();
process.on("exit", () => {
  for (const cleanup of cleanups) cleanup();
});

export async function startPostgres(options: StartPostgresOptions = {}): Promise<RunningPostgres> {
  const user = serverUser();
  const baseDir = mkdtempSync(join(traversableTmpdir(user), "meshward-pg-"));
  const dataDir = join(baseDir, "data");
  const socketDir = join(baseDir, "sock");
  mkdirSync(socketDir, { mode: 0o700 });
  if (user !== undefined) {
    chownSync(baseDir, user.uid, user.gid);
    chownSync(socketDir, user.uid, user.gid);
  }
  let child: ChildProcess | undefined;
  const killNow = (): void => {
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    rmSync(baseDir, { recursive: true, force: true });
  };
  cleanups.add(killNow);

  try {
    runAs(user, "initdb", ["-D", dataDir, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]);
    configure(dataDir, user, options);

    let lastLog = "";
    for (let attempt = 1; attempt <= MAX_PORT_ATTEMPTS; attempt += 1) {
      const port = await freePort();
      const started = await launch(user, dataDir, socketDir, port);
      child = started.child;
      if (started.ready) {
        const running = started;
        let stopped = false;
        return {
          connectionString: `postgresql://${SUPERUSER}@127.0.0.1:${port}/postgres`,
          host: "127.0.0.1",
          port,
          socketDir,
          dataDir,
          superuser: SUPERUSER,
          async createDatabase(name = `t_${Math.random().toString(36).slice(2, 12)}`) {
            if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`createDatabase: ${name} is not a plain identifier`);
            await adminQuery(socketDir, port, `CREATE DATABASE ${name}`);
            return `postgresql://${SUPERUSER}@127.0.0.1:${port}/${name}`;
          },
          adminQuery: (sql, database) => adminQuery(socketDir, port, sql, database),
          log: () => running.log(),
          async stop() {
            if (stopped) return;
            stopped = true;
            await stopServer(user, dataDir, running.child);
            cleanups.delete(killNow);
            rmSync(baseDir, { recursive: true, force: true });
          },
        };
      }
      lastLog = started.log();
      if (!/address already in use|could not create any TCP\/IP sockets/i.test(lastLog)) break;
    }
    throw new Error(`PostgreSQL did not start:\n${lastLog}`);
  } catch (error) {
    killNow();
    cleanups.delete(killNow);
    throw error;
  }
}

/** Undefined when we may run postgres as ourselves (not root). */
function serverUser(): ServerUser | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const found = lookupUser("nobody") ?? lookupUser("meshward-test");
  if (found !== undefined) return found;
  const created = spawnSync("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "meshward-test"], { encoding: "utf8" });
  const user = lookupUser("meshward-test");
  if (user === undefined) throw new Error(`cannot create the unprivileged user meshward-test for PostgreSQL: ${created.stderr}`);
  return user;
}

function lookupUser(name: string): ServerUser | undefined {
  for (const line of readFileSync("/etc/passwd", "utf8").split("\n")) {
    const [login, , uid, gid] = line.split(":");
    if (login === name && uid !== undefined && gid !== undefined) return { name, uid: Number(uid), gid: Number(gid) };
  }
  return undefined;
}

/** The server user must be able to reach its directories; fall back to /tmp when TMPDIR is private. */
function traversableTmpdir(user: ServerUser | undefined): string {
  const candidate = tmpdir();
  if (user === undefined) return candidate;
  for (let dir = candidate; ; dir = dirname(dir)) {
    if ((statSync(dir).mode & 0o001) === 0) return "/tmp";
    if (dir === dirname(dir)) return candidate;
  }
}

function runAs(user: ServerUser | undefined, tool: string, args: string[]): void {
  const result = spawnSync(join(POSTGRES_BIN, tool), args, {
    encoding: "utf8",
    env: serverEnv(),
    timeout: 60_000,
    ...(user === undefined ? {} : { uid: user.uid, gid: user.gid }),
  });
  if (result.error !== undefined) throw new Error(`${tool} failed: ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${tool} exited ${result.status}:\n${result.stdout}\n${result.stderr}`);
}

function serverEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env["PATH"] ?? "/usr/bin:/bin", LANG: "C", LC_ALL: "C" };
}

function configure(dataDir: string, user: ServerUser | undefined, options: StartPostgresOptions): void {
  const settings: Record<string, string> = {
    // Test data is throwaway: skip flushing to disk so the suite stays fast on a shared machine.
    fsync: "off",
    synchronous_commit: "off",
    full_page_writes: "off",
    max_connections: "50",
    shared_buffers: "16MB",
    logging_collector: "off",
    log_min_messages: "warning",
    ...options.settings,
  };
  if (options.ssl !== undefined) {
    const files: [string, string][] = [
      [options.ssl.certFile, "server.crt"],
      [options.ssl.keyFile, "server.key"],
      [options.ssl.caFile, "root.crt"],
    ];
    for (const [from, to] of files) {
      const target = join(dataDir, to);
      copyFileSync(from, target);
      // PostgreSQL insists on a private key owned by the server user with no group/other access.
      chmodSync(target, 0o600);
      if (user !== undefined) chownSync(target, user.uid, user.gid);
    }
    Object.assign(settings, { ssl: "on", ssl_cert_file: "server.crt", ssl_key_file: "server.key", ssl_ca_file: "root.crt" });
  }
  const conf = Object.entries(settings)
    .map(([key, value]) => `${key} = '${value.replace(/'/g, "''")}'`)
    .join("\n");
  appendFileSync(join(dataDir, "postgresql.conf"), `\n# meshward test harness\n${conf}\n`);
  const hba = ["local all all trust", ...(options.hbaLines ?? ["host all all 127.0.0.1/32 trust"])];
  writeFileSync(join(dataDir, "pg_hba.conf"), `${hba.join("\n")}\n`, { mode: 0o600 });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

interface Launched {
  readonly child: ChildProcess;
  readonly ready: boolean;
  log(): string;
}

async function launch(user: ServerUser | undefined, dataDir: string, socketDir: string, port: number): Promise<Launched> {
  const child = spawn(join(POSTGRES_BIN, "postgres"), ["-D", dataDir, "-k", socketDir, "-p", String(port), "-c", "listen_addresses=127.0.0.1"], {
    env: serverEnv(),
    stdio: ["ignore", "pipe", "pipe"],
    // Own process group, so a SIGKILL fallback reaches the backends too.
    detached: true,
    ...(user === undefined ? {} : { uid: user.uid, gid: user.gid }),
  });
  let log = "";
  const append = (chunk: Buffer): void => {
    log = (log + chunk.toString("utf8")).slice(-64_000);
  };
  child.stdout?.on("data", append);
  child.stderr?.on("data", append);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("error", (error) => append(Buffer.from(`spawn error: ${error.message}\n`)));

  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    if (await canConnect(socketDir, port)) return { child, ready: true, log: () => log };
    await Promise.race([exited, delay(100)]);
  }
  if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
    process.kill(-child.pid, "SIGKILL");
    await exited;
  }
  return { child, ready: false, log: () => log };
}

async function canConnect(socketDir: string, port: number): Promise<boolean> {
  const client = new pg.Client({ host: socketDir, port, user: SUPERUSER, database: "postgres", connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.query("SELECT 1");
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function adminQuery(socketDir: string, port: number, sql: string, database = "postgres"): Promise<pg.QueryResult> {
  const client = new pg.Client({ host: socketDir, port, user: SUPERUSER, database });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

async function stopServer(user: ServerUser | undefined, dataDir: string, child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const pgCtl = spawn(join(POSTGRES_BIN, "pg_ctl"), ["stop", "-D", dataDir, "-m", "immediate", "-w", "-t", "10"], {
    env: serverEnv(),
    stdio: "ignore",
    ...(user === undefined ? {} : { uid: user.uid, gid: user.gid }),
  });
  pgCtl.on("error", () => undefined);
  const timedOut = await Promise.race([exited.then(() => false), delay(10_000).then(() => true)]);
  if (timedOut && child.pid !== undefined) {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
    await Promise.race([exited, delay(5_000)]);
  }
  if (pgCtl.exitCode === null) pgCtl.kill("SIGKILL");
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
