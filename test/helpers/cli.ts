import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";

/** The CLI as a process runs it: the bundle test/global-setup.ts built from the current sources, else bin/meshward.js. */
export const MESHWARD_BIN = process.env.MESHWARD_TEST_CLI ?? fileURLToPath(new URL("../../bin/meshward.js", import.meta.url));

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * A refusal as a user sees it: exit 1, or 2 for a usage error (E_USAGE, or `usage` for a flag's
 * value refused with its own code, such as E_DURATION_INVALID), the message and `[code]` on
 * stderr, no stack trace.
 */
export function expectRefused(r: CliResult, code: string, message: RegExp, usage = code === "E_USAGE"): void {
  expect(r.code, r.stdout).toBe(usage ? 2 : 1);
  expect(r.stderr).toMatch(message);
  expect(r.stderr).toContain(`[${code}]`);
  expect(r.stderr).not.toMatch(/\n\s+at |unexpected error/);
}

/** Runs the real CLI as a separate process. */
export function runCli(args: readonly string[], options: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; bin?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [options.bin ?? MESHWARD_BIN, ...args], { env: { ...process.env, ...options.env }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 30_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on("error", () => undefined);
    child.stdin.end(options.input ?? "");
  });
}

export interface LongRunning {
  readonly child: ChildProcess;
  readonly stdout: () => string;
  readonly stderr: () => string;
  /** SIGTERM, then SIGKILL after a grace period; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** A CLI process that is running, ready or not: its output so far, its exit, and a way to stop it. */
export interface Spawned extends LongRunning {
  readonly exited: Promise<number | null>;
}

export interface SpawnOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly bin?: string;
  /**
   * A command that runs `node meshward …` for us, given before it: e.g. a shell that lowers a
   * limit first, `["sh", "-c", 'ulimit -n 512 && exec "$0" "$@"']` (it must exec, so that
   * stop() signals meshward itself).
   */
  readonly via?: readonly string[];
}

/** Spawns a long-running CLI command without waiting for anything; the caller must stop() it. */
export function spawnCli(args: readonly string[], options: SpawnOptions = {}): Spawned {
  const [command, ...before] = [...(options.via ?? []), process.execPath];
  const child = spawn(command!, [...before, options.bin ?? MESHWARD_BIN, ...args], { env: { ...process.env, ...options.env }, stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => {
    running.delete(child);
    resolve(code);
  }));
  const stop = async (signal: NodeJS.Signals = "SIGTERM") => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    }
    return child.exitCode;
  };
  return { child, exited, stdout: () => out, stderr: () => err, stop };
}

/** Starts a long-running CLI command and waits until stdout matches `ready`. */
export async function startCli(args: readonly string[], ready: RegExp, options: SpawnOptions & { timeoutMs?: number } = {}): Promise<LongRunning & { match: RegExpMatchArray }> {
  const spawned = spawnCli(args, options);
  const match = await new Promise<RegExpMatchArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${ready} from meshward ${args.join(" ")}\nstdout: ${spawned.stdout()}\nstderr: ${spawned.stderr()}`)), options.timeoutMs ?? 20_000);
    const check = () => {
      const m = spawned.stdout().match(ready);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    };
    spawned.child.stdout?.on("data", check);
    void spawned.exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`meshward ${args.join(" ")} exited with ${code} before it was ready\nstdout: ${spawned.stdout()}\nstderr: ${spawned.stderr()}`));
    });
  }).catch(async (error) => {
    await spawned.stop("SIGKILL");
    throw error;
  });
  const { child, stdout, stderr, stop } = spawned;
  return { child, match, stdout, stderr, stop };
}

/** `meshward ca init` in `dir`, then `meshward ca serve` on 127.0.0.1:0: the running CA and its address. */
export async function startCaCli(dir: string, trustDomain: string): Promise<{ ca: LongRunning; address: string }> {
  const init = await runCli(["ca", "init", "--trust-domain", trustDomain, "--dir", dir]);
  expect(init.code, init.stderr).toBe(0);
  const ca = await startCli(["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0"], /listening on (\S+)/);
  return { ca, address: ca.match[1] as string };
}

/** A join token from `meshward token create` (its last line of output). */
export async function createTokenCli(dir: string, namespace: string, appId: string): Promise<string> {
  const created = await runCli(["token", "create", "--dir", dir, "--namespace", namespace, "--app-id", appId]);
  expect(created.code, created.stderr).toBe(0);
  return created.stdout.trim().split("\n").pop() as string;
}
