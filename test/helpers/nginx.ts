import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, stopChild } from "./redis.ts";
import { canConnect } from "./wait.ts";

/**
 * A real nginx for tests: master process in the foreground (`daemon off`, so the test owns
 * it and `nginx -s reload` works through the pid file), one worker, everything (pid, temp
 * paths, logs to stderr) inside a temporary prefix directory, listening on free loopback
 * ports (bind 0, read, close, start; retried when one was taken in between).
 *
 *   const nginx = await startNginx({ ports: 1, http: ([port]) => `server { listen 127.0.0.1:${port} ssl; ... }` });
 */
export interface StartNginxOptions {
  /** How many free ports `http` needs. */
  readonly ports: number;
  /** The body of the `http { }` block for these ports. */
  readonly http: (ports: readonly number[]) => string;
}

export interface RunningNginx {
  readonly ports: readonly number[];
  /** Prefix directory (pid file, temp paths); removed by stop(). */
  readonly prefix: string;
  readonly configFile: string;
  /** The command that reloads this nginx (for the file sink's on-rotate). */
  readonly reloadCommand: string;
  log(): string;
  /** SIGQUIT (graceful), SIGKILL fallback, then removes the prefix. Idempotent. */
  stop(): Promise<void>;
}

const MAX_PORT_ATTEMPTS = 5;
const START_TIMEOUT_MS = 15_000;

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

export async function startNginx(options: StartNginxOptions): Promise<RunningNginx> {
  const prefix = mkdtempSync(join(tmpdir(), "meshward-nginx-"));
  mkdirSync(join(prefix, "logs"));
  const configFile = join(prefix, "nginx.conf");
  let lastLog = "";
  try {
    for (let attempt = 1; attempt <= MAX_PORT_ATTEMPTS; attempt++) {
      const ports: number[] = [];
      for (let i = 0; i < options.ports; i++) ports.push(await freePort());
      writeFileSync(configFile, config(prefix, options.http(ports)));
      const test = spawnSync("nginx", ["-t", "-q", "-p", prefix, "-e", "stderr", "-c", configFile], { encoding: "utf8" });
      if (test.status !== 0) throw new Error(`nginx -t rejected the test config:\n${test.stderr}\n${config(prefix, options.http(ports))}`);
      const started = await launch(prefix, configFile, ports);
      if (started.ready) {
        let stopped = false;
        return {
          ports,
          prefix,
          configFile,
          reloadCommand: ["nginx", "-p", prefix, "-e", "stderr", "-c", configFile, "-s", "reload"].map(shellQuote).join(" "),
          log: started.log,
          async stop() {
            if (stopped) return;
            stopped = true;
            await stopChild(started.child, "SIGQUIT");
            rmSync(prefix, { recursive: true, force: true });
          },
        };
      }
      lastLog = started.log();
      if (!/Address already in use/i.test(lastLog)) break;
    }
    throw new Error(`nginx did not start:\n${lastLog}`);
  } catch (error) {
    rmSync(prefix, { recursive: true, force: true });
    throw error;
  }
}

function config(prefix: string, http: string): string {
  const asRoot = process.getuid?.() === 0;
  return `# meshward test nginx
${asRoot ? "user root;\n" : ""}daemon off;
master_process on;
worker_processes 1;
pid ${join(prefix, "nginx.pid")};
error_log stderr notice;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${join(prefix, "client_body")};
  proxy_temp_path ${join(prefix, "proxy")};
  fastcgi_temp_path ${join(prefix, "fastcgi")};
  uwsgi_temp_path ${join(prefix, "uwsgi")};
  scgi_temp_path ${join(prefix, "scgi")};
  default_type text/plain;
${http}
}
`;
}

async function launch(prefix: string, configFile: string, ports: readonly number[]): Promise<{ child: ChildProcess; ready: boolean; log: () => string }> {
  const child = spawn("nginx", ["-p", prefix, "-e", "stderr", "-c", configFile], { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  const append = (chunk: Buffer) => {
    log = (log + chunk.toString("utf8")).slice(-32_000);
  };
  child.stdout!.on("data", append);
  child.stderr!.on("data", append);
  child.on("error", (error) => append(Buffer.from(`spawn error: ${error.message}\n`)));
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
    const up = await Promise.all(ports.map(canConnect));
    if (up.every(Boolean)) return { child, ready: true, log: () => log };
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await stopChild(child, "SIGQUIT");
  return { child, ready: false, log: () => log };
}
