/**
 * Child processes of the proxy benchmarks: started with piped output, resolved once a line
 * matching `ready` appears on stdout, and all killed when the benchmark process exits, even
 * when it fails.
 */
import { spawn } from "node:child_process";
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
export function startChild(command: string, args: string[], ready?: RegExp): Promise<Started> {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], cwd: ROOT });
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
