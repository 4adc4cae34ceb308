/**
 * Idle RSS of a sidecar pair (identity from a real CA, one request through both), beside bare
 * `node -e` with an idle HTTP server, so a change to what the sidecar loads is measured in
 * half a minute instead of a full bench/proxy run. RSS is read 2 s after the request and again
 * after 20 s without traffic (V8's memory reducer gives back the young generation grown during
 * start-up ~8 s after allocation stops), split into anonymous memory and file-backed pages.
 * The sidecars run from the bundle `npm run build` makes (scripts/bundle.ts).
 *   node --import tsx bench/proxy/idle-rss.ts [--cli path/to/main.js] [-- extra node flags]
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { bundleCli } from "../../scripts/bundle.ts";
import { startMeshCa } from "../../test/proxy/fixtures.ts";
import { ROOT, startChild } from "./children.ts";

function rssMb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]) / 1024;
}

/** RSS split: anonymous memory (heaps, JIT code) vs. file-backed pages (the node binary, libraries). */
function rssSplit(pid: number): string {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(rollup)?.[1] ?? NaN);
  return `anonymous ${(kb("Anonymous") / 1024).toFixed(1)}, file-backed ${((kb("Rss") - kb("Anonymous")) / 1024).toFixed(1)}`;
}

const start = (args: string[], ready: RegExp) => startChild(process.execPath, args, ready);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const extraFlags = process.argv.includes("--") ? process.argv.slice(process.argv.indexOf("--") + 1) : [];
const given = process.argv.indexOf("--cli");
const cli = given >= 0 ? process.argv[given + 1]! : await bundleCli(join(ROOT, "node_modules/.cache/meshward-bench"));
const ca = await startMeshCa({ workloadTtl: "24h" });
try {
  const bare = await start([...extraFlags, "-e", `require("node:http").createServer((q, r) => r.end("ok")).listen(0, "127.0.0.1", function () { console.log("PORT " + this.address().port); })`], /PORT (\d+)/);
  const app = Number(bare.match![1]);
  const sidecar = async (appId: string, extra: string[]) =>
    start([...extraFlags, cli, "sidecar", "--app-id", appId, "--ca", ca.server.address, "--bundle", ca.bundleFile, "--token", await ca.token("default", appId), "--inbound", "127.0.0.1:0", "--log-level", "warn", ...extra], /inbound=127\.0\.0\.1:(\d+)(?: outbound=127\.0\.0\.1:(\d+))?/);
  const inbound = await sidecar("rss-b", ["--app", `127.0.0.1:${app}`]);
  const outbound = await sidecar("rss-a", ["--app", "127.0.0.1:1", "--outbound", "127.0.0.1:0", "--peer", `rss-b=127.0.0.1:${inbound.match![1]}`]);
  const res = await fetch(`http://127.0.0.1:${outbound.match![2]}/`, { headers: { "dapr-app-id": "rss-b" } });
  if ((await res.text()) !== "ok") throw new Error(`the request through both sidecars answered ${res.status}`);
  const pids = { "bare node:http": bare.child.pid!, "meshward inbound": inbound.child.pid!, "meshward outbound": outbound.child.pid! };
  console.log(`idle RSS (MB)${extraFlags.length ? `, node ${extraFlags.join(" ")}` : ""}, ${cli}`);
  let worst = 0;
  for (const [label, waitMs] of [["2 s after the request", 2000], ["20 s idle", 18_000]] as const) {
    await sleep(waitMs);
    console.log(` ${label}`);
    for (const [name, pid] of Object.entries(pids)) console.log(`  ${name.padEnd(18)} ${rssMb(pid).toFixed(1).padStart(5)}  (${rssSplit(pid)})`);
    worst = Math.max(rssMb(pids["meshward inbound"]), rssMb(pids["meshward outbound"]));
  }
  console.log(`  sidecar idle target ≤ 60 MB: ${worst <= 60 ? "MET" : "NOT MET"} (${worst.toFixed(1)} MB)`);
} finally {
  await ca.close();
  process.exit(0);
}
