import { readFileSync } from "node:fs";

/**
 * This process's open-file limit (the soft RLIMIT_NOFILE; Node raises it to the hard limit at
 * start), read from /proc/self/limits (proc(5)); undefined where that file does not exist or
 * cannot be read, Infinity when it says "unlimited".
 */
export function openFileLimit(limitsText?: string): number | undefined {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/self/limits", "utf8");
    } catch {
      return undefined;
    }
  }
  const line = text.split("\n").find((l) => l.startsWith("Max open files"));
  const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0];
  if (soft === undefined || soft === "") return undefined;
  if (soft === "unlimited") return Number.POSITIVE_INFINITY;
  const value = Number(soft);
  return Number.isInteger(value) ? value : undefined;
}
