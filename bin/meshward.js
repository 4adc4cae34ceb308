#!/usr/bin/env node
// Runs the bundled CLI when the package has been built (npm run build: dist/bundle, the
// smallest footprint), else the tsc output, else the TypeScript sources through tsx, so a
// fresh clone works after `npm ci` alone.
import { existsSync } from "node:fs";

const bundled = new URL("../dist/bundle/main.js", import.meta.url);
const compiled = new URL("../dist/cli/main.js", import.meta.url);
if (existsSync(bundled)) {
  await import(bundled.href);
} else if (existsSync(compiled)) {
  await import(compiled.href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import(new URL("../src/cli/main.ts", import.meta.url).href);
}
