/**
 * Child processes of the proxy benchmarks: started with piped output, resolved once a line
 * matching `ready` appears on stdout, and all killed when the benchmark process exits, even
 * when it fails.
 */
import { execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));

export const children: ChildProcess[] = [];
process.on("exit", () => children.forEach((c) => c.kill("SIGKILL")));

export interface Started {
  readonly child: ChildProcess;
  /** The `ready` match; null when no `ready` was given. */
  readonly match: RegExpMatchArray | null;
}

/** Starts `command args` in the repository root and waits (`timeoutMs`, 30 s by default) for `ready` on its stdout, if given. */
export function startChild(command: string, args: string[], ready?: RegExp, env?: Record<string, string>, timeoutMs = 30_000): Promise<Started> {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], cwd: ROOT, env: env === undefined ? process.env : { ...process.env, ...env } });
  children.push(child);
  let out = "";
  let err = "";
  child.stderr!.on("data", (d) => (err += d));
  if (ready === undefined) return Promise.resolve({ child, match: null });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${command} not ready after ${timeoutMs / 1000} s: ${out} ${err}`)), timeoutMs);
    child.stdout!.on("data", (d) => {
      out += d;
      const m = out.match(ready);
      if (m) {
        clearTimeout(timer);
        resolve({ child, match: m });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${command} exited ${code}: ${out} ${err}`));
    });
  });
}

/** CPU seconds (user + system) a process has used so far; NaN when it is gone. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}
/** User-mode CPU seconds a process has used so far (utime alone); NaN when it is gone. */
export function userCpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[11]) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}
const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim());

/** Busy and total CPU seconds of the whole machine so far, all cores (/proc/stat; busy is all but idle and iowait). */
export function machineSeconds(): { busy: number; total: number } {
  const fields = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((sum, n) => sum + n, 0);
  return { busy: (total - fields[3]! - fields[4]!) / CLOCK_TICKS, total: total / CLOCK_TICKS };
}

/** CPU seconds of this process and of its children that have exited (the load generators, run to completion). */
export function ownAndFinishedChildrenSeconds(): number {
  const stat = readFileSync("/proc/self/stat", "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / CLOCK_TICKS;
}

/**
 * Measures how much of the machine something else used while `run` ran: the machine's busy
 * time less the time of the benchmark's own processes (`pids`, this process and the load
 * generators it waited for), in cores. Kernel work done for the benchmark outside its processes
 * (ksoftirqd) counts as "other" too, so a quiet machine reads a little above zero.
 */
export function withOtherLoad<T>(pids: readonly (number | undefined)[], run: () => T): { result: T; otherCores: number } {
  const ownBefore = pids.reduce<number>((sum, pid) => sum + (cpuSeconds(pid) || 0), ownAndFinishedChildrenSeconds());
  const machineBefore = machineSeconds();
  const result = run();
  const machineAfter = machineSeconds();
  const ownAfter = pids.reduce<number>((sum, pid) => sum + (cpuSeconds(pid) || 0), ownAndFinishedChildrenSeconds());
  const cores = machineAfter.total - machineBefore.total; // elapsed seconds × cores
  const wallSeconds = cores / CORES;
  return { result, otherCores: Math.max(0, (machineAfter.busy - machineBefore.busy - (ownAfter - ownBefore)) / wallSeconds) };
}
const CORES = readFileSync("/proc/stat", "utf8").split("\n").filter((line) => /^cpu\d+ /.test(line)).length;

/**
 * Exits with a clear message when a tool the benchmark drives is not installed (run alone, a
 * benchmark does not go through `npm run bench`, whose `prebench` installs them).
 */
export function requireTools(...tools: string[]): void {
  const missing = tools.filter((tool) => {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length === 0) return;
  console.error(`this benchmark needs ${missing.join(", ")}: install with  bash scripts/ensure-system-deps.sh --bench`);
  process.exit(2);
}
