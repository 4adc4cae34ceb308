/**
 * Sidecar speed, one run, same Node backend, same load generators, all on loopback:
 *   direct (no proxy) · meshward outbound → meshward inbound (mTLS) · nginx outbound
 *   (proxy_ssl_certificate) → nginx inbound (ssl_verify_client on), one worker each.
 * In ROUNDS rounds, the paths' order rotated each round (so every ratio compares runs minutes
 * apart at most), prints req/s, p50/p99 and CPU per request for small keep-alive requests
 * (wrk -c32); then, in ROUNDS rounds each: MB/s for 1 MiB bodies, new client connections per second (Connection: close),
 * and open-loop latency at half of the meshward pair's own peak (bench/proxy/openloop, a Go
 * generator: the Node one needs a core at these rates); each process's RSS; the targets of issue
 * 20 beside them. No assertions: figures and ratios only. Two Node baselines are printed
 * too: a naive pair (node:https server → node:http, node:http server → node:https, keep-alive
 * agents, no policy, no SPIFFE checks: what two L7 hops cost through node:http's objects) and a
 * pipe pair (plain TCP in, bytes piped into mTLS and out again, no HTTP at all: what two Node
 * processes with a TLS hop cost before any proxying work — the ceiling of any Node sidecar pair).
 * The sidecars run from the bundle `npm run build` makes (scripts/bundle.ts), written to
 * node_modules/.cache/meshward-bench, not through the tsx loader. RSS is read right after the
 * first request, after 20 s without traffic (the idle figure: V8 gives back the young
 * generation it grew during start-up only once its memory reducer runs) and after the load.
 *   node --import tsx bench/proxy/bench.ts [seconds-per-run] [--rounds 3] [--open-loop-only] [--rate N]
 */
import { execFileSync } from "node:child_process";
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundleCli } from "../../scripts/bundle.ts";
import { startMeshCa } from "../../test/proxy/fixtures.ts";
import { children, requireTools, cpuSeconds, ownAndFinishedChildrenSeconds, ROOT, startChild, userCpuSeconds, withOtherLoad } from "./children.ts";
import { openLoop as runOpenLoop, type OpenLoopResult } from "./openloop.ts";
import { BACKEND, PIPE_INBOUND, PIPE_OUTBOUND } from "./pipe-pair.ts";

const SECONDS = Number(process.argv[2] ?? 8);
const ROUNDS = process.argv.includes("--rounds") ? Number(process.argv[process.argv.indexOf("--rounds") + 1]) : 3;
/** Only the open-loop rounds (after one keep-alive run of the meshward pair for its peak): for work on latency. */
const OPEN_LOOP_ONLY = process.argv.includes("--open-loop-only");
/** The open loop's "half" rate, fixed (the quarter is half of it), instead of half the peak this run measures: to compare runs. */
const FIXED_RATE = process.argv.includes("--rate") ? Number(process.argv[process.argv.indexOf("--rate") + 1]) : undefined;
/** For looking into a sidecar: Node/V8 flags for both (BENCH_SIDECAR_NODE_ARGS="--trace-gc") and files for their stdout (BENCH_SIDECAR_STDOUT=/tmp/gc gives /tmp/gc.outbound and /tmp/gc.inbound). */
const SIDECAR_NODE_ARGS = process.env.BENCH_SIDECAR_NODE_ARGS?.split(" ").filter(Boolean) ?? [];
const SIDECAR_STDOUT = process.env.BENCH_SIDECAR_STDOUT || undefined;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number): Promise<void> {
  const { connect } = await import("node:net");
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1", () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`port ${port} never opened`);
}

function rssMb(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN) / 1024;
}

/** nginx master + its single worker. */
function nginxWorkerPid(master: number | undefined): number | undefined {
  try {
    return Number(execFileSync("pgrep", ["-P", String(master)]).toString().trim().split("\n")[0]);
  } catch {
    return undefined;
  }
}

interface WrkResult {
  requests: number;
  rps: number;
  p50: number;
  p99: number;
  mbps: number;
  errors: string;
}

function toMs(text: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(text);
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === "us" ? v / 1000 : m[2] === "s" ? v * 1000 : v;
}

function toMb(text: string): number {
  const m = /([\d.]+)(B|KB|MB|GB)/.exec(text);
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === "GB" ? v * 1024 : m[2] === "KB" ? v / 1024 : m[2] === "B" ? v / 1048576 : v;
}

function wrk(url: string, connections: number, headers: string[] = []): WrkResult {
  const args = ["-t1", `-c${connections}`, `-d${SECONDS}s`, "--latency", ...headers.flatMap((h) => ["-H", h]), url];
  const out = execFileSync("wrk", args, { encoding: "utf8" });
  return {
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN),
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN),
    // Anchored: the Thread Stats table also holds percentages ("+/- Stdev 85.50%").
    p50: toMs(/^\s*50%\s+(\S+)/m.exec(out)?.[1] ?? ""),
    p99: toMs(/^\s*99%\s+(\S+)/m.exec(out)?.[1] ?? ""),
    mbps: toMb(/Transfer\/sec:\s+(\S+)/.exec(out)?.[1] ?? ""),
    errors: [/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1], /Socket errors: (.*)/.exec(out)?.[1]].filter(Boolean).join("; "),
  };
}

const openLoop = (url: string, rate: number, headers: readonly string[]): OpenLoopResult => runOpenLoop(url, rate, SECONDS, headers);

/** The paths in a different order each round, so no path always runs first (or right after the same one). */
function rotated<T>(items: readonly T[], round: number): T[] {
  const k = round % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}


/** Bundles the CLI as `npm run build` does (scripts/bundle.ts) into node_modules/.cache; returns its entry. */
async function buildCli(): Promise<string> {
  return await bundleCli(join(ROOT, "node_modules/.cache/meshward-bench"));
}

/** How long the processes sit without traffic before "idle" RSS is read: V8's memory reducer runs ~8 s after allocation stops. */
const IDLE_SETTLE_MS = 20_000;

const NAIVE_INBOUND = (cert: string, key: string, ca: string, appPort: number) => `
const fs = require("fs"), https = require("https"), http = require("http");
const agent = new http.Agent({ keepAlive: true });
const s = https.createServer({ cert: fs.readFileSync(${JSON.stringify(cert)}), key: fs.readFileSync(${JSON.stringify(key)}), ca: fs.readFileSync(${JSON.stringify(ca)}), requestCert: true, rejectUnauthorized: true }, (q, r) => {
  const o = http.request({ host: "127.0.0.1", port: ${appPort}, path: q.url, method: q.method, headers: q.headers, agent }, (u) => { r.writeHead(u.statusCode, u.headers); u.pipe(r); });
  o.on("error", () => r.destroy()); q.pipe(o);
});
s.keepAliveTimeout = 60000;
s.listen(0, "127.0.0.1", () => console.log("PORT " + s.address().port));`;
const NAIVE_OUTBOUND = (cert: string, key: string, ca: string, peerPort: number) => `
const fs = require("fs"), https = require("https"), http = require("http");
const agent = new https.Agent({ keepAlive: true, cert: fs.readFileSync(${JSON.stringify(cert)}), key: fs.readFileSync(${JSON.stringify(key)}), ca: fs.readFileSync(${JSON.stringify(ca)}) });
const s = http.createServer((q, r) => {
  const o = https.request({ host: "127.0.0.1", port: ${peerPort}, path: q.url, method: q.method, headers: q.headers, agent, servername: "naive-b.mesh.test" }, (u) => { r.writeHead(u.statusCode, u.headers); u.pipe(r); });
  o.on("error", () => r.destroy()); q.pipe(o);
});
s.keepAliveTimeout = 60000;
s.listen(0, "127.0.0.1", () => console.log("PORT " + s.address().port));`;

async function main(): Promise<void> {
  requireTools("wrk", "nginx");
  const cli = await buildCli();
  const ca = await startMeshCa({ workloadTtl: "24h" });
  const work = mkdtempSync(join(tmpdir(), "meshward-bench-proxy-"));
  try {
    const backend = await startChild(process.execPath, ["-e", BACKEND], /PORT (\d+)/);
    const backendPort = Number(backend.match![1]);

    // meshward: B in front of the backend, A as the client's outbound.
    const sidecar = async (appId: string, extra: string[]) =>
      startChild(
        process.execPath,
        [...SIDECAR_NODE_ARGS, cli, "sidecar", "--app-id", appId, "--ca", ca.server.address, "--bundle", ca.bundleFile, "--token", await ca.token("default", appId), "--inbound", "127.0.0.1:0", "--log-level", "warn", ...extra],
        /inbound=127\.0\.0\.1:(\d+)(?: outbound=127\.0\.0\.1:(\d+))?/,
      );
    const sideB = await sidecar("bench-b", ["--app", `127.0.0.1:${backendPort}`]);
    const sideA = await sidecar("bench-a", ["--app", "127.0.0.1:1", "--outbound", "127.0.0.1:0", "--peer", `bench-b=127.0.0.1:${sideB.match![1]}`]);
    if (SIDECAR_STDOUT !== undefined) {
      sideB.child.stdout!.pipe(createWriteStream(`${SIDECAR_STDOUT}.inbound`));
      sideA.child.stdout!.pipe(createWriteStream(`${SIDECAR_STDOUT}.outbound`));
    }
    const meshwardUrl = `http://127.0.0.1:${sideA.match![2]}`;
    const meshwardHeaders = ["dapr-app-id: bench-b"];

    // nginx: the same roles, certificates from the same CA (nginx checks a DNS name, not the SPIFFE ID).
    const nginxB = await ca.clientFiles("default", "nginx-b", ["nginx-b.mesh.test"]);
    const nginxA = await ca.clientFiles("default", "nginx-a");
    const [portB, portA] = [await freePort(), await freePort()];
    const common = (dir: string) =>
      `worker_processes 1;\ndaemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log error;\nevents { worker_connections 4096; }\nhttp {\n access_log off;\n client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};\n proxy_buffering off;\n keepalive_requests 100000;\n`;
    const dirB = join(work, "nginx-b");
    const dirA = join(work, "nginx-a");
    for (const d of [dirB, dirA]) execFileSync("mkdir", ["-p", d]);
    writeFileSync(
      join(dirB, "nginx.conf"),
      `${common(dirB)} upstream app { server 127.0.0.1:${backendPort}; keepalive 64; }\n server {\n  listen 127.0.0.1:${portB} ssl;\n  ssl_protocols TLSv1.2 TLSv1.3;\n  ssl_certificate ${nginxB.cert};\n  ssl_certificate_key ${nginxB.key};\n  ssl_client_certificate ${ca.bundleFile};\n  ssl_verify_client on;\n  ssl_verify_depth 2;\n  ssl_session_cache shared:SSL:10m;\n  location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }\n }\n}\n`,
    );
    writeFileSync(
      join(dirA, "nginx.conf"),
      `${common(dirA)} upstream peer { server 127.0.0.1:${portB}; keepalive 64; }\n server {\n  listen 127.0.0.1:${portA};\n  location / {\n   proxy_pass https://peer; proxy_http_version 1.1; proxy_set_header Connection "";\n   proxy_ssl_certificate ${nginxA.cert};\n   proxy_ssl_certificate_key ${nginxA.key};\n   proxy_ssl_trusted_certificate ${ca.bundleFile};\n   proxy_ssl_verify on;\n   proxy_ssl_verify_depth 2;\n   proxy_ssl_name nginx-b.mesh.test;\n   proxy_ssl_server_name on;\n   proxy_ssl_session_reuse on;\n   proxy_ssl_protocols TLSv1.2 TLSv1.3;\n  }\n }\n}\n`,
    );
    const ngB = await startChild("nginx", ["-p", dirB, "-c", join(dirB, "nginx.conf"), "-e", join(dirB, "error.log")], undefined);
    const ngA = await startChild("nginx", ["-p", dirA, "-c", join(dirA, "nginx.conf"), "-e", join(dirA, "error.log")], undefined);
    await waitForPort(portB);
    await waitForPort(portA);
    const nginxUrl = `http://127.0.0.1:${portA}`;

    const naiveB = await ca.clientFiles("default", "naive-b", ["naive-b.mesh.test"]);
    const naiveA = await ca.clientFiles("default", "naive-a");
    const nvB = await startChild(process.execPath, ["-e", NAIVE_INBOUND(naiveB.cert, naiveB.key, ca.bundleFile, backendPort)], /PORT (\d+)/);
    const nvA = await startChild(process.execPath, ["-e", NAIVE_OUTBOUND(naiveA.cert, naiveA.key, ca.bundleFile, Number(nvB.match![1]))], /PORT (\d+)/);
    const naiveUrl = `http://127.0.0.1:${nvA.match![1]}`;
    const ppB = await startChild(process.execPath, ["-e", PIPE_INBOUND(naiveB.cert, naiveB.key, ca.bundleFile, backendPort)], /PORT (\d+)/);
    const ppA = await startChild(process.execPath, ["-e", PIPE_OUTBOUND(naiveA.cert, naiveA.key, ca.bundleFile, Number(ppB.match![1]))], /PORT (\d+)/);
    const pipeUrl = `http://127.0.0.1:${ppA.match![1]}`;

    // Warm up (pools, JIT) and check every path answers 200.
    for (const [url, h] of [[`http://127.0.0.1:${backendPort}`, []], [meshwardUrl, meshwardHeaders], [nginxUrl, []], [naiveUrl, []], [pipeUrl, []]] as const) {
      const res = await fetch(`${url}/`, { headers: Object.fromEntries(h.map((x) => x.split(": ") as [string, string])) });
      if (res.status !== 200) throw new Error(`${url} answered ${res.status}: ${await res.text()}`);
    }
    const rssAll = () => ({
      "meshward inbound": rssMb(sideB.child.pid),
      "meshward outbound": rssMb(sideA.child.pid),
      "nginx inbound worker": rssMb(nginxWorkerPid(ngB.child.pid)),
      "nginx outbound worker": rssMb(nginxWorkerPid(ngA.child.pid)),
      "node-naive inbound": rssMb(nvB.child.pid),
      "node-naive outbound": rssMb(nvA.child.pid),
    });
    const started = rssAll();
    if (!OPEN_LOOP_ONLY) await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
    const idle = rssAll();

    const paths = {
      direct: { url: `http://127.0.0.1:${backendPort}`, headers: [] as string[] },
      meshward: { url: meshwardUrl, headers: meshwardHeaders },
      nginx: { url: nginxUrl, headers: [] as string[] },
      "node-naive": { url: naiveUrl, headers: [] as string[] },
    };
    const small: Record<string, WrkResult> = {};
    // The pipe pair opens one TLS connection per client connection, so only keep-alive loads say something about it.
    const withPipe = { ...paths, "node-pipe": { url: pipeUrl, headers: [] as string[] } };
    // The processes each small run goes through, for CPU time per request (from /proc, so scheduling
    // noise that moves req/s moves this less): outbound, inbound, backend.
    const processes: Record<string, [number | undefined, number | undefined, number | undefined]> = {
      direct: [undefined, undefined, backend.child.pid],
      meshward: [sideA.child.pid, sideB.child.pid, backend.child.pid],
      nginx: [nginxWorkerPid(ngA.child.pid), nginxWorkerPid(ngB.child.pid), backend.child.pid],
      "node-naive": [nvA.child.pid, nvB.child.pid, backend.child.pid],
      "node-pipe": [ppA.child.pid, ppB.child.pid, backend.child.pid],
    };
    // Everything of this benchmark's that uses CPU besides itself and its load generators, so that
    // each section can say how much of the machine something else took during its runs.
    const benchPids = [...children.map((c) => c.pid), nginxWorkerPid(ngA.child.pid), nginxWorkerPid(ngB.child.pid)];
    const otherLoad: Record<string, number[]> = {};
    const measured = <T>(section: string, run: () => T): T => {
      const { result, otherCores } = withOtherLoad(benchPids, run);
      (otherLoad[section] ??= []).push(otherCores);
      return result;
    };
    // Small keep-alive requests in rounds too: one 6 s run of a pair moves by ±20 % from one run to
    // the next on this machine, so the targets compare each round's pair and read the median.
    const smallPaths = Object.entries(withPipe).filter(([name]) => !OPEN_LOOP_ONLY || (name === "meshward" && FIXED_RATE === undefined));
    for (const [, p] of smallPaths) wrk(`${p.url}/`, 8, p.headers); // warm-up
    const smallRounds: Record<string, WrkResult>[] = [];
    const cpuRounds: Record<string, number[]>[] = [];
    /** The user-mode part of cpuRounds (utime): the kernel's part is the same for pairs making the same system calls. */
    const userRounds: Record<string, number[]>[] = [];
    for (let round = 0; round < (OPEN_LOOP_ONLY ? 1 : ROUNDS); round++) {
      smallRounds.push({});
      cpuRounds.push({});
      userRounds.push({});
      for (const [name, p] of rotated(smallPaths, round)) {
        const before = processes[name]!.map(cpuSeconds);
        const userBefore = processes[name]!.map(userCpuSeconds);
        const result = measured("small", () => wrk(`${p.url}/`, 32, p.headers));
        smallRounds[round]![name] = result;
        cpuRounds[round]![name] = processes[name]!.map((pid, i) => ((cpuSeconds(pid) - before[i]!) * 1e6) / result.requests);
        userRounds[round]![name] = processes[name]!.map((pid, i) => ((userCpuSeconds(pid) - userBefore[i]!) * 1e6) / result.requests);
      }
    }
    // Medians over the rounds, path by path.
    const cpuPerRequest: Record<string, number[]> = {};
    const userPerRequest: Record<string, number[]> = {};
    for (const [name] of smallPaths) {
      const runs = smallRounds.map((r) => r[name]!);
      small[name] = { requests: median(runs.map((r) => r.requests)), rps: median(runs.map((r) => r.rps)), p50: median(runs.map((r) => r.p50)), p99: median(runs.map((r) => r.p99)), mbps: median(runs.map((r) => r.mbps)), errors: runs.map((r) => r.errors).filter(Boolean).join("; ") };
      cpuPerRequest[name] = [0, 1, 2].map((i) => median(cpuRounds.map((r) => r[name]![i]!)));
      userPerRequest[name] = [0, 1, 2].map((i) => median(userRounds.map((r) => r[name]![i]!)));
    }
    // Rounds: each round runs every path once, the order rotated; ratios are taken within a round.
    const big: Record<string, WrkResult>[] = [];
    const fresh: Record<string, WrkResult>[] = [];
    const cpuPerConnection: Record<string, number[][]> = {};
    for (let round = 0; round < (OPEN_LOOP_ONLY ? 0 : ROUNDS); round++) {
      big.push({});
      for (const [name, p] of rotated(Object.entries(withPipe), round)) big[round]![name] = measured("big", () => wrk(`${p.url}/big`, 4, p.headers));
    }
    for (let round = 0; round < (OPEN_LOOP_ONLY ? 0 : ROUNDS); round++) {
      fresh.push({});
      for (const [name, p] of rotated(Object.entries(paths), round)) {
        const before = processes[name]!.map(cpuSeconds);
        fresh[round]![name] = measured("fresh", () => wrk(`${p.url}/`, 16, [...p.headers, "Connection: close"]));
        (cpuPerConnection[name] ??= []).push(processes[name]!.map((pid, i) => ((cpuSeconds(pid) - before[i]!) * 1e6) / fresh[round]![name]!.requests));
      }
    }
    // Open loop at half of the meshward pair's own peak. The saturated runs above leave a backlog in
    // the proxies; let it drain, then warm the pools again at the rate.
    const meshHalf = FIXED_RATE ?? Math.round(small.meshward!.rps / 2);
    await new Promise((r) => setTimeout(r, 5000));
    openLoop(`${paths.meshward.url}/`, meshHalf, paths.meshward.headers);
    // The pipe pair runs too: its added p99 is what any Node pair adds at that rate on this machine.
    const openLoopPaths = ["direct", "meshward", "nginx", "node-pipe"] as const;
    const openLoopCpu: Record<string, Record<string, number[][]>> = {};
    const openLoopRounds = (section: string, rate: number): Record<string, OpenLoopResult>[] => {
      const rows: Record<string, OpenLoopResult>[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        rows.push({});
        for (const name of rotated(openLoopPaths, round)) {
          const before = [...processes[name]!.map(cpuSeconds), ownAndFinishedChildrenSeconds()];
          const result = measured(section, () => openLoop(`${withPipe[name].url}/`, rate, withPipe[name].headers));
          const after = [...processes[name]!.map(cpuSeconds), ownAndFinishedChildrenSeconds()];
          // Per recorded request, though the 2 s unrecorded at the same rate count too (same rate, so the same per request).
          const requests = result.achievedRate > 0 ? (result.ok / SECONDS) * (SECONDS + 2) : NaN;
          ((openLoopCpu[section] ??= {})[name] ??= []).push(after.map((a, i) => ((a - before[i]!) * 1e6) / requests));
          rows[round]![name] = result;
        }
      }
      return rows;
    };
    const atMeshHalf = openLoopRounds("half", meshHalf);
    // For information: a quarter of the peak, where fewer processes compete for the two cores.
    const meshQuarter = Math.round(meshHalf / 2);
    const atMeshQuarter = openLoopRounds("quarter", meshQuarter);
    const loaded = rssAll();

    const f = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : "n/a");
    const pct = (n: number) => `${(n * 100).toFixed(0)}%`;
    const met = (ok: boolean) => (ok ? "MET" : "NOT MET");
    const other = (section: string) => {
      const cores = otherLoad[section] ?? [];
      console.log(`  other load on the machine during these runs (not this bench's processes): ${f(Math.min(...cores), 2)}–${f(Math.max(...cores), 2)} cores, median ${f(median(cores), 2)}`);
    };
    console.log(`\nmeshward sidecar bench — ${SECONDS}s per run, ${ROUNDS} rounds, wrk -t1, Node ${process.version}, loopback, 2 cores shared by everything\n`);
    if (OPEN_LOOP_ONLY) console.log(FIXED_RATE === undefined ? `meshward pair keep-alive peak (wrk -c32): ${f(small.meshward!.rps)} req/s` : `open-loop rates fixed by --rate`);
    else {
      console.log(`small keep-alive requests (wrk -c32, 13-byte body), ${ROUNDS} rounds`);
      console.log("  path       req/s per round            median   p50 ms   p99 ms (medians)   errors");
      for (const [name, r] of Object.entries(small)) console.log(`  ${name.padEnd(10)} ${smallRounds.map((round) => f(round[name]!.rps).padStart(7)).join(" ").padEnd(26)} ${f(r.rps).padStart(7)}   ${f(r.p50, 2).padStart(6)}   ${f(r.p99, 2).padStart(6)}             ${r.errors || "-"}`);
      console.log("  CPU µs per request (user + system, /proc; median of the rounds):   outbound   inbound   backend");
      for (const [name, us] of Object.entries(cpuPerRequest)) console.log(`  ${name.padEnd(10)} ${" ".repeat(57)}${us.map((u) => f(u, 1).padStart(8)).join("  ")}`);
      console.log("  of which user mode (utime; the rest is the kernel's):");
      for (const [name, us] of Object.entries(userPerRequest)) console.log(`  ${name.padEnd(10)} ${" ".repeat(57)}${us.map((u) => f(u, 1).padStart(8)).join("  ")}`);
      const ratios = smallRounds.map((r) => r.meshward!.rps / r.nginx!.rps);
      console.log(`  meshward / nginx req/s per round: ${ratios.map(pct).join(", ")} (target ≥ 65%: ${met(median(ratios) >= 0.65)} at the median, ${met(ratios.every((r) => r >= 0.65))} in every round); medians: meshward / node-naive = ${pct(small.meshward!.rps / small["node-naive"]!.rps)}, meshward / node-pipe = ${pct(small.meshward!.rps / small["node-pipe"]!.rps)}, node-pipe / nginx = ${pct(small["node-pipe"]!.rps / small.nginx!.rps)}`);
      const cpuRatios = cpuRounds.map((r) => [r.meshward![0]! / r["node-pipe"]![0]!, r.meshward![1]! / r["node-pipe"]![1]!] as const);
      const worst = cpuRatios.map(([o, i]) => Math.max(o, i));
      console.log(`  CPU per request, meshward / node-pipe per round (outbound, inbound): ${cpuRatios.map(([o, i]) => `${f(o, 2)}×, ${f(i, 2)}×`).join("; ")} (target ≤ 1.5×: ${met(median(worst) <= 1.5)} at the median, ${met(worst.every((w) => w <= 1.5))} in every round)`);
      other("small");

      console.log(`\n1 MiB bodies (wrk -c4), MB/s per round`);
      for (const name of Object.keys(withPipe)) console.log(`  ${name.padEnd(10)} ${big.map((b) => f(b[name]!.mbps, 1).padStart(7)).join("  ")}${big.some((b) => b[name]!.errors) ? `   ${big.map((b) => b[name]!.errors).join("; ")}` : ""}`);
      const bigRatios = big.map((b) => b.meshward!.mbps / b.nginx!.mbps);
      console.log(`  meshward / nginx per round: ${bigRatios.map(pct).join(", ")} (target ≥ 90% in every run: ${met(bigRatios.every((r) => r >= 0.9))})`);
      other("big");

      console.log("\nnew client connections (wrk -c16, Connection: close; proxy-to-proxy connections stay pooled in both), conn/s per round");
      for (const name of Object.keys(paths)) console.log(`  ${name.padEnd(10)} ${fresh.map((r) => f(r[name]!.rps).padStart(7)).join("  ")}`);
      const freshRatios = fresh.map((r) => r.meshward!.rps / r.nginx!.rps);
      console.log("  CPU µs per connection (user + system, /proc; median of the rounds):   outbound   inbound   backend");
      for (const [name, rows] of Object.entries(cpuPerConnection)) console.log(`  ${name.padEnd(10)} ${" ".repeat(57)}${[0, 1, 2].map((i) => f(median(rows.map((r) => r[i]!)), 1).padStart(8)).join("  ")}`);
      console.log(`  meshward / nginx per round: ${freshRatios.map(pct).join(", ")} (target ≥ 50%: ${met(freshRatios.every((r) => r >= 0.5))} in every round, ${met(median(freshRatios) >= 0.5)} at the median)`);
      other("fresh");
    }

    const openLoopTable = (title: string, rate: number, rows: Record<string, OpenLoopResult>[], isTarget: boolean, section: string) => {
      console.log(`\nopen loop at ${title} (${rate} req/s, ${SECONDS} s recorded after 2 s unrecorded, 64 connections; bench/proxy/openloop)`);
      const held = (r: OpenLoopResult) => r.achievedRate >= 0.95 * rate && r.errors === 0;
      for (const name of openLoopPaths) {
        console.log(`  ${name.padEnd(10)} p50 / p99 / p99.9 ms per round: ${rows.map((r) => `${f(r[name]!.p50Ms, 2)} / ${f(r[name]!.p99Ms, 2)} / ${f(r[name]!.p999Ms, 2)}${held(r[name]!) ? "" : ` (SATURATED or errors: ${f(r[name]!.achievedRate)} req/s, ${r[name]!.errors} errors)`}`).join("   ")}`);
      }
      const added = rows.map((r) => r.meshward!.p99Ms - r.direct!.p99Ms);
      const addedNginx = rows.map((r) => r.nginx!.p99Ms - r.direct!.p99Ms);
      const addedPipe = rows.map((r) => r["node-pipe"]!.p99Ms - r.direct!.p99Ms);
      const directP99 = rows.map((r) => r.direct!.p99Ms);
      console.log(`  p99 added (path − direct, same round): meshward ${added.map((a) => `${f(a, 2)}`).join(", ")} ms; nginx ${addedNginx.map((a) => `${f(a, 2)}`).join(", ")} ms; node-pipe (bytes only, the floor of a Node pair) ${addedPipe.map((a) => `${f(a, 2)}`).join(", ")} ms`);
      console.log("  CPU µs per request at this rate (median of the rounds):   outbound   inbound   backend   load generator");
      for (const [name, rows] of Object.entries(openLoopCpu[section] ?? {})) console.log(`  ${name.padEnd(10)} ${" ".repeat(47)}${[0, 1, 2, 3].map((i) => f(median(rows.map((r) => r[i]!)), 1).padStart(8)).join("  ")}`);
      console.log(`  noise: direct's own p99 ranged ${f(Math.min(...directP99), 2)}–${f(Math.max(...directP99), 2)} ms across the rounds`);
      const verdict = `${met(rows.every((r) => held(r.meshward!)) && median(added) <= 1)} at the median (${f(median(added), 2)} ms), ${met(added.every((a) => a <= 1))} in every round`;
      console.log(`  ${isTarget ? "target p99 added ≤ 1 ms" : "p99 added ≤ 1 ms (for information)"}: ${verdict}`);
      other(section);
    };
    openLoopTable(FIXED_RATE === undefined ? "half of the meshward pair's own peak" : "the rate given with --rate", meshHalf, atMeshHalf, FIXED_RATE === undefined, "half");
    openLoopTable(FIXED_RATE === undefined ? "a quarter of the meshward pair's peak" : "half the rate given with --rate", meshQuarter, atMeshQuarter, false, "quarter");

    console.log(`\nRSS (MB)             after 1st request   idle ${IDLE_SETTLE_MS / 1000} s   after load`);
    for (const name of Object.keys(idle) as (keyof typeof idle)[]) console.log(`  ${name.padEnd(22)} ${f(started[name], 1).padStart(6)}            ${f(idle[name], 1).padStart(6)}      ${f(loaded[name], 1).padStart(6)}`);
    const idleMax = Math.max(idle["meshward inbound"], idle["meshward outbound"]);
    if (!OPEN_LOOP_ONLY) console.log(`  sidecar idle RSS ${f(idleMax, 1)} MB (the earlier target, ≤ 60 MB: ${met(idleMax <= 60)}; not one of issue 20's)`);
  } finally {
    for (const c of children) c.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 300));
    await ca.close();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
process.exit(0);

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
