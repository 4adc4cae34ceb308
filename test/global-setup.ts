import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundleCli } from "../scripts/bundle.ts";

/**
 * The CLI that tests start as processes (test/helpers/cli.ts) is bundled once per run from the
 * current sources, as `npm run build` bundles what users run. Started from the TypeScript
 * sources through tsx, every process spent ~1.1 s of CPU loading them (0.27 s from the bundle),
 * and the suite starts a few hundred: on two shared cores that was most of its time. Built
 * fresh here, the bundle is never a stale dist/ (bin/meshward.js with MESHWARD_FROM_SOURCE=1,
 * which the tests that run bin/meshward.js itself still use). MESHWARD_TEST_FROM_SOURCE=1 runs
 * the sources instead.
 */
export default async function setup(): Promise<() => void> {
  if (process.env.MESHWARD_TEST_FROM_SOURCE === "1") return () => undefined;
  const cache = fileURLToPath(new URL("../node_modules/.cache/", import.meta.url));
  mkdirSync(cache, { recursive: true });
  const dir = mkdtempSync(join(cache, "meshward-test-cli-"));
  process.env.MESHWARD_TEST_CLI = await bundleCli(join(dir, "bundle"));
  return () => rmSync(dir, { recursive: true, force: true });
}
