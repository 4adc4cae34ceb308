import { readdirSync, readFileSync } from "node:fs";

/** A process seen in /proc: its pid and command line (which tells a reused pid apart). */
export interface Proc {
  readonly pid: number;
  readonly cmdline: string;
}

/** The process's command line (arguments joined by spaces), or undefined once it is gone. */
export function cmdlineOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return undefined;
  }
}

/** A zombie has exited; only its parent (PID 1 here, or a subreaper) has not reaped it yet. */
export function exited(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

/** Every live descendant of `root`, from /proc's parent links. */
export function descendants(root: number): Proc[] {
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // pid (comm) state ppid …: comm may hold spaces and parentheses, so read after the last ')'.
      parentOf.set(Number(entry), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // gone meanwhile
    }
  }
  const found: Proc[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const parent = queue.shift() as number;
    for (const [pid, ppid] of parentOf) {
      if (ppid !== parent) continue;
      const cmdline = cmdlineOf(pid);
      if (cmdline !== undefined && cmdline !== "") found.push({ pid, cmdline });
      queue.push(pid);
    }
  }
  return found;
}
