/**
 * What the outbound's DNS rebinding guard (src/proxy/outbound-host.ts) costs per request, in one
 * process: the check as the sidecar runs it (the last accepted Host remembered) against the full
 * parse it does for a Host it has not accepted before (the baseline, the cache emptied before
 * every call). Hosts as callers send them: an IP literal, localhost, the app id itself.
 * Figures, not assertions; a sidecar request costs ~28 µs of CPU (README), so compare with that.
 *   node --import tsx bench/proxy/host-check.ts [--rounds N] [--calls N]
 */
import { checkOutboundHost, compileOutboundHosts } from "../../src/proxy/outbound-host.ts";

const flag = (name: string, fallback: number): number => {
  const at = process.argv.indexOf(name);
  return at === -1 ? fallback : Number(process.argv[at + 1] ?? fallback);
};
const ROUNDS = flag("--rounds", 7);
const CALLS = flag("--calls", 1_000_000);
const HOSTS = ["127.0.0.1:3500", "localhost:3500", "inventory"];

function nsPerCall(host: string, cached: boolean): number {
  const rule = compileOutboundHosts(["gw.example"]);
  let accepted = 0;
  const started = process.hrtime.bigint();
  for (let i = 0; i < CALLS; i++) {
    if (!cached) rule.lastAccepted = undefined;
    if (checkOutboundHost(host, "inventory", rule).ok) accepted++;
  }
  const ns = Number(process.hrtime.bigint() - started) / CALLS;
  if (accepted !== CALLS) throw new Error(`${host} was refused`);
  return ns;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
console.log(`outbound Host check, ns per call, ${CALLS} calls × ${ROUNDS} rounds, Node ${process.version}`);
for (const host of HOSTS) {
  nsPerCall(host, true);
  nsPerCall(host, false); // warm-up
  const cached: number[] = [];
  const parsed: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate the order so that the machine's drift hits both alike.
    if (round % 2 === 0) {
      cached.push(nsPerCall(host, true));
      parsed.push(nsPerCall(host, false));
    } else {
      parsed.push(nsPerCall(host, false));
      cached.push(nsPerCall(host, true));
    }
  }
  console.log(`  ${host.padEnd(16)} remembered ${median(cached).toFixed(1)} ns (${Math.min(...cached).toFixed(1)}–${Math.max(...cached).toFixed(1)}) · parsed every time ${median(parsed).toFixed(1)} ns (${Math.min(...parsed).toFixed(1)}–${Math.max(...parsed).toFixed(1)})`);
}
