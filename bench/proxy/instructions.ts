/**
 * Instructions per proxied request, counted rather than timed: each sidecar of a pair runs under
 * `valgrind --tool=callgrind`, which counts the user-mode instructions a process executes (all
 * its threads: JavaScript, WebAssembly, V8's builtins, GC and compiler threads, OpenSSL, libuv,
 * libc; not the kernel). Counters are zeroed before each round and dumped after exactly N
 * requests, whatever else the machine is doing — which CPU time per request (bench.ts,
 * compare.ts) is not: on two shared cores it moves by ±3–8 % per round. Measured (README): the
 * first two rounds after any warm-up cost 1.3–2.8× the later ones, however long the warm-up (V8's
 * concurrent compiler threads, serialised under valgrind, finish then), so they are reported but
 * not counted (`--settle`); after them the pipe pair repeats within 1 %, while a meshward sidecar
 * has a floor it repeats within 1 % and rounds above it where a major GC landed. The figure is
 * that floor (the least of the counted rounds), with the median beside it. Use it to judge a change to the sidecar's per-request work; use bench.ts for what a
 * user gets. Instructions are not time (a cache miss or a system call costs more than its
 * count says), so the issue-20 target itself stays on CPU time.
 *
 * Pairs: the meshward pair (the CLI bundle, as bench.ts runs it: outbound → mTLS → inbound →
 * backend, no policy) and the pipe pair (bench/proxy/pipe-pair.ts: bytes only, no HTTP), the
 * ceiling of any Node sidecar pair. The client is a keep-alive node:http agent in this
 * process with `--connections` requests in flight (default 1: one request per wake-up, so the
 * count does not depend on how requests happened to batch); the backend runs without valgrind.
 *   node --import tsx bench/proxy/instructions.ts [--mode keepalive|close|h2] [--requests 2000] [--warmup 2000] [--connections 1] [--rounds 6] [--settle 2] [--top 25] [--base <git-ref>]
 *     [--jit-settled 1] [--warmup-max 6] [--bundle-refresh 24h|60s|none] [--node-args "--single-threaded"] [--cache DIR] [--skip-pipe] [--keep] [--self N]
 * Not per-request work, kept out of the rounds (README, 2026-12-08): the identities' trust-bundle
 * refresh (the sidecars run with `--bundle-refresh-interval 24h`), and V8's compilers (warm-up
 * chunks until they are quiet; each round's JIT instructions are counted and the summary also
 * gives every figure without them, with the rounds' spread).
 * `--top N` prints the N costliest symbols (inclusive) of each meshward sidecar from
 * callgrind_annotate (JIT code has no symbols: it shows as addresses). `--self N` prints the N
 * costliest by their own instructions (exclusive), for every sidecar of both pairs, with JIT and
 * remapped-builtin addresses named from V8's perf map (the sidecars then run with
 * `--perf-basic-prof`, which V8 writes to /tmp/perf-<pid>.map; JavaScript functions show as
 * `JS:*name file:line`, optimised ones with the `*`). `--base REF` also
 * measures the meshward pair built from REF (a git worktree under node_modules/.cache), for A/B;
 * it may be given more than once (one pair per REF, in the same rounds). `--cache DIR` puts the
 * bundles and base worktrees in DIR instead of node_modules/.cache (sessions sharing one
 * node_modules must not rebuild each other's; DIR must lie inside a directory whose node_modules
 * holds undici, e.g. node_modules/.cache/<name>: the bundle loads llhttp's WebAssembly from
 * there, and without it the sidecars fall back to Node's parser); `--skip-pipe` leaves the pipe
 * pair out; `--keep` leaves every round's callgrind dumps (`<pair>-outbound.<pid>.<n>`,
 * `<pair>-inbound.<pid>.<n>`) in the run's directory, whose name it prints, for callgrind_annotate.
 * Needs valgrind (Debian's valgrind); under it a sidecar runs ~50× slower, so the defaults take
 * ~7 minutes.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { Agent, request } from "node:http";
import { connect as connectH2 } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundleCli } from "../../scripts/bundle.ts";
import { startMeshCa } from "../../test/proxy/fixtures.ts";
import type { MeshCa } from "../../test/proxy/fixtures.ts";
import { ROOT, startChild } from "./children.ts";
import { BACKEND, PIPE_INBOUND, PIPE_OUTBOUND } from "./pipe-pair.ts";

const flag = (name: string, fallback: number): number => (process.argv.includes(name) ? Number(process.argv[process.argv.indexOf(name) + 1]) : fallback);
const REQUESTS = flag("--requests", 2000);
const WARMUP = flag("--warmup", 2000);
const CONNECTIONS = flag("--connections", 1);
const ROUNDS = flag("--rounds", 6);
const SETTLE = flag("--settle", 2);
const TOP = flag("--top", 0);
const SELF = flag("--self", 0);
/** Node flags for the profiled processes: a perf map to name JIT code by, when --self asks for names. */
/**
 * `--node-args "<flags>"`: Node/V8 flags for every counted process. `--single-threaded` (no
 * concurrent compiler or GC threads: their work lands on the main thread, in the round that caused
 * it) makes the counts repeat on a machine other jobs are loading, where the helper threads'
 * waiting and stealing otherwise moves meshward's rounds by ±20 %.
 */
const NODE_ARGS = process.argv.includes("--node-args") ? process.argv[process.argv.indexOf("--node-args") + 1]!.split(" ").filter((a) => a !== "") : [];
const NODE_FLAGS = [...NODE_ARGS, ...(SELF > 0 ? ["--perf-basic-prof"] : [])];
/** Every `--base REF` given (each measured as its own pair, named "base" when there is one, "base-REF" otherwise: the name is also an app id). */
const BASES = process.argv.flatMap((arg, i) => (arg === "--base" && process.argv[i + 1] !== undefined ? [process.argv[i + 1]!] : []));
/** Where the bundles and base worktrees go; another directory per session when several share a checkout's node_modules. */
const CACHE = process.argv.includes("--cache") ? process.argv[process.argv.indexOf("--cache") + 1]! : join(ROOT, "node_modules/.cache");
/** Leaves the pipe pair out (A/B runs of meshward builds only; its ratio lines are then not printed). */
/**
 * The load: `keepalive` (default: HTTP/1.1 on kept-alive connections), `close` (HTTP/1.1, a new
 * client connection per request, `Connection: close`: the outbound's per-connection work; A→B stays
 * pooled), `h2` (HTTP/2 prior knowledge into the outbound, one session, CONNECTIONS streams in
 * flight: outbound HTTP/2 → mTLS HTTP/2 → the inbound's stream path and its HTTP/1 bridge to the
 * backend). The pipe pair only moves bytes of kept-alive connections, so `close` and `h2` leave it out.
 */
const MODE = process.argv.includes("--mode") ? process.argv[process.argv.indexOf("--mode") + 1]! : "keepalive";
if (!["keepalive", "close", "h2"].includes(MODE)) throw new Error(`--mode ${MODE}: keepalive, close or h2`);
const SKIP_PIPE = process.argv.includes("--skip-pipe") || MODE !== "keepalive";
/**
 * The identities' trust-bundle and CRL refresh (60 s by default) costs a sidecar 30–45 M
 * instructions under valgrind (a TLS request to the CA, X.509 and CRL verification, a new secure
 * context): 20–30k per request in a round of 1,500, landing in whichever round its minute ends.
 * It is not per-request work, so the bench's sidecars refresh once a day
 * (`--bundle-refresh-interval 24h`; the product default stays 60 s). `--bundle-refresh DURATION`
 * sets another interval, e.g. `60s` to see it; give `--bundle-refresh none` for a base built before
 * the flag existed.
 */
const BUNDLE_REFRESH_VALUE = process.argv.includes("--bundle-refresh") ? process.argv[process.argv.indexOf("--bundle-refresh") + 1]! : "24h";
const BUNDLE_REFRESH = BUNDLE_REFRESH_VALUE === "none" ? [] : ["--bundle-refresh-interval", BUNDLE_REFRESH_VALUE];
/**
 * JIT work: V8's compilers, counted per round as the inclusive instructions of the runtime entries
 * that compile (lazy bytecode, Sparkplug, TurboFan, OSR, tier-up budget interrupts, deoptimisation).
 * With `--single-threaded` TurboFan runs on the main thread, 1–48k per request in rounds after a
 * fixed warm-up; without it, on its own threads (also counted: callgrind counts every thread, and
 * those threads' work is attributed to `v8::internal::OptimizingCompileDispatcher`/the job's entry).
 * After `--warmup` requests, warm-up chunks of `--requests` run (counted, not reported as rounds)
 * until every process's JIT share of a chunk is below `--jit-settled` percent (default 1) or
 * `--warmup-max` chunks (default 6) have run. Each round then prints its JIT instructions, and the
 * summary gives the floor and median both with and without them, and each pair's spread.
 */
const JIT_SETTLED_PCT = flag("--jit-settled", 1);
const WARMUP_MAX = flag("--warmup-max", 6);
const JIT_ENTRIES = /^v8::internal::(Runtime_CompileLazy|Runtime_CompileBaseline|Runtime_InstallBaselineCode|Runtime_CompileOptimized|Runtime_CompileOptimizedOSR|Runtime_CompileOptimizedOSRFromMaglev|Runtime_BytecodeBudgetInterrupt\w*|Runtime_NotifyDeoptimized|Runtime_HealOptimizedCodeSlot|Runtime_FunctionLogNextExecution|OptimizingCompileDispatcher::CompileTask::RunInternal|baseline::ConcurrentBaselineCompiler::JobDispatcher::Run|OptimizingCompileDispatcher::InstallOptimizedFunctions)\(/;
/** Start-up under valgrind (module loading, CSR, first handshake) takes tens of seconds. */
const VALGRIND_READY_MS = 240_000;

interface Pair {
  readonly name: string;
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly outbound: { pid: number; out: string };
  readonly inbound: { pid: number; out: string };
  stop(): void;
}

function callgrind(out: string): string[] {
  return ["--tool=callgrind", "--collect-atstart=yes", `--callgrind-out-file=${out}`];
}

/** Sends `count` GET / through `url` with CONNECTIONS in flight; every answer must be 200. */
async function load(url: string, headers: Record<string, string>, count: number): Promise<void> {
  if (MODE === "h2") return loadH2(url, headers, count);
  const agent = new Agent({ keepAlive: MODE === "keepalive", maxSockets: CONNECTIONS });
  const target = new URL(url);
  let next = 0;
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const req = request({ host: target.hostname, port: target.port, path: "/", headers, agent }, (res) => {
        res.resume();
        res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`${url} answered ${res.statusCode}`))));
      });
      req.on("error", reject);
      req.end();
    });
  const worker = async () => {
    while (next < count) {
      next++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: CONNECTIONS }, worker));
  agent.destroy();
}

/** `--mode h2`: `count` GET / as streams of one HTTP/2 session, CONNECTIONS in flight; every answer must be 200. */
async function loadH2(url: string, headers: Record<string, string>, count: number): Promise<void> {
  const session = connectH2(url);
  session.on("error", () => undefined);
  let next = 0;
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const stream = session.request({ ":method": "GET", ":path": "/", ...headers });
      let status = 0;
      stream.on("response", (h) => (status = Number(h[":status"])));
      stream.on("error", reject);
      stream.resume();
      stream.on("end", () => (status === 200 ? resolve() : reject(new Error(`${url} answered ${status}`))));
    });
  const worker = async () => {
    while (next < count) {
      next++;
      await one();
    }
  };
  try {
    await Promise.all(Array.from({ length: CONNECTIONS }, worker));
  } finally {
    session.close();
  }
}

/** Zeroes a process's counters (callgrind_control waits until valgrind has done it). */
const zero = (pid: number) => execFileSync("callgrind_control", ["--zero", String(pid)], { stdio: "ignore" });

/** Dumps a process's counters and returns the instructions since the last zero. */
function dump(pid: number, out: string): { instructions: number; file: string } {
  const dir = join(out, "..");
  const before = new Set(readdirSync(dir));
  execFileSync("callgrind_control", ["--dump", String(pid)], { stdio: "ignore" });
  const file = readdirSync(dir).find((f) => !before.has(f) && f.startsWith(`${out.split("/").pop()!}`));
  if (file === undefined) throw new Error(`callgrind wrote no dump for ${pid}`);
  const text = readFileSync(join(dir, file), "utf8");
  const totals = /^(?:summary|totals): (\d+)/m.exec(text);
  if (totals === null) throw new Error(`no totals in ${file}`);
  return { instructions: Number(totals[1]), file: join(dir, file) };
}

/**
 * The instructions of a dump spent in V8's compilers (JIT_ENTRIES, inclusive). The entries do not
 * nest in one another (a compiler runs no JavaScript), so their sum counts nothing twice.
 */
function jitInstructions(file: string): number {
  const text = execFileSync("callgrind_annotate", ["--inclusive=yes", "--auto=no", "--threshold=100", file], { encoding: "utf8", maxBuffer: 256 << 20 });
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^\s*([\d,]+) \([^)]*\)\s+(?:[^:\s]*:)?(v8::internal::.*)$/.exec(line);
    if (m !== null && JIT_ENTRIES.test(m[2]!)) sum += Number(m[1]!.replace(/,/g, ""));
  }
  return sum;
}

function topSymbols(file: string, rows: number): string {
  const text = execFileSync("callgrind_annotate", ["--inclusive=yes", `--threshold=100`, file], { encoding: "utf8", maxBuffer: 64 << 20 });
  const lines = text.split("\n").filter((l) => /^\s*[\d,]+ \(/.test(l));
  return lines
    .slice(0, rows)
    .map((l) => `    ${l.trim()}`)
    .join("\n");
}

/** V8's perf map of a process: [start, end, name] sorted by start (later entries win on overlap: code moved or replaced). */
function perfMap(pid: number): [number, number, string][] {
  const file = `/tmp/perf-${pid}.map`;
  if (!existsSync(file)) return [];
  const entries = readFileSync(file, "utf8")
    .split("\n")
    .flatMap((line) => {
      const m = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line);
      return m === null ? [] : [[parseInt(m[1]!, 16), parseInt(m[1]!, 16) + parseInt(m[2]!, 16), m[3]!] as [number, number, string]];
    });
  return entries.sort((a, b) => a[0] - b[0]);
}

function nameAt(map: readonly [number, number, string][], address: number): string | undefined {
  let lo = 0;
  let hi = map.length - 1;
  let found: string | undefined;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (map[mid]![0] <= address) {
      if (address < map[mid]![1]) found = map[mid]![2];
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found;
}

/**
 * The costliest symbols by their own instructions, JIT addresses named from the perf map, summed by
 * name. A dump taken while the process runs (callgrind_control --dump) also lists the functions on
 * the stack at that moment (main, the event loop, a thread's start) with their thread's whole cost
 * as their own: those lines are left out.
 */
/** Entry frames of the main and worker threads: no work of their own, but a mid-run dump lists them with their threads' whole cost. */
const STACK_FRAMES = /clone\.S:clone|pthread_create\.c:start_thread|libc-start\.c:__libc_start_main|\(below main\)|ld-linux-x86-64\.so\.2\]|\?\?\?:main \[|NodeMainInstance::Run\(\)|SpinEventLoopInternal|node::Start\(int/;

function selfSymbols(file: string, pid: number, rows: number, requests: number): string {
  const text = execFileSync("callgrind_annotate", ["--inclusive=no", "--auto=no", "--threshold=100", file], { encoding: "utf8", maxBuffer: 256 << 20 });
  const total = Number((/^\s*([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS/m.exec(text)?.[1] ?? "0").replace(/,/g, ""));
  const map = perfMap(pid);
  const byName = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^\s*([\d,]+) \([^)]*\)\s+(.*)$/.exec(line);
    if (m === null || m[2]!.startsWith("PROGRAM TOTALS")) continue;
    const count = Number(m[1]!.replace(/,/g, ""));
    if ((total > 0 && count >= total / 2) || STACK_FRAMES.test(m[2]!)) continue;
    let name = m[2]!.replace(/^\?\?\?:/, "").replace(/ \[\/usr\/bin\/node\]$/, "");
    const address = /^0x([0-9a-f]+) \[\?\?\?\]$/.exec(name);
    if (address !== null) name = nameAt(map, parseInt(address[1]!, 16)) ?? "(JIT or remapped code without a perf-map entry)";
    byName.set(name, (byName.get(name) ?? 0) + count);
  }
  return [...byName]
    .sort((a, b) => b[1] - a[1])
    .slice(0, rows)
    .map(([name, count]) => `    ${Math.round(count / requests).toLocaleString("en").padStart(7)}  ${((count / total) * 100).toFixed(1).padStart(5)} %  ${name.slice(0, 150)}`)
    .join("\n");
}

async function meshwardPair(name: string, cli: string, ca: MeshCa, backendPort: number, work: string): Promise<Pair> {
  const sidecar = async (appId: string, out: string, extra: string[]) =>
    startChild(
      "valgrind",
      [...callgrind(out), process.execPath, ...NODE_FLAGS, cli, "sidecar", "--app-id", appId, "--ca", ca.server.address, "--bundle", ca.bundleFile, "--inbound", "127.0.0.1:0", "--log-level", "warn", ...BUNDLE_REFRESH, ...extra],
      /inbound=127\.0\.0\.1:(\d+)(?: outbound=127\.0\.0\.1:(\d+))?/,
      { MESHWARD_TOKEN: await ca.token("default", appId) },
      VALGRIND_READY_MS,
    );
  const outB = join(work, `${name}-inbound`);
  const outA = join(work, `${name}-outbound`);
  const b = await sidecar(`${name}-b`, outB, ["--app", `127.0.0.1:${backendPort}`]);
  const a = await sidecar(`${name}-a`, outA, ["--app", "127.0.0.1:1", "--outbound", "127.0.0.1:0", "--peer", `${name}-b=127.0.0.1:${b.match![1]}`]);
  return {
    name,
    url: `http://127.0.0.1:${a.match![2]}`,
    headers: { "dapr-app-id": `${name}-b` },
    outbound: { pid: a.child.pid!, out: outA },
    inbound: { pid: b.child.pid!, out: outB },
    stop: () => [a, b].forEach((s) => s.child.kill("SIGKILL")),
  };
}

async function pipePair(ca: MeshCa, backendPort: number, work: string): Promise<Pair> {
  const filesB = await ca.clientFiles("default", "naive-b", ["naive-b.mesh.test"]);
  const filesA = await ca.clientFiles("default", "naive-a");
  const outB = join(work, "pipe-inbound");
  const outA = join(work, "pipe-outbound");
  const b = await startChild("valgrind", [...callgrind(outB), process.execPath, ...NODE_FLAGS, "-e", PIPE_INBOUND(filesB.cert, filesB.key, ca.bundleFile, backendPort)], /PORT (\d+)/, undefined, VALGRIND_READY_MS);
  const a = await startChild("valgrind", [...callgrind(outA), process.execPath, ...NODE_FLAGS, "-e", PIPE_OUTBOUND(filesA.cert, filesA.key, ca.bundleFile, Number(b.match![1]))], /PORT (\d+)/, undefined, VALGRIND_READY_MS);
  return {
    name: "node-pipe",
    url: `http://127.0.0.1:${a.match![1]}`,
    headers: {},
    outbound: { pid: a.child.pid!, out: outA },
    inbound: { pid: b.child.pid!, out: outB },
    stop: () => [a, b].forEach((s) => s.child.kill("SIGKILL")),
  };
}

/** The CLI bundle of another commit, for --base: a detached worktree sharing this checkout's node_modules. */
async function bundleAt(ref: string, suffix: string): Promise<string> {
  const tree = join(CACHE, `meshward-instructions-base${suffix}`);
  if (existsSync(tree)) execFileSync("git", ["worktree", "remove", "--force", tree], { cwd: ROOT });
  execFileSync("git", ["worktree", "add", "--detach", tree, ref], { cwd: ROOT, stdio: "ignore" });
  execFileSync("ln", ["-s", join(ROOT, "node_modules"), join(tree, "node_modules")]);
  const { bundleCli: bundleBase } = (await import(join(tree, "scripts/bundle.ts"))) as { bundleCli: (out: string) => Promise<string> };
  return await bundleBase(join(CACHE, `meshward-instructions-base${suffix}-bundle`));
}

async function main(): Promise<void> {
  execFileSync("valgrind", ["--version"], { stdio: "ignore" });
  const cli = await bundleCli(join(CACHE, "meshward-bench"));
  const baseClis: [string, string][] = [];
  for (const [i, ref] of BASES.entries()) baseClis.push([BASES.length === 1 ? "base" : `base-${ref.replace(/[^A-Za-z0-9_-]/g, "_")}`, await bundleAt(ref, i === 0 ? "" : `-${i}`)]);
  const ca = await startMeshCa({ workloadTtl: "24h" });
  const work = mkdtempSync(join(tmpdir(), "meshward-instructions-"));
  const backend = await startChild(process.execPath, ["-e", BACKEND], /PORT (\d+)/);
  const backendPort = Number(backend.match![1]);
  const pairs: Pair[] = [];
  try {
    console.log(`instructions per request (callgrind), ${REQUESTS} requests after ${WARMUP} of warm-up, ${CONNECTIONS} in flight, ${MODE}, Node ${process.version}${NODE_ARGS.length > 0 ? `, node ${NODE_ARGS.join(" ")}` : ""}`);
    if (!SKIP_PIPE) pairs.push(await pipePair(ca, backendPort, work));
    pairs.push(await meshwardPair("meshward", cli, ca, backendPort, work));
    for (const [name, baseCli] of baseClis) pairs.push(await meshwardPair(name, baseCli, ca, backendPort, work));
    for (const pair of pairs) await load(pair.url, pair.headers, WARMUP);
    /** One counted batch of `REQUESTS` through a pair: instructions per request of each side, total and JIT. */
    const measure = async (pair: Pair) => {
      zero(pair.outbound.pid);
      zero(pair.inbound.pid);
      await load(pair.url, pair.headers, REQUESTS);
      const a = dump(pair.outbound.pid, pair.outbound.out);
      const b = dump(pair.inbound.pid, pair.inbound.out);
      return { a, b, jitA: jitInstructions(a.file) / REQUESTS, jitB: jitInstructions(b.file) / REQUESTS };
    };
    const k = (x: number) => `${(x / 1000).toFixed(1)}k`;
    // Warm-up until V8's compilers are done: chunks of REQUESTS until every process's JIT share is under JIT_SETTLED_PCT.
    for (let chunk = 1; chunk <= WARMUP_MAX; chunk++) {
      let settled = true;
      const line: string[] = [];
      for (const pair of pairs) {
        const m = await measure(pair);
        const shareA = (m.jitA / (m.a.instructions / REQUESTS)) * 100;
        const shareB = (m.jitB / (m.b.instructions / REQUESTS)) * 100;
        if (shareA >= JIT_SETTLED_PCT || shareB >= JIT_SETTLED_PCT) settled = false;
        line.push(`${pair.name} ${k(m.a.instructions / REQUESTS)} (JIT ${shareA.toFixed(1)} %) · ${k(m.b.instructions / REQUESTS)} (JIT ${shareB.toFixed(1)} %)`);
        if (process.argv.includes("--keep")) continue;
        rmSync(m.a.file, { force: true });
        rmSync(m.b.file, { force: true });
      }
      console.log(`  warm-up chunk ${chunk}: ${line.join("; ")}`);
      if (settled) break;
      if (chunk === WARMUP_MAX) console.log(`  JIT still at or above ${JIT_SETTLED_PCT} % after ${WARMUP_MAX} warm-up chunks: read the rounds' JIT column and the "without JIT" figures`);
    }
    const results = new Map<string, { outbound: number[]; inbound: number[]; jitOutbound: number[]; jitInbound: number[]; files: string[] }>();
    for (let round = 1; round <= ROUNDS; round++) {
      for (const pair of pairs) {
        const { a, b, jitA, jitB } = await measure(pair);
        const r = results.get(pair.name) ?? { outbound: [], inbound: [], jitOutbound: [], jitInbound: [], files: [] };
        r.outbound.push(a.instructions / REQUESTS);
        r.inbound.push(b.instructions / REQUESTS);
        r.jitOutbound.push(jitA);
        r.jitInbound.push(jitB);
        r.files = [a.file, b.file];
        results.set(pair.name, r);
        console.log(`  round ${round} ${pair.name.padEnd(9)} outbound ${Math.round(a.instructions / REQUESTS).toLocaleString("en")} (JIT ${Math.round(jitA).toLocaleString("en")}) · inbound ${Math.round(b.instructions / REQUESTS).toLocaleString("en")} (JIT ${Math.round(jitB).toLocaleString("en")}) instructions per request`);
      }
    }
    if (ROUNDS <= SETTLE) throw new Error(`--rounds ${ROUNDS} leaves no round after the ${SETTLE} settling rounds`);
    const counted = (xs: number[]) => xs.slice(SETTLE);
    const floor = (xs: number[]) => Math.min(...counted(xs));
    const median = (xs: number[]) => {
      const sorted = [...counted(xs)].sort((a, b) => a - b);
      return sorted[Math.floor((sorted.length - 1) / 2)]!;
    };
    /** (max − min) / min of the counted rounds, in percent. */
    const spread = (xs: number[]) => ((Math.max(...counted(xs)) - floor(xs)) / floor(xs)) * 100;
    const minus = (xs: number[], ys: number[]) => xs.map((x, i) => x - ys[i]!);
    const fmt = (x: number) => Math.round(x).toLocaleString("en");
    console.log(`rounds ${SETTLE + 1}–${ROUNDS} (the first ${SETTLE} settle V8): floor (median) instructions per request, spread (max − min) / min; then without JIT`);
    for (const [name, r] of results) {
      const [netA, netB] = [minus(r.outbound, r.jitOutbound), minus(r.inbound, r.jitInbound)];
      console.log(`  ${name.padEnd(9)} outbound ${fmt(floor(r.outbound))} (${fmt(median(r.outbound))}) ±${spread(r.outbound).toFixed(1)} % · inbound ${fmt(floor(r.inbound))} (${fmt(median(r.inbound))}) ±${spread(r.inbound).toFixed(1)} %`);
      console.log(`  ${"".padEnd(9)} without JIT: outbound ${fmt(floor(netA))} (${fmt(median(netA))}) ±${spread(netA).toFixed(1)} % · inbound ${fmt(floor(netB))} (${fmt(median(netB))}) ±${spread(netB).toFixed(1)} %`);
    }
    const pipe = results.get("node-pipe");
    for (const [name, r] of results) {
      if (name === "node-pipe" || pipe === undefined) continue;
      const net = (x: { outbound: number[]; inbound: number[]; jitOutbound: number[]; jitInbound: number[] }) => [floor(minus(x.outbound, x.jitOutbound)), floor(minus(x.inbound, x.jitInbound))] as const;
      const [mA, mB] = net(r);
      const [pA, pB] = net(pipe);
      console.log(`${name} / node-pipe at the floor: outbound ${(floor(r.outbound) / floor(pipe.outbound)).toFixed(3)}×, inbound ${(floor(r.inbound) / floor(pipe.inbound)).toFixed(3)}×; without JIT ${(mA / pA).toFixed(3)}×, ${(mB / pB).toFixed(3)}×`);
    }
    const mesh = results.get("meshward")!;
    for (const [name] of baseClis) {
      const base = results.get(name)!;
      const pct = (a: number, b: number) => ((a / b) * 100).toFixed(2);
      console.log(`meshward / ${name}: floor outbound ${pct(floor(mesh.outbound), floor(base.outbound))} %, inbound ${pct(floor(mesh.inbound), floor(base.inbound))} %; median outbound ${pct(median(mesh.outbound), median(base.outbound))} %, inbound ${pct(median(mesh.inbound), median(base.inbound))} %`);
      const netFloor = (x: number[], j: number[]) => floor(minus(x, j));
      console.log(`  without JIT: floor outbound ${pct(netFloor(mesh.outbound, mesh.jitOutbound), netFloor(base.outbound, base.jitOutbound))} %, inbound ${pct(netFloor(mesh.inbound, mesh.jitInbound), netFloor(base.inbound, base.jitInbound))} %`);
    }
    if (SELF > 0) {
      for (const pair of pairs) {
        const [fa, fb] = results.get(pair.name)!.files;
        console.log(`${pair.name} outbound, own instructions per request by symbol (last round):\n${selfSymbols(fa!, pair.outbound.pid, SELF, REQUESTS)}`);
        console.log(`${pair.name} inbound:\n${selfSymbols(fb!, pair.inbound.pid, SELF, REQUESTS)}`);
      }
    }
    if (TOP > 0) {
      const [fa, fb] = results.get("meshward")!.files;
      console.log(`meshward outbound, costliest symbols (inclusive, last round):\n${topSymbols(fa!, TOP)}`);
      console.log(`meshward inbound:\n${topSymbols(fb!, TOP)}`);
    }
  } finally {
    pairs.forEach((p) => p.stop());
    // V8 leaves its perf maps behind.
    if (SELF > 0) for (const p of pairs) for (const pid of [p.outbound.pid, p.inbound.pid]) rmSync(`/tmp/perf-${pid}.map`, { force: true });
    backend.child.kill("SIGKILL");
    await ca.close();
    if (process.argv.includes("--keep")) console.log(`callgrind dumps kept in ${work}`);
    else rmSync(work, { recursive: true, force: true });
  }
}

await main();
