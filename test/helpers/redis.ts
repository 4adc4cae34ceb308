import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * A real redis-server for tests, TLS only: `port 0` (no plaintext listener), `tls-port` on a
 * free loopback port (Redis cannot bind TLS to port 0, so: bind 0, read it, close, start;
 * retry on "address in use"), client certificates required by default.
 */
export interface RedisTlsOptions {
  readonly certFile: string;
  readonly keyFile: string;
  /** `tls-ca-cert-file`: roots that verify client certificates. */
  readonly caFile: string;
  /** `tls-auth-clients` (default "yes"). */
  readonly authClients?: "yes" | "no" | "optional";
}

export interface RunningRedis {
  readonly host: "127.0.0.1";
  readonly port: number;
  /** The config lines used (for docs and failure messages). */
  readonly config: string;
  log(): string;
  /** SIGTERM, SIGKILL fallback, removes its directory. Idempotent. */
  stop(): Promise<void>;
}

const MAX_PORT_ATTEMPTS = 5;
const START_TIMEOUT_MS = 15_000;

export async function startRedisTls(options: RedisTlsOptions): Promise<RunningRedis> {
  const dir = mkdtempSync(join(tmpdir(), "meshward-redis-"));
  let lastLog = "";
  try {
    for (let attempt = 1; attempt <= MAX_PORT_ATTEMPTS; attempt++) {
      const port = await freePort();
      const config = [
        "port 0",
        "bind 127.0.0.1",
        `tls-port ${port}`,
        `tls-cert-file ${options.certFile}`,
        `tls-key-file ${options.keyFile}`,
        `tls-ca-cert-file ${options.caFile}`,
        `tls-auth-clients ${options.authClients ?? "yes"}`,
        "tls-protocols \"TLSv1.2 TLSv1.3\"",
        "save \"\"",
        "appendonly no",
        `dir ${dir}`,
        "daemonize no",
        "loglevel notice",
        "logfile \"\"",
      ].join("\n");
      const file = join(dir, "redis.conf");
      writeFileSync(file, `${config}\n`);
      const started = await launch(file);
      if (started.ready) {
        let stopped = false;
        return {
          host: "127.0.0.1",
          port,
          config,
          log: started.log,
          async stop() {
            if (stopped) return;
            stopped = true;
            await stopChild(started.child);
            rmSync(dir, { recursive: true, force: true });
          },
        };
      }
      lastLog = started.log();
      if (!/address already in use/i.test(lastLog)) break;
    }
    throw new Error(`redis-server did not start:\n${lastLog}`);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

async function launch(configFile: string): Promise<{ child: ChildProcess; ready: boolean; log: () => string }> {
  const child = spawn("redis-server", [configFile], { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  const append = (chunk: Buffer) => {
    log = (log + chunk.toString("utf8")).slice(-32_000);
  };
  child.stdout!.on("data", append);
  child.stderr!.on("data", append);
  child.on("error", (error) => append(Buffer.from(`spawn error: ${error.message}\n`)));
  const ready = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), START_TIMEOUT_MS);
    const check = () => {
      if (/Ready to accept connections/.test(log)) {
        clearTimeout(timer);
        resolve(true);
      }
    };
    child.stdout!.on("data", check);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
  if (!ready) await stopChild(child);
  return { child, ready, log: () => log };
}

export function freePort(): Promise<number> {
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

export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}
