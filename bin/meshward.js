#!/usr/bin/env node
// Runs the bundled CLI when the package has been built (npm run build: dist/bundle, the
// smallest footprint), else the tsc output, else the TypeScript sources through tsx, so a
// fresh clone works after `npm ci` alone. MESHWARD_FROM_SOURCE=1 always runs the sources (the
// test suite sets it, so a stale build never stands in for the code under test).
import { existsSync } from "node:fs";

const fromSource = process.env.MESHWARD_FROM_SOURCE === "1";
const bundled = new URL("../dist/bundle/main.js", import.meta.url);
const compiled = new URL("../dist/cli/main.js", import.meta.url);
if (!fromSource && existsSync(bundled)) {
  await import(bundled.href);
} else if (!fromSource && existsSync(compiled)) {
  await import(compiled.href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import(new URL("../src/cli/main.ts", import.meta.url).href);
}
