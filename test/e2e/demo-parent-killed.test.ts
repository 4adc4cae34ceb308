import { existsSync, rmSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { spawnCli, type Spawned } from "../helpers/cli.ts";
import { cmdlineOf, descendants, exited, type Proc } from "../helpers/processes.ts";

/**
 * `kill -9` of `meshward demo` (or an OOM kill) runs none of its cleanup: before, its Python app and
 * both sidecars were left running (reparented to PID 1), holding their ports, and its working
 * directory (root key included) stayed. Each child now holds a pipe from the demo and stops when
 * it closes, which the kernel does whatever ends the demo; a last child removes the directory.
 */
/** Still running and still the same process (a reused pid would have another command line). */
const alive = (p: Proc) => cmdlineOf(p.pid) === p.cmdline && !exited(p.pid);

async function poll<T>(what: string, probe: () => T | undefined, timeoutMs: number, context: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${context()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("meshward demo killed with SIGKILL", () => {
  const seen: Proc[] = [];
  const dirs: string[] = [];
  let demo: Spawned | undefined;

  afterEach(async () => {
    await demo?.stop("SIGKILL");
    for (const p of seen.splice(0)) if (alive(p)) process.kill(p.pid, "SIGKILL");
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  const killAndExpectNothingLeft = async (running: Spawned, dir: string) => {
    running.child.kill("SIGKILL");
    await running.exited;
    // A generous bound: each child stops by itself once the demo's end of its pipe is closed.
    const context = () => `left: ${seen.filter(alive).map((p) => `${p.pid} ${p.cmdline}`).join("; ")}\nstdout: ${running.stdout()}\nstderr: ${running.stderr()}`;
    await poll("every child of the killed demo to exit", () => (seen.every((p) => !alive(p)) ? true : undefined), 30_000, context);
    await poll(`${dir} to be removed`, () => (existsSync(dir) ? undefined : true), 30_000, context);
  };

  it("once ready: the Python app, both sidecars and everything else it started exit, its directory is removed", async () => {
    demo = spawnCli(["demo"]);
    const running = demo;
    const out = () => `stdout: ${running.stdout()}\nstderr: ${running.stderr()}`;
    const dir = await poll("its working directory line", () => /working directory (\S+)/.exec(running.stdout())?.[1], 60_000, out);
    dirs.push(dir);
    await poll("the ready message", () => (/Press Ctrl-C/.test(running.stdout()) ? true : undefined), 90_000, out);
    const procs = descendants(running.child.pid as number);
    seen.push(...procs);
    expect(procs.filter((p) => p.cmdline.includes("python3"))).toHaveLength(1);
    expect(procs.filter((p) => p.cmdline.includes(" sidecar "))).toHaveLength(2);
    await killAndExpectNothingLeft(running, dir);
  }, 180_000);

  it("during startup, while the inventory sidecar starts: what it had started exits too", async () => {
    demo = spawnCli(["demo"]);
    const running = demo;
    const out = () => `stdout: ${running.stdout()}\nstderr: ${running.stderr()}`;
    const dir = await poll("its working directory line", () => /working directory (\S+)/.exec(running.stdout())?.[1], 60_000, out);
    dirs.push(dir);
    const procs = await poll("the inventory sidecar process", () => {
      const found = descendants(running.child.pid as number);
      return found.some((p) => p.cmdline.includes(" sidecar ")) ? found : undefined;
    }, 60_000, out);
    seen.push(...procs);
    await killAndExpectNothingLeft(running, dir);
  }, 180_000);
});
