import { existsSync } from "node:fs";
import { configDefaults, defineConfig } from "vitest/config";
import LongFirstSequencer from "./test/sequencer.ts";
import { SHARED_WORKER_FILES } from "./test/shared-worker-files.ts";

for (const file of SHARED_WORKER_FILES) {
  if (!existsSync(new URL(file, import.meta.url))) throw new Error(`test/shared-worker-files.ts lists ${file}, which does not exist`);
}

// What both projects below share. globalSetup stays with the root config, which runs it once.
const common = {
  pool: "forks",
  testTimeout: 30_000,
  hookTimeout: 60_000,
  // bin/meshward.js runs the sources, never a dist/ left by an earlier `npm run build`.
  env: { MESHWARD_FROM_SOURCE: "1" },
} as const;

// Two cores are shared by every test. Four test files run at once, each in its own process so
// that servers and child processes of one file cannot leak into another: most files spend their
// time waiting (peers starting, timers, the differential suite's quiet windows). Measured on
// 2026-12-03 with nothing else running: 456 s of tests with three at once (~1.4 cores busy), 387 s
// with four (~1.7 cores busy), every test passing in both. Short files that start nothing lasting
// share processes instead (test/shared-worker-files.ts).
export default defineConfig({
  test: {
    // Bundles the CLI and the worker threads once from the current sources (test/global-setup.ts).
    globalSetup: ["test/global-setup.ts"],
    maxWorkers: 4,
    fileParallelism: true,
    sequence: { sequencer: LongFirstSequencer },
    reporters: ["default"],
    projects: [
      { test: { ...common, name: "isolated", include: ["test/**/*.test.ts"], exclude: [...configDefaults.exclude, ...SHARED_WORKER_FILES] } },
      { test: { ...common, name: "shared", include: [...SHARED_WORKER_FILES], isolate: false } },
    ],
  },
});
