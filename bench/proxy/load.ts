/**
 * Open-loop constant-rate HTTP load (wrk measures closed-loop peak; latency "at half the
 * peak rate" needs a fixed arrival rate, which wrk cannot do). Usage:
 *   node --import tsx bench/proxy/load.ts URL RATE SECONDS [header:value ...]
 * Prints one JSON line: { sent, ok, errors, p50Ms, p99Ms, achievedRate }.
 * The first 2 s run at the same rate unrecorded: a fresh process's JIT warm-up (and the
 * connections it opens) otherwise puts a queue of its own making into the p99.
 */
import { Agent, request } from "node:http";

const [url, rateText, secondsText, ...headerArgs] = process.argv.slice(2);
const target = new URL(url!);
const rate = Number(rateText);
const seconds = Number(secondsText);
const headers: Record<string, string> = {};
for (const h of headerArgs) headers[h.slice(0, h.indexOf(":"))] = h.slice(h.indexOf(":") + 1).trim();
const WARMUP_MS = 2000;
const agent = new Agent({ keepAlive: true, maxSockets: 64 });
const latencies: number[] = [];
let sent = 0;
let ok = 0;
let errors = 0;

let issued = 0;

function one(): void {
  issued++;
  const recorded = Date.now() - startedAt >= WARMUP_MS;
  if (recorded) sent++;
  const started = process.hrtime.bigint();
  const req = request({ host: target.hostname, port: target.port, path: target.pathname, headers, agent }, (res) => {
    res.resume();
    res.on("end", () => {
      if (!recorded) return;
      latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
      if (res.statusCode === 200) ok++;
      else errors++;
    });
  });
  req.on("error", () => {
    if (recorded) errors++;
  });
  req.end();
}

const startedAt = Date.now();
const timer = setInterval(() => {
  const due = Math.floor(((Date.now() - startedAt) / 1000) * rate);
  while (issued < due) one();
  if (Date.now() - startedAt >= WARMUP_MS + seconds * 1000) {
    clearInterval(timer);
    setTimeout(() => {
      latencies.sort((a, b) => a - b);
      const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
      process.stdout.write(`${JSON.stringify({ sent, ok, errors, p50Ms: at(0.5), p99Ms: at(0.99), achievedRate: ok / seconds })}\n`);
      agent.destroy();
    }, 1000);
  }
}, 1);
