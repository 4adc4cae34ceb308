// Preloaded into a CLI process a test starts (`node --import` this file): when the process
// exits, the file named by MESHWARD_RECORD_MODULES holds every module it loaded, one URL or
// path a line: ES modules as the loader saw them (a load hook, on the loader's thread) and
// CommonJS ones from require.cache. Plain JavaScript, so that it runs before tsx and the bundle.
import { appendFileSync } from "node:fs";
import { createRequire, register } from "node:module";
import { isMainThread } from "node:worker_threads";

let out;

export function initialize(data) {
  out = data.out;
}

export async function load(url, context, nextLoad) {
  appendFileSync(out, `${url}\n`);
  return nextLoad(url, context);
}

if (isMainThread) {
  const file = process.env.MESHWARD_RECORD_MODULES;
  if (file === undefined) throw new Error("MESHWARD_RECORD_MODULES names no file to record the loaded modules in");
  register(import.meta.url, { data: { out: file } });
  const require = createRequire(import.meta.url);
  process.on("exit", () => appendFileSync(file, Object.keys(require.cache).map((path) => `${path}\n`).join("")));
}
