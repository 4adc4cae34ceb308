import { defineConfig } from "vitest/config";

// Two cores are shared by every test: at most two test files run at once, each in its own
// process so that servers and child processes of one file cannot leak into another.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    pool: "forks",
    maxWorkers: 2,
    fileParallelism: true,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ["default"],
    // bin/meshward.js runs the sources, never a dist/ left by an earlier `npm run build`.
    env: { MESHWARD_FROM_SOURCE: "1" },
  },
});
