/**
 * RSS per idle connection of a sidecar listener, to size `limits.maxConnections`: a sidecar with
 * an app (inbound) and one with only an outbound port, each run from the CLI bundle; N
 * connections are opened to each listener, one request is answered on every one, and they are
 * left idle (keep-alive). Reported: RSS before, with the N connections idle, and the difference
 * per connection.
 *   inbound: mutual TLS (TLS 1.3, the caller's workload certificate), GET / forwarded to a bare
 *     node:http app, 16 connections at a time (so the sidecar's pool to the app stays small);
 *   outbound: plaintext HTTP/1.1 from the app, GET with dapr-app-id of an app no sidecar is known
 *     for, answered 404 by the sidecar itself (no peer connection is opened: the listener's own
 *     cost, not the pool's).
 *   node --import tsx bench/proxy/connection-rss.ts [N=1000] [--cli path/to/main.js]
 */
import { readFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import type { Socket } from "node:net";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { bundleCli } from "../../scripts/bundle.ts";
import { startMeshCa } from "../../test/proxy/fixtures.ts";
import { ROOT, startChild } from "./children.ts";

const count = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? 1000);
const given = process.argv.indexOf("--cli");
const cli = given >= 0 ? process.argv[given + 1]! : await bundleCli(join(ROOT, "node_modules/.cache/meshward-bench"));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);

/** Sends one GET on `socket` and resolves once a complete (Content-Length) response has arrived. */
function oneRequest(socket: Socket, head: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = "";
    const onData = (d: Buffer) => {
      got += d.toString("latin1");
      const end = got.indexOf("\r\n\r\n");
      if (end < 0) return;
      const length = Number(/content-length:\s*(\d+)/i.exec(got.slice(0, end))?.[1] ?? 0);
      if (got.length - end - 4 < length) return;
      socket.off("data", onData);
      if (!/^HTTP\/1\.1 (200|404)/.test(got)) reject(new Error(`unexpected answer: ${got.slice(0, 80)}`));
      else resolve();
    };
    socket.on("data", onData);
    socket.once("error", reject);
    socket.write(head);
  });
}

async function openMany(open: () => Promise<Socket>, concurrency: number): Promise<Socket[]> {
  const sockets: Socket[] = [];
  while (sockets.length < count) {
    const batch = Math.min(concurrency, count - sockets.length);
    sockets.push(...(await Promise.all(Array.from({ length: batch }, open))));
  }
  return sockets;
}

async function measure(label: string, pid: number, open: () => Promise<Socket>, concurrency: number): Promise<void> {
  await sleep(3000);
  const before = rssKb(pid);
  const sockets = await openMany(open, concurrency);
  await sleep(5000);
  const after = rssKb(pid);
  const perConnection = (after - before) / count;
  console.log(`${label.padEnd(30)} RSS ${(before / 1024).toFixed(1)} MB -> ${(after / 1024).toFixed(1)} MB with ${count} idle: ${perConnection.toFixed(1)} KiB per connection`);
  for (const s of sockets) s.destroy();
}

const ca = await startMeshCa({ workloadTtl: "24h" });
try {
  const app = await startChild(process.execPath, ["-e", `require("node:http").createServer((q, r) => r.end("ok")).listen(0, "127.0.0.1", function () { console.log("PORT " + this.address().port); })`], /PORT (\d+)/);
  const sidecar = async (appId: string, extra: string[], ready: RegExp) =>
    startChild(process.execPath, [cli, "sidecar", "--app-id", appId, "--ca", ca.server.address, "--bundle", ca.bundleFile, "--token", await ca.token("default", appId), "--log-level", "warn", ...extra], ready);
  const inbound = await sidecar("rss-in", ["--app", `127.0.0.1:${app.match![1]}`, "--inbound", "127.0.0.1:0"], /inbound=127\.0\.0\.1:(\d+)/);
  const outbound = await sidecar("rss-out", ["--outbound", "127.0.0.1:0"], /outbound=127\.0\.0\.1:(\d+)/);
  const caller = await ca.clientFiles("default", "rss-caller");
  const tlsOptions = { cert: readFileSync(caller.cert), key: readFileSync(caller.key), ca: ca.bundlePem, ALPNProtocols: ["http/1.1"], checkServerIdentity: () => undefined };
  const inboundPort = Number(inbound.match![1]);
  const outboundPort = Number(outbound.match![1]);
  console.log(`node ${process.version}, ${new Date().toISOString()}, ${count} connections per listener, ${cli}`);
  await measure("inbound mTLS (HTTP/1.1)", inbound.child.pid!, async () => {
    const socket = tlsConnect({ host: "127.0.0.1", port: inboundPort, ...tlsOptions });
    await new Promise<void>((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
    await oneRequest(socket, "GET / HTTP/1.1\r\nHost: rss-in\r\n\r\n");
    return socket;
  }, 16);
  await measure("outbound plaintext (HTTP/1.1)", outbound.child.pid!, async () => {
    const socket = netConnect({ host: "127.0.0.1", port: outboundPort });
    await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
    await oneRequest(socket, "GET / HTTP/1.1\r\nHost: nowhere\r\ndapr-app-id: nowhere\r\n\r\n");
    return socket;
  }, 64);
} finally {
  await ca.close();
  process.exit(0);
}
