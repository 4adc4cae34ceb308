// Bundles the meshward CLI (and the two worker threads it starts) into one folder of ES
// modules: node_modules dependencies included, minified, loaded lazily per command through
// code splitting. A running sidecar or CA then holds ~1 MB of JavaScript source instead of
// ~2 MB spread over ~350 module files (zod's locales, unused exports), which is most of what
// separates its idle RSS from bare Node's. bin/meshward.js runs the bundle when it exists.
//   node --import tsx scripts/bundle.ts [outdir]        (default: dist/bundle)
import { cpSync, rmSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build } from "esbuild";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

// CommonJS dependencies inside an ES module bundle still call require() and read __dirname.
const BANNER = [
  'import { createRequire as __meshwardCreateRequire } from "node:module";',
  'import { fileURLToPath as __meshwardFileURLToPath } from "node:url";',
  'import { dirname as __meshwardDirname } from "node:path";',
  "const require = __meshwardCreateRequire(import.meta.url);",
  "const __filename = __meshwardFileURLToPath(import.meta.url);",
  "const __dirname = __meshwardDirname(__filename);",
].join("\n");

/** Writes the bundle to `outdir` (emptied first); returns the path of its main.js. */
export async function bundleCli(outdir: string = resolve(ROOT, "dist/bundle")): Promise<string> {
  rmSync(outdir, { recursive: true, force: true });
  await build({
    absWorkingDir: ROOT,
    // Workers are entry points of their own, found next to the code that starts them.
    entryPoints: { main: "src/cli/main.ts", "signing-worker": "src/ca/signing-worker.ts", "sqlite-writer-worker": "src/store/sqlite-writer-worker.ts" },
    outdir,
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    minify: true,
    sourcemap: "linked",
    // A native addon and an optional native driver pg tries to load; both stay in node_modules.
    external: ["better-sqlite3", "pg-native"],
    banner: { js: BANNER },
    legalComments: "none",
    logLevel: "warning",
  });
  // The status page reads its assets from ./static next to the module that serves it.
  cpSync(resolve(ROOT, "src/dashboard/static"), resolve(outdir, "static"), { recursive: true });
  return resolve(outdir, "main.js");
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const entry = await bundleCli(process.argv[2] ? resolve(process.argv[2]) : undefined);
  process.stdout.write(`bundled ${entry}\n`);
}
