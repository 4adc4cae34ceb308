// npm runs `prepare` after `npm ci` / `npm install` in a clone and when it installs meshward from
// a git URL (it then installs the dev dependencies first, runs this, and packs the result), so
// both yield a package whose `import … from "meshward"` finds dist/ (issue 15, item 3). It is the
// whole `npm run build` (tsc, assets, the CLI bundle): a few seconds. Without the dev dependencies
// (`npm ci --omit=dev`) there is nothing to build with: say so and leave the install working;
// bin/meshward.js then runs the sources through tsx.
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
try {
  require.resolve("typescript/package.json");
  require.resolve("esbuild/package.json");
} catch {
  process.stderr.write("meshward prepare: the dev dependencies (typescript, esbuild) are not installed, so dist/ was not built; run `npm install` then `npm run build` for the SDK\n");
  process.exit(0);
}
const npm = process.env.npm_execpath;
const result = npm !== undefined && npm.endsWith(".js")
  ? spawnSync(process.execPath, [npm, "run", "build"], { stdio: "inherit" })
  : spawnSync("npm", ["run", "build"], { stdio: "inherit", shell: process.platform === "win32" });
process.exit(result.status ?? 1);
