/**
 * Python's urllib.parse as a long-lived child (one process for a whole run): reads one JSON
 * string per line on stdin, answers `urllib.parse.urlsplit(target).path` as one JSON line.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { PYTHON } from "./apps.ts";

const SCRIPT = `
import json, sys, urllib.parse
for line in sys.stdin:
    target = json.loads(line)
    try:
        out = {"path": urllib.parse.urlsplit(target).path}
    except Exception as e:
        out = {"error": str(e)}
    sys.stdout.write(json.dumps(out) + "\\n")
    sys.stdout.flush()
`;

export interface Urllib {
  urlsplitPath(target: string): Promise<string | undefined>;
  close(): Promise<void>;
}

export function startUrllib(): Urllib {
  const child = spawn(PYTHON, ["-u", "-c", SCRIPT], { stdio: ["pipe", "pipe", "inherit"] });
  const waiting: ((line: string) => void)[] = [];
  createInterface({ input: child.stdout! }).on("line", (line) => waiting.shift()?.(line));
  return {
    urlsplitPath: (target) =>
      new Promise((resolve) => {
        waiting.push((line) => {
          const r = JSON.parse(line) as { path?: string };
          resolve(r.path);
        });
        child.stdin!.write(`${JSON.stringify(target)}\n`);
      }),
    close: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    },
  };
}
