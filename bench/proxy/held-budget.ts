/**
 * Instructions the inbound's held-bytes accounting (limits.maxHeldRequestBytes, HeldBudget) adds to
 * each HTTP/2 stream, counted with callgrind as the difference between N iterations and none of a
 * loop that makes what a stream has (an EventEmitter with an error listener, its 'close' emitted):
 * `none` only that; `inbound` also what inbound.ts does per stream (an account of the caller's
 * address, given back on 'close', the header block taken); `once` the same with the listener added
 * by once(), as inbound.ts did until 2026-12-07 (then also with a Map entry inserted and deleted per
 * stream: +2,751 instructions per stream on Node 20.20.2 with the loop bundled by esbuild, against
 * +1,225 since; through tsx, as this file runs, `inbound` reads +384 and `once` +1,376). The sidecar pair itself (instructions.ts --mode h2) cannot
 * resolve a ~1 % change on a loaded host; this isolates the code.
 *   node --import tsx bench/proxy/held-budget.ts [--n 200000]
 */
import { execFileSync } from "node:child_process";
import { EventEmitter } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { HeldBudget } from "../../src/proxy/held-budget.ts";

const N = process.argv.includes("--n") ? Number(process.argv[process.argv.indexOf("--n") + 1]) : 200_000;

function loop(variant: string, n: number): void {
  const budget = new HeldBudget(16 << 20, (16 << 20) / 6);
  let refused = 0;
  for (let i = 0; i < n; i++) {
    const stream = new EventEmitter();
    stream.on("error", () => undefined);
    if (variant !== "none") {
      const account = budget.account("127.0.0.1");
      if (variant === "once") stream.once("close", () => account.close());
      else stream.on("close", () => account.close());
      if (!account.take(180)) refused++;
    }
    stream.emit("close");
  }
  if (budget.used !== 0 || refused !== 0) throw new Error("the loop left bytes held or was refused");
}

if (process.argv[2] === "--child") loop(process.argv[3]!, Number(process.argv[4]));
else {
  const dir = mkdtempSync(join(tmpdir(), "meshward-held-budget-"));
  const self = fileURLToPath(import.meta.url);
  const count = (variant: string, n: number): number => {
    const out = join(dir, `${variant}.${n}`);
    execFileSync("valgrind", ["--tool=callgrind", `--callgrind-out-file=${out}`, process.execPath, "--single-threaded", "--import", "tsx", self, "--child", variant, String(n)], { stdio: "ignore" });
    return Number(/^(?:summary|totals): (\d+)/m.exec(readFileSync(out, "utf8"))![1]);
  };
  try {
    const per: Record<string, number> = {};
    for (const variant of ["none", "inbound", "once"]) {
      per[variant] = (count(variant, N) - count(variant, 0)) / N;
      console.log(`${variant.padEnd(8)} ${Math.round(per[variant]!).toLocaleString("en")} instructions per stream${variant === "none" ? "" : ` (+${Math.round(per[variant]! - per.none!).toLocaleString("en")} for the accounting)`}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
