import { existsSync, rmSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { spawnCli, type Spawned } from "../helpers/cli.ts";
import { cmdlineOf, descendants, type Proc } from "../helpers/processes.ts";

/**
 * New-user review M1: `meshward demo` stopped in its first seconds (Ctrl-C, `kill`, `timeout`)
 * left the Python app and the sidecars running, reparented to PID 1, and its working directory
 * (root key included) behind: its signal handlers came only after startup. Each case here stops
 * the demo at a point it announces, then checks by the processes it had started (read from
 * /proc while it ran) that none is left, and that its directory is gone.
 */
/** Still the same process (a reused pid would have another command line). */
const alive = (p: Proc) => cmdlineOf(p.pid) === p.cmdline;

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 20));
}

async function until<T>(what: string, demo: Spawned, probe: () => T | undefined, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (demo.child.exitCode !== null || demo.child.signalCode !== null) throw new Error(`the demo exited before ${what}\nstdout: ${demo.stdout()}\nstderr: ${demo.stderr()}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\nstdout: ${demo.stdout()}\nstderr: ${demo.stderr()}`);
    await nextTurn();
  }
}

describe("meshward demo stopped during startup cleans up", () => {
  const seen: Proc[] = [];
  const dirs: string[] = [];
  let demo: Spawned | undefined;

  afterEach(async () => {
    // Whatever a failing case left behind is not left to the next one.
    await demo?.stop("SIGKILL");
    for (const p of seen.splice(0)) if (alive(p)) process.kill(p.pid, "SIGKILL");
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  const start = async (options: { ownGroup?: boolean } = {}) => {
    // ownGroup: in a process group of its own (setsid execs it), as a terminal runs it, so that Ctrl-C can reach the whole group.
    demo = spawnCli(["demo"], options.ownGroup === true ? { via: ["setsid"] } : {});
    const running = demo;
    const dir = await until("its working directory line", running, () => /working directory (\S+)/.exec(running.stdout())?.[1]);
    dirs.push(dir);
    return { demo: running, dir };
  };

  /** `lateSignal`: a signal sent while it was ending, which may arrive as Node tears the process down. */
  const expectCleanedUp = async (running: Spawned, dir: string, lateSignal?: NodeJS.Signals) => {
    const code = await running.exited;
    const left = seen.filter(alive);
    expect(left, `processes left: ${left.map((p) => `${p.pid} ${p.cmdline}`).join("; ")}\nstdout: ${running.stdout()}\nstderr: ${running.stderr()}`).toEqual([]);
    expect(existsSync(dir), `${dir} left behind\nstdout: ${running.stdout()}`).toBe(false);
    if (code === null && lateSignal !== undefined) expect(running.child.signalCode).toBe(lateSignal);
    else expect(code, `stdout: ${running.stdout()}\nstderr: ${running.stderr()}`).toBe(1);
    expect(running.stdout()).toMatch(/stopping before the demo was ready/);
    if (code !== null) expect(running.stdout()).toContain(`stopped; removed ${dir}`);
    expect(running.stderr()).not.toMatch(/\n\s+at /);
  };

  it("SIGTERM while the inventory app and its sidecar start: both stopped, directory removed", async () => {
    const { demo: running, dir } = await start();
    // The Python app and the sidecar process exist (the sidecar is not ready yet, or just is).
    await until("the inventory sidecar process", running, () => {
      const procs = descendants(running.child.pid as number);
      return procs.some((p) => p.cmdline.includes("python3")) && procs.some((p) => p.cmdline.includes(" sidecar ")) ? procs : undefined;
    }).then((procs) => seen.push(...procs));
    running.child.kill("SIGTERM");
    await expectCleanedUp(running, dir);
  }, 120_000);

  it("Ctrl-C in a terminal (SIGINT to the whole process group) while the inventory sidecar starts: stopped as a stop, not as a failed child", async () => {
    const { demo: running, dir } = await start({ ownGroup: true });
    await until("the inventory sidecar process", running, () => {
      const procs = descendants(running.child.pid as number);
      return procs.some((p) => p.cmdline.includes(" sidecar ")) ? procs : undefined;
    }).then((procs) => seen.push(...procs));
    process.kill(-(running.child.pid as number), "SIGINT");
    await expectCleanedUp(running, dir);
    expect(running.stdout()).toMatch(/SIGINT: stopping before the demo was ready/);
    expect(running.stderr()).not.toMatch(/E_DEMO/);
  }, 120_000);

  it("SIGINT (to the demo alone) right after it named its directory: directory removed", async () => {
    const { demo: running, dir } = await start();
    seen.push(...descendants(running.child.pid as number));
    running.child.kill("SIGINT");
    await expectCleanedUp(running, dir);
  }, 120_000);

  it("SIGHUP, then SIGTERM while it cleans up: nothing left either", async () => {
    const { demo: running, dir } = await start();
    await until("the inventory app", running, () => {
      const procs = descendants(running.child.pid as number);
      return procs.some((p) => p.cmdline.includes("python3")) ? procs : undefined;
    }).then((procs) => seen.push(...procs));
    running.child.kill("SIGHUP");
    await until("the stop message", running, () => (/stopping before the demo was ready/.test(running.stdout()) ? true : undefined)).catch(() => undefined);
    seen.push(...descendants(running.child.pid as number));
    running.child.kill("SIGTERM");
    await expectCleanedUp(running, dir, "SIGTERM");
  }, 120_000);
});
