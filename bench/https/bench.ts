/**
 * Requests/s and p99 for a small JSON response over keep-alive mTLS: meshward SDK HTTPS
 * server vs plain node:https (same certificate, requestCert + rejectUnauthorized, same CA)
 * in the same run — the cost of meshward's verification layer. Prints figures only.
 * Run: node --import tsx bench/https/bench.ts [seconds] [connections]
 */
import { spawn } from "node:child_process";
import { Agent, createServer as createPlainHttpsServer, request } from "node:https";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";

interface LoadJob {
  port: number;
  seconds: number;
  connections: number;
  ca: string;
  cert: string;
  key: string;
}

async function runLoad(job: LoadJob): Promise<{ requests: number; errors: number; seconds: number; p50: number; p99: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: job.connections, ca: job.ca, cert: job.cert, key: job.key, checkServerIdentity: () => undefined });
  const latencies: number[] = [];
  let errors = 0;
  const warmupEnd = Date.now() + 500;
  const deadline = warmupEnd + job.seconds * 1000;
  const one = () =>
    new Promise<void>((resolve) => {
      const t0 = performance.now();
      const req = request({ host: "127.0.0.1", port: job.port, path: "/", agent }, (res) => {
        res.resume();
        res.on("end", () => {
          if (Date.now() > warmupEnd) latencies.push(performance.now() - t0);
          resolve();
        });
      });
      req.on("error", () => {
        errors++;
        resolve();
      });
      req.end();
    });
  const loop = async () => {
    while (Date.now() < deadline) await one();
  };
  await Promise.all(Array.from({ length: job.connections }, loop));
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  return { requests: latencies.length, errors, seconds: job.seconds, p50: q(0.5), p99: q(0.99) };
}

if (process.argv[2] === "--load") {
  process.stdout.write(JSON.stringify(await runLoad(JSON.parse(process.argv[3]!) as LoadJob)));
} else {
  await main();
}

function loadInChild(job: LoadJob): Promise<Awaited<ReturnType<typeof runLoad>>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "--load", JSON.stringify(job)], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.once("error", reject);
    child.once("close", () => {
      try {
        resolve(JSON.parse(out));
      } catch (error) {
        reject(error);
      }
    });
  });
}

async function main(): Promise<void> {
  const seconds = Number(process.argv[2] ?? 5);
  const connections = Number(process.argv[3] ?? 16);
  const rounds = Number(process.argv[4] ?? 2);
  const { createTestPki } = await import("../../test/helpers/openssl-pki.ts");
  const { createHttpsServer } = await import("../../src/transport/index.ts");
  const { staticIdentity } = await import("../../src/identity/source.ts");
  const pki = createTestPki({ trustDomain: "bench.local" });
  const serverLeaf = pki.issueLeaf({ spiffeId: "spiffe://bench.local/ns/bench/server" });
  const clientLeaf = pki.issueLeaf({ spiffeId: "spiffe://bench.local/ns/bench/client" });
  const identity = staticIdentity({
    svid: { spiffeId: serverLeaf.spiffeId!, certChainPem: serverLeaf.chainPem, privateKey: serverLeaf.key, notBefore: serverLeaf.notBefore, notAfter: serverLeaf.notAfter, serial: serverLeaf.serial },
    bundle: { trustDomain: "bench.local", rootsPem: pki.root.certPem, revokedSerials: new Set<string>() },
  });
  const body = JSON.stringify({ ok: true, service: "orders", items: [1, 2, 3] });
  const quiet = { info() {}, warn() {}, error: (m: string) => console.error(m) };
  const sdk = await createHttpsServer({ identity, logger: quiet }, (req, res) => {
    res.writeHead(200, { "content-type": "application/json", "x-peer-app": req.peer.appId ?? "" });
    res.end(body);
  });
  const plain = createPlainHttpsServer({ cert: serverLeaf.chainPem, key: serverLeaf.keyPem, ca: pki.root.certPem, requestCert: true, rejectUnauthorized: true }, (_req, res) => {
    res.writeHead(200, { "content-type": "application/json", "x-peer-app": "" });
    res.end(body);
  });
  for (const s of [sdk, plain]) await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  try {
    const base = { seconds, connections, ca: pki.root.certPem, cert: clientLeaf.chainPem, key: clientLeaf.keyPem };
    console.log(`keep-alive mTLS, ${connections} connections, ${seconds}s per run, ${rounds} alternating rounds, client in a separate process`);
    const totals = { plain: { rps: 0, p99: 0 }, sdk: { rps: 0, p99: 0 } };
    const rows: Record<string, { reqPerSec: number; p50ms: number; p99ms: number; errors: number }> = {};
    for (let round = 1; round <= rounds; round++) {
      for (const [name, server] of [["plain", plain], ["sdk", sdk]] as const) {
        const r = await loadInChild({ ...base, port: (server.address() as AddressInfo).port });
        const rps = r.requests / r.seconds;
        totals[name].rps += rps / rounds;
        totals[name].p99 += r.p99 / rounds;
        rows[`${name === "sdk" ? "meshward SDK" : "plain node:https"} #${round}`] = { reqPerSec: Math.round(rps), p50ms: +r.p50.toFixed(2), p99ms: +r.p99.toFixed(2), errors: r.errors };
      }
    }
    console.table(rows);
    const overhead = 1 - totals.sdk.rps / totals.plain.rps;
    console.log(`mean req/s: plain ${Math.round(totals.plain.rps)}, SDK ${Math.round(totals.sdk.rps)} -> throughput overhead ${(overhead * 100).toFixed(1)}% (target <= 5%) ${overhead <= 0.05 ? "MET" : "NOT MET"}`);
    console.log(`mean p99 ms: plain ${totals.plain.p99.toFixed(2)}, SDK ${totals.sdk.p99.toFixed(2)}`);
  } finally {
    await sdk.meshward.close();
    plain.closeAllConnections();
    await new Promise((r) => plain.close(r));
    pki.cleanup();
  }
}
