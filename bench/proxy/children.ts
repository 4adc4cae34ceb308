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

/** Starts `command args` in the repository root and waits (30 s at most) for `ready` on its stdout, if given. */
export function startChild(command: string, args: string[], ready?: RegExp, env?: Record<string, string>): Promise<Started> {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], cwd: ROOT, env: env === undefined ? process.env : { ...process.env, ...env } });
  children.push(child);
  let out = "";
  let err = "";
  child.stderr!.on("data", (d) => (err += d));
  if (ready === undefined) return Promise.resolve({ child, match: null });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${command} not ready after 30 s: ${out} ${err}`)), 30_000);
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
const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim());
