import { defineConfig } from "vitest/config";

// Two cores are shared by every test. Three test files run at once, each in its own process so
// that servers and child processes of one file cannot leak into another: most files spend their
// time waiting (peers starting, timers, the differential suite's quiet windows), and with three
// the whole run kept ~1.2 cores busy and took 433 s against 532 s with two (2026-12-03, both
// runs beside other work on the machine, so the gain is approximate).
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    pool: "forks",
    maxWorkers: 3,
    fileParallelism: true,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ["default"],
    // bin/meshward.js runs the sources, never a dist/ left by an earlier `npm run build`.
    env: { MESHWARD_FROM_SOURCE: "1" },
  },
});
