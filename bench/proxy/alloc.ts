/**
 * What a sidecar pair allocates per proxied request, and where: both sidecars run in this process
 * (startSidecar, as the tests start them; the backend is a child process), V8's sampling heap
 * profiler records allocations, including the objects young- and old-generation GCs have
 * collected since, while `wrk -c32` sends keep-alive requests through the pair; the profile is
 * summed by allocating function and divided by the requests wrk counted. Allocation is what
 * makes scavenges (measured 2026-12-06: one per ~6.5 MB, 1–2 ms each) and part of the
 * per-request instructions. The sampling interval (`--interval`, bytes, default 512) makes the
 * figures estimates: compare functions within one run.
 *   node --import tsx bench/proxy/alloc.ts [--seconds 6] [--interval 512] [--top 40]
 */
import { execFile } from "node:child_process";
import { Session } from "node:inspector";
import { promisify } from "node:util";
import { startMeshCa, startTestSidecar } from "../../test/proxy/fixtures.ts";
import { children, requireTools, startChild } from "./children.ts";
import { BACKEND } from "./pipe-pair.ts";

const flag = (name: string, fallback: number): number => (process.argv.includes(name) ? Number(process.argv[process.argv.indexOf(name) + 1]) : fallback);
const SECONDS = flag("--seconds", 6);
const INTERVAL = flag("--interval", 512);
const TOP = flag("--top", 40);
/** With --depth N (> 1), allocations are also listed by their last N frames. */
const DEPTH = flag("--depth", 1);

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

const run = promisify(execFile);

async function wrk(url: string, args: string[]): Promise<number> {
  const { stdout } = await run("wrk", ["-t1", ...args, "-H", "dapr-app-id: bench-b", url]);
  const match = /(\d+) requests in/.exec(stdout);
  if (match === null) throw new Error(`wrk printed no request count:\n${stdout}`);
  return Number(match[1]);
}

function post<T>(session: Session, method: string, params: object = {}): Promise<T> {
  return new Promise((resolve, reject) => session.post(method, params, (error, result) => (error ? reject(error) : resolve(result as T))));
}

async function main(): Promise<void> {
  requireTools("wrk");
  const ca = await startMeshCa({ workloadTtl: "24h" });
  const backend = await startChild(process.execPath, ["-e", BACKEND], /PORT (\d+)/);
  const b = await startTestSidecar(ca, { appId: "bench-b", app: `127.0.0.1:${backend.match![1]}`, logLevel: "warn" });
  const a = await startTestSidecar(ca, { appId: "bench-a", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { "bench-b": `127.0.0.1:${b.addresses.inbound.port}` }, logLevel: "warn" });
  const url = `http://127.0.0.1:${a.addresses.outbound!.port}/`;
  try {
    await wrk(url, ["-c8", "-d3s"]);
    const session = new Session();
    session.connect();
    await post(session, "HeapProfiler.enable");
    await post(session, "HeapProfiler.startSampling", { samplingInterval: INTERVAL, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    const requests = await wrk(url, ["-c32", `-d${SECONDS}s`]);
    const { profile } = await post<{ profile: { head: ProfileNode } }>(session, "HeapProfiler.stopSampling");
    session.disconnect();

    const bySite = new Map<string, number>();
    const byPath = new Map<string, number>();
    let total = 0;
    const name = (node: ProfileNode) => {
      const { functionName, url: file, lineNumber } = node.callFrame;
      return `${functionName || "(anonymous)"} ${file.replace(/^.*\/(src|node_modules)\//, "$1/")}:${lineNumber + 1}`;
    };
    const walk = (node: ProfileNode, callers: string[]) => {
      const where = name(node);
      if (node.selfSize > 0) {
        bySite.set(where, (bySite.get(where) ?? 0) + node.selfSize);
        const path = [...callers.slice(-(DEPTH - 1)), where].join(" → ");
        byPath.set(path, (byPath.get(path) ?? 0) + node.selfSize);
        total += node.selfSize;
      }
      for (const child of node.children) walk(child, [...callers, where]);
    };
    walk(profile.head, []);
    console.log(`sidecar pair (both in this process), Node ${process.version}: ${requests} requests in ${SECONDS} s, ~${Math.round(total / requests)} bytes allocated per request (sampled every ${INTERVAL} bytes)`);
    console.log("bytes/request  share  allocating function");
    for (const [where, bytes] of [...bySite].sort((x, y) => y[1] - x[1]).slice(0, TOP)) {
      console.log(`${String(Math.round(bytes / requests)).padStart(13)}  ${((100 * bytes) / total).toFixed(1).padStart(4)} %  ${where}`);
    }
    if (DEPTH > 1) {
      console.log(`\nby their last ${DEPTH} frames (caller → … → allocating function)`);
      for (const [path, bytes] of [...byPath].sort((x, y) => y[1] - x[1]).slice(0, TOP)) {
        console.log(`${String(Math.round(bytes / requests)).padStart(13)}  ${((100 * bytes) / total).toFixed(1).padStart(4)} %  ${path}`);
      }
    }
  } finally {
    await a.close();
    await b.close();
    await ca.close();
    for (const child of children) child.kill();
  }
}

await main();
