import { defineConfig } from "vitest/config";
import LongFirstSequencer from "./test/sequencer.ts";

// Two cores are shared by every test. Four test files run at once, each in its own process so
// that servers and child processes of one file cannot leak into another: most files spend their
// time waiting (peers starting, timers, the differential suite's quiet windows). Measured on
// 2026-12-03 with nothing else running: 456 s of tests with three at once (~1.4 cores busy), 387 s
// with four (~1.7 cores busy), every test passing in both.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Bundles the CLI once from the current sources for the tests that start it (test/global-setup.ts).
    globalSetup: ["test/global-setup.ts"],
    pool: "forks",
    maxWorkers: 4,
    fileParallelism: true,
    sequence: { sequencer: LongFirstSequencer },
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ["default"],
    // bin/meshward.js runs the sources, never a dist/ left by an earlier `npm run build`.
    env: { MESHWARD_FROM_SOURCE: "1" },
  },
});
