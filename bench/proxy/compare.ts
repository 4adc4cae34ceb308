/**
 * The sidecar pair of this working tree against the same pair built from another revision, in
 * one run: rounds of `wrk -t1 -c32` through each pair alone (bundled CLI, STRICT, a policy that
 * allows the path, a Node backend), the two builds interleaved and their order swapped every
 * round so that the machine's drift hits both alike. Prints req/s and CPU µs per request of each
 * sidecar per round, the medians, and the working tree's ratio to the base; then the same for the
 * user-mode part of that CPU alone (utime): the kernel's part (system calls, TCP on loopback,
 * wake-ups) is the same for any pair making the same system calls, and moves most with the
 * machine, so a change to meshward's own work shows better there. Figures, not assertions; run
 * it on a quiet machine.
 * With --parsers, both pairs are the working tree's, one with each HTTP/1 parser build
 * (MESHWARD_HTTP1_PARSER=node, =wasm), and the ratio is wasm's to node's.
 * `--path /big` fetches 1 MiB bodies instead of 13 bytes (then MB/s are printed too).
 * `--close` sends `Connection: close` with wrk -c16: every request on a new client connection into
 * the outbound sidecar (the pair's own connection stays pooled), the bench's new-connections load.
 *   node --import tsx bench/proxy/compare.ts [--base REV | --parsers] [--path P] [--close] [--rounds N] [--seconds S]
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundleCli } from "../../scripts/bundle.ts";
import { startMeshCa } from "../../test/proxy/fixtures.ts";
import { children, requireTools, cpuSeconds, ROOT, startChild, userCpuSeconds } from "./children.ts";

const flag = (name: string, fallback: string): string => {
  const at = process.argv.indexOf(name);
  return at === -1 ? fallback : (process.argv[at + 1] ?? fallback);
};
const BASE = flag("--base", "HEAD");
const ROUNDS = Number(flag("--rounds", "4"));
const SECONDS = Number(flag("--seconds", "6"));

const PARSERS = process.argv.includes("--parsers");
/** `/big` answers 1 MiB (content-length), any other path 13 bytes. */
const PATH = flag("--path", "/items/1");
const CLOSE = process.argv.includes("--close");
const LOAD = CLOSE ? ["-c16", "-H", "Connection: close"] : ["-c32"];

const start = (args: string[], ready: RegExp, env?: Record<string, string>) => startChild(process.execPath, args, ready, env);
const megabytes = (rps: number): string => (PATH === "/big" ? ` (${((rps * (1 << 20)) / 1e6).toFixed(0)} MB/s)` : "");
const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/** The CLI bundle of `rev`, built from a temporary worktree that borrows this tree's node_modules. */
function bundleRevision(rev: string): string {
  const tree = mkdtempSync(join(tmpdir(), "meshward-base-"));
  execFileSync("git", ["worktree", "add", "--detach", tree, rev], { cwd: ROOT, stdio: "ignore" });
  try {
    symlinkSync(join(ROOT, "node_modules"), join(tree, "node_modules"));
    const out = join(ROOT, "node_modules/.cache/meshward-bench-base");
    execFileSync(process.execPath, ["--import", "tsx", join(tree, "scripts/bundle.ts"), out], { cwd: tree, stdio: "inherit" });
    return join(out, "main.js");
  } finally {
    execFileSync("git", ["worktree", "remove", "--force", tree], { cwd: ROOT, stdio: "ignore" });
    rmSync(tree, { recursive: true, force: true });
  }
}

interface Round {
  readonly rps: number;
  readonly outboundUs: number;
  readonly inboundUs: number;
  /** The user-mode part of the two above. */
  readonly outboundUserUs: number;
  readonly inboundUserUs: number;
}

async function main(): Promise<void> {
  requireTools("wrk");
  const baseRev = execFileSync("git", ["rev-parse", "--short", BASE], { cwd: ROOT, encoding: "utf8" }).trim();
  const tree = await bundleCli(join(ROOT, "node_modules/.cache/meshward-bench"));
  const builds: { name: string; cli: string; env?: Record<string, string> }[] = PARSERS
    ? [
        { name: "parser node", cli: tree, env: { MESHWARD_HTTP1_PARSER: "node" } },
        { name: "parser wasm", cli: tree, env: { MESHWARD_HTTP1_PARSER: "wasm" } },
      ]
    : [
        { name: `base ${baseRev}`, cli: bundleRevision(BASE) },
        { name: "working tree", cli: tree },
      ];
  const ca = await startMeshCa({ workloadTtl: "24h" });
  const dir = mkdtempSync(join(tmpdir(), "meshward-compare-"));
  const policy = join(dir, "policy.yaml");
  writeFileSync(
    policy,
    "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: { name: bench }\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: mesh.test\n    policies:\n      - appId: bench-a\n        defaultAction: deny\n        trustDomain: mesh.test\n        namespace: default\n        operations:\n          - { name: /**, httpVerb: [GET], action: allow }\n",
  );
  const results = new Map<string, Round[]>(builds.map((b) => [b.name, []]));
  try {
    const backend = await start(
      ["-e", `const big = Buffer.alloc(1 << 20, 97); const s = require("node:http").createServer((q, r) => { if (q.url === "/big") { r.writeHead(200, { "content-type": "application/octet-stream", "content-length": big.length }); r.end(big); return; } r.writeHead(200, { "content-type": "text/plain", "content-length": 13 }); r.end("hello, mesh!\\n"); }); s.keepAliveTimeout = 60000; s.listen(0, "127.0.0.1", () => console.log("PORT " + s.address().port));`],
      /PORT (\d+)/,
    );
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? builds : [...builds].reverse();
      for (const build of order) {
        const sidecar = async (appId: string, extra: string[]) =>
          start(
            [build.cli, "sidecar", "--app-id", appId, "--ca", ca.server.address, "--bundle", ca.bundleFile, "--token", await ca.token("default", appId), "--inbound", "127.0.0.1:0", "--log-level", "warn", ...extra],
            /inbound=127\.0\.0\.1:(\d+)(?: outbound=127\.0\.0\.1:(\d+))?/,
            build.env,
          );
        const inbound = await sidecar("bench-b", ["--app", `127.0.0.1:${backend.match![1]}`, "--policy", policy]);
        const outbound = await sidecar("bench-a", ["--app", "127.0.0.1:1", "--outbound", "127.0.0.1:0", "--peer", `bench-b=127.0.0.1:${inbound.match![1]}`]);
        const url = `http://127.0.0.1:${outbound.match![2]}${PATH}`;
        execFileSync("wrk", ["-t1", "-c8", "-d2s", "-H", "dapr-app-id: bench-b", url]);
        const cpuBefore = [cpuSeconds(outbound.child.pid), cpuSeconds(inbound.child.pid)];
        const userBefore = [userCpuSeconds(outbound.child.pid), userCpuSeconds(inbound.child.pid)];
        const out = execFileSync("wrk", ["-t1", ...LOAD, `-d${SECONDS}s`, "-H", "dapr-app-id: bench-b", url], { encoding: "utf8" });
        const cpuAfter = [cpuSeconds(outbound.child.pid), cpuSeconds(inbound.child.pid)];
        const userAfter = [userCpuSeconds(outbound.child.pid), userCpuSeconds(inbound.child.pid)];
        const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
        const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1];
        if (non2xx !== undefined) throw new Error(`${build.name}: ${non2xx} answers were not 2xx`);
        const row: Round = {
          rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]),
          outboundUs: ((cpuAfter[0]! - cpuBefore[0]!) / requests) * 1e6,
          inboundUs: ((cpuAfter[1]! - cpuBefore[1]!) / requests) * 1e6,
          outboundUserUs: ((userAfter[0]! - userBefore[0]!) / requests) * 1e6,
          inboundUserUs: ((userAfter[1]! - userBefore[1]!) / requests) * 1e6,
        };
        results.get(build.name)!.push(row);
        console.log(`round ${round + 1} ${build.name.padEnd(14)} ${row.rps.toFixed(0).padStart(7)} req/s${megabytes(row.rps)}  outbound ${row.outboundUs.toFixed(1)} µs/req (user ${row.outboundUserUs.toFixed(1)})  inbound ${row.inboundUs.toFixed(1)} µs/req (user ${row.inboundUserUs.toFixed(1)})`);
        for (const side of [outbound, inbound]) {
          const exited = new Promise((resolve) => side.child.once("exit", resolve));
          side.child.kill("SIGTERM");
          await exited;
        }
      }
    }
    console.log(`\nNode ${process.version}, ${ROUNDS} rounds of wrk -t1 ${LOAD.join(" ")} ${SECONDS}s, medians:`);
    const [base, head] = builds.map((b) => results.get(b.name)!);
    for (const build of builds) {
      const rows = results.get(build.name)!;
      console.log(`  ${build.name.padEnd(14)} ${median(rows.map((r) => r.rps)).toFixed(0).padStart(7)} req/s${megabytes(median(rows.map((r) => r.rps)))}  outbound ${median(rows.map((r) => r.outboundUs)).toFixed(1)} µs (user ${median(rows.map((r) => r.outboundUserUs)).toFixed(1)})  inbound ${median(rows.map((r) => r.inboundUs)).toFixed(1)} µs (user ${median(rows.map((r) => r.inboundUserUs)).toFixed(1)})`);
    }
    const ratio = median(head!.map((r) => r.rps)) / median(base!.map((r) => r.rps));
    const pairRatios = head!.map((r, i) => r.rps / base![i]!.rps);
    console.log(`  ${PARSERS ? "wasm / node" : "working tree / base"}: ${(ratio * 100).toFixed(1)} % of req/s (per round: ${pairRatios.map((r) => `${(r * 100).toFixed(0)} %`).join(", ")})`);
    // CPU per request is steadier than req/s on a shared machine: the load of other jobs moves both sides.
    for (const side of ["outboundUs", "inboundUs", "outboundUserUs", "inboundUserUs"] as const) {
      const cpu = head!.map((r, i) => r[side] / base![i]![side]);
      const label = { outboundUs: "CPU per request, outbound", inboundUs: "CPU per request, inbound", outboundUserUs: "user CPU per request, outbound", inboundUserUs: "user CPU per request, inbound" }[side];
      console.log(`  ${label}: ${(median(cpu) * 100).toFixed(1)} % (per round: ${cpu.map((r) => `${(r * 100).toFixed(0)} %`).join(", ")})`);
    }
  } finally {
    for (const c of children) c.kill("SIGTERM");
    await ca.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
