/** Runs bench/proxy/openloop (the Go open-loop generator), building it on first use. */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { ROOT } from "./children.ts";

export interface OpenLoopResult {
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
  readonly achievedRate: number;
  readonly errors: number;
  readonly ok: number;
}

/** Builds bench/proxy/openloop (Go standard library only) into node_modules/.cache; returns the binary. */
function buildOpenLoop(): string {
  const out = join(ROOT, "node_modules/.cache/meshward-bench/openloop");
  execFileSync("go", ["build", "-o", out, join(ROOT, "bench/proxy/openloop/main.go")], { cwd: ROOT, env: { ...process.env, GOCACHE: join(ROOT, "node_modules/.cache/go-build"), GOFLAGS: "-mod=mod", GO111MODULE: "auto" } });
  return out;
}

let binary: string | undefined;

/** `rate` requests per second for `seconds` (after 2 s unrecorded at the same rate) over 64 keep-alive connections. */
export function openLoop(url: string, rate: number, seconds: number, headers: readonly string[]): OpenLoopResult {
  binary ??= buildOpenLoop();
  const out = execFileSync(binary, ["-url", url, "-rate", String(rate), "-seconds", String(seconds), "-c", "64", ...headers.flatMap((h) => ["-H", h])], { encoding: "utf8" });
  return JSON.parse(out.trim().split("\n").pop()!) as OpenLoopResult;
}
