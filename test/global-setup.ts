import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundleCli } from "../scripts/bundle.ts";
import { SOURCE_WORKERS_DIR_ENV } from "../src/util/worker-thread.ts";

/**
 * The CLI that tests start as processes (test/helpers/cli.ts) is bundled once per run from the
 * current sources, as `npm run build` bundles what users run. Started from the TypeScript
 * sources through tsx, every process spent ~1.1 s of CPU loading them (0.27 s from the bundle),
 * and the suite starts a few hundred: on two shared cores that was most of its time. Built
 * fresh here, the bundle is never a stale dist/ (bin/meshward.js with MESHWARD_FROM_SOURCE=1,
 * which the tests that run bin/meshward.js itself still use). The worker threads that tests
 * start in-process (signing, SQLite writer) run from it too: through tsx each cost ~0.3 s more
 * CPU to start, and the suite starts well over a hundred. MESHWARD_TEST_FROM_SOURCE=1 runs the
 * sources for both instead.
 */
export default async function setup(): Promise<() => void> {
  if (process.env.MESHWARD_TEST_FROM_SOURCE === "1") return () => undefined;
  const cache = fileURLToPath(new URL("../node_modules/.cache/", import.meta.url));
  mkdirSync(cache, { recursive: true });
  const dir = mkdtempSync(join(cache, "meshward-test-cli-"));
  process.env.MESHWARD_TEST_CLI = await bundleCli(join(dir, "bundle"));
  // Worker threads that in-process tests start run from the same bundle (src/util/worker-thread.ts).
  process.env[SOURCE_WORKERS_DIR_ENV] = dirname(process.env.MESHWARD_TEST_CLI);
  return () => rmSync(dir, { recursive: true, force: true });
}
