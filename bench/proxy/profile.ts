/**
 * Where a sidecar pair spends its time: the same pair as bench/proxy/bench.ts (bundled CLI,
 * STRICT, no policy, a Node backend) with `--cpu-prof` on both sidecars, under
 * `wrk -t1 -c32` for the given seconds; then each sidecar's busiest functions by self time
 * and its share of one core. The .cpuprofile files stay in the printed folder (open them in
 * Chrome DevTools' Performance panel). Figures, not assertions; run it on a quiet machine.
 * With --strace, both sidecars run without the profiler and `strace -c -f` counts their system
 * calls during the measured run instead, printed per request (needs strace and ptrace rights).
 * With --close, wrk sends `Connection: close`: each request on a new client connection into the
 * outbound sidecar (the pair's own connection stays pooled), the bench's new-connections load.
 * With --rate N, the Go open-loop generator (bench/proxy/openloop) sends N requests per second
 * instead of wrk: where the time goes at a moderate rate, with few requests per wake-up (the
 * open-loop p99 runs of bench.ts), rather than at the peak.
 *   node --import tsx bench/proxy/profile.ts [seconds] [wrk-connections] [--strace] [--close] [--rate N]
 */
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundleCli } from "../../scripts/bundle.ts";
import { startMeshCa } from "../../test/proxy/fixtures.ts";
import { children, requireTools, ROOT, startChild } from "./children.ts";
import { openLoop } from "./openloop.ts";

const positional = process.argv.slice(2).filter((a, i, all) => !a.startsWith("--") && all[i - 1] !== "--rate" && all[i - 1] !== "--cache");
const SECONDS = Number(positional[0] ?? 8);
const CONNECTIONS = Number(positional[1] ?? 32);
const STRACE = process.argv.includes("--strace");
const CLOSE = process.argv.includes("--close");
const RATE = process.argv.includes("--rate") ? Number(process.argv[process.argv.indexOf("--rate") + 1]) : undefined;

const start = (args: string[], ready: RegExp) => startChild(process.execPath, args, ready);

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Self time by function, the busy share of the profile's wall time, and the top rows. */
function summarize(file: string, top: number): string {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let busy = 0;
  profile.samples.forEach((id, i) => {
    const frame = byId.get(id)!.callFrame;
    const delta = profile.timeDeltas[i] ?? 0;
    const key = `${frame.functionName || "(anonymous)"} ${frame.url.split("/").slice(-2).join("/")}:${frame.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + delta);
    if (frame.functionName !== "(idle)") busy += delta;
  });
  const wall = profile.endTime - profile.startTime;
  const rows = [...self.entries()]
    .filter(([key]) => !key.startsWith("(idle)"))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([key, us]) => `    ${((us / busy) * 100).toFixed(1).padStart(5)} %  ${key}`);
  return [`  busy ${((busy / wall) * 100).toFixed(0)} % of the profiled wall time; self time of the busy part:`, ...rows].join("\n");
}

/** Starts `strace -c -f -p pid`; the returned function stops it and formats the counts per request. */
function traceSyscalls(pid: number): (requests: number) => Promise<string> {
  const tracer = spawn("strace", ["-c", "-f", "-p", String(pid)], { stdio: ["ignore", "ignore", "pipe"] });
  children.push(tracer);
  let report = "";
  tracer.stderr!.on("data", (d) => (report += d));
  return async (requests) => {
    const exited = new Promise((resolve) => tracer.once("exit", resolve));
    tracer.kill("SIGINT");
    await exited;
    const rows = report
      .split("\n")
      .map((line) => /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$/.exec(line))
      .filter((m): m is RegExpExecArray => m !== null && m[2] !== "total")
      .map((m) => ({ call: m[2]!, perRequest: Number(m[1]) / requests }))
      .filter((r) => r.perRequest >= 0.01)
      .sort((a, b) => b.perRequest - a.perRequest);
    return rows.map((r) => `    ${r.perRequest.toFixed(2).padStart(6)}  ${r.call}`).join("\n") || report;
  };
}

async function main(): Promise<void> {
  requireTools("wrk");
  // `--cache DIR`: sessions sharing one node_modules must not rebuild each other's bundle (as in instructions.ts).
  const cache = process.argv.includes("--cache") ? process.argv[process.argv.indexOf("--cache") + 1]! : join(ROOT, "node_modules/.cache");
  const cli = await bundleCli(join(cache, "meshward-bench"));
  const ca = await startMeshCa({ workloadTtl: "24h" });
  const profiles = mkdtempSync(join(tmpdir(), "meshward-profile-"));
  try {
    const backend = await start(
      ["-e", `const s = require("node:http").createServer((q, r) => { r.writeHead(200, { "content-type": "text/plain", "content-length": 13 }); r.end("hello, mesh!\\n"); }); s.keepAliveTimeout = 60000; s.listen(0, "127.0.0.1", () => console.log("PORT " + s.address().port));`],
      /PORT (\d+)/,
    );
    const sidecar = async (appId: string, extra: string[]) =>
      start(
        [...(STRACE ? [] : ["--cpu-prof", "--cpu-prof-dir", join(profiles, appId)]), cli, "sidecar", "--app-id", appId, "--ca", ca.server.address, "--bundle", ca.bundleFile, "--token", await ca.token("default", appId), "--inbound", "127.0.0.1:0", "--log-level", "warn", ...extra],
        /inbound=127\.0\.0\.1:(\d+)(?: outbound=127\.0\.0\.1:(\d+))?/,
      );
    const inbound = await sidecar("bench-b", ["--app", `127.0.0.1:${backend.match![1]}`]);
    const outbound = await sidecar("bench-a", ["--app", "127.0.0.1:1", "--outbound", "127.0.0.1:0", "--peer", `bench-b=127.0.0.1:${inbound.match![1]}`]);
    const url = `http://127.0.0.1:${outbound.match![2]}/`;
    execFileSync("wrk", ["-t1", "-c8", "-d2s", "-H", "dapr-app-id: bench-b", url]);
    const tracers = STRACE ? [outbound, inbound].map((side) => traceSyscalls(side.child.pid!)) : [];
    if (STRACE) await new Promise((resolve) => setTimeout(resolve, 500));
    let requests: number;
    if (RATE === undefined) {
      const out = execFileSync("wrk", ["-t1", `-c${CONNECTIONS}`, `-d${SECONDS}s`, "--latency", "-H", "dapr-app-id: bench-b", ...(CLOSE ? ["-H", "Connection: close"] : []), url], { encoding: "utf8" });
      requests = Number(/(\d+) requests in/.exec(out)?.[1]);
      console.log(`Node ${process.version}, wrk -c${CONNECTIONS} ${SECONDS}s through the pair${CLOSE ? " (Connection: close)" : ""}: ${/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]} req/s (2 s warm-up before)`);
    } else {
      const result = openLoop(url, RATE, SECONDS, ["dapr-app-id: bench-b", ...(CLOSE ? ["Connection: close"] : [])]);
      // The generator's 2 s unrecorded run at the same rate is traced and profiled too.
      requests = ((result.ok + result.errors) / SECONDS) * (SECONDS + 2);
      console.log(`Node ${process.version}, open loop at ${RATE} req/s, ${SECONDS} s (+2 s unrecorded) through the pair${CLOSE ? " (Connection: close)" : ""}: p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms, ${result.errors} errors`);
    }
    if (STRACE) {
      for (const [i, role] of ["outbound (A)", "inbound (B)"].entries()) {
        console.log(`\n${role}: system calls per request (${requests} requests; strace slows the pair, so only the counts mean anything)`);
        console.log(await tracers[i]!(requests));
      }
    }
    for (const side of [outbound, inbound]) {
      const exited = new Promise((resolve) => side.child.once("exit", resolve));
      side.child.kill("SIGTERM");
      await exited;
    }
    for (const [appId, role] of STRACE ? [] : ([["bench-a", "outbound (A)"], ["bench-b", "inbound (B)"]] as const)) {
      const dir = join(profiles, appId);
      const file = readdirSync(dir).find((f) => f.endsWith(".cpuprofile"));
      console.log(`\n${role}: ${file ? join(dir, file) : "no profile written"}`);
      if (file) console.log(summarize(join(dir, file), 25));
    }
  } finally {
    for (const c of children) c.kill("SIGTERM");
    await ca.close();
  }
}

await main();
