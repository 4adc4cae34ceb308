#!/usr/bin/env node
// Runs the bundled CLI when the package has been built (npm run build: dist/bundle, the
// smallest footprint), else the tsc output, else the TypeScript sources through tsx, so a
// fresh clone works after `npm ci` alone. MESHWARD_FROM_SOURCE=1 always runs the sources (the
// test suite sets it, so a stale build never stands in for the code under test). In a checkout
// (src/ beside dist/; the published package has no src/) a build older than a source file is
// not run: after a `git pull` or an edit without `npm run build` it would be yesterday's code.
import { existsSync, readdirSync, statSync } from "node:fs";

const fromSource = process.env.MESHWARD_FROM_SOURCE === "1";
const bundled = new URL("../dist/bundle/main.js", import.meta.url);
const compiled = new URL("../dist/cli/main.js", import.meta.url);
const sources = new URL("../src/", import.meta.url);

/** Whether src/ holds a file changed after `build` was written (false outside a checkout). */
function olderThanSources(build) {
  if (!existsSync(sources)) return false;
  const builtAt = statSync(build).mtimeMs;
  for (const entry of readdirSync(sources, { recursive: true, withFileTypes: true })) {
    if (entry.isFile() && statSync(`${entry.parentPath ?? entry.path}/${entry.name}`).mtimeMs > builtAt) return true;
  }
  return false;
}

const build = fromSource ? undefined : [bundled, compiled].find((url) => existsSync(url));
if (build !== undefined && !olderThanSources(build)) {
  await import(build.href);
} else {
  if (build !== undefined) {
    process.stderr.write("meshward: dist/ is older than src/: running the sources (a slower start); 'npm run build' brings dist/ up to date\n");
  }
  const { register } = await import("tsx/esm/api");
  register();
  await import(new URL("../src/cli/main.ts", import.meta.url).href);
}
