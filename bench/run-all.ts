/**
 * `npm run bench`: every benchmark, one after another, each in its own process so that one
 * benchmark's warm caches and servers never flatter the next. Each prints its own figures
 * beside the baseline it measures in the same run.
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const benches = ["ca/bench.ts", "handshake/bench.ts", "https/bench.ts", "proxy/bench.ts", "audit/bench.ts"];
let failed = 0;
for (const bench of benches) {
  const file = fileURLToPath(new URL(`./${bench}`, import.meta.url));
  console.log(`\n=== bench/${bench}`);
  const result = spawnSync(process.execPath, ["--import", "tsx", file], { stdio: "inherit" });
  if (result.status !== 0) {
    failed += 1;
    console.log(`bench/${bench} exited with ${result.status ?? result.signal}`);
  }
}
process.exitCode = failed === 0 ? 0 : 1;
