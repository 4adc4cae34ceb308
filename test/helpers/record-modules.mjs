// Preloaded into a CLI process a test starts (`node --import` this file): when the process
// exits, the file named by MESHWARD_RECORD_MODULES holds every module it loaded, one URL or
// path a line: ES modules as the loader saw them (a load hook, on the loader's thread) and
// CommonJS ones from require.cache. Plain JavaScript, so that it runs before tsx and the bundle.
// In-thread hooks (module.registerHooks) where Node has them: Node 26 deprecates module.register()
// with a warning on stderr (DEP0205), which the CLI's output must not carry.
import { appendFileSync } from "node:fs";
import * as nodeModule from "node:module";
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
  if (typeof nodeModule.registerHooks === "function") {
    nodeModule.registerHooks({
      load(url, context, nextLoad) {
        appendFileSync(file, `${url}\n`);
        return nextLoad(url, context);
      },
    });
  } else {
    nodeModule.register(import.meta.url, { data: { out: file } });
  }
  const require = nodeModule.createRequire(import.meta.url);
  process.on("exit", () => appendFileSync(file, Object.keys(require.cache).map((path) => `${path}\n`).join("")));
}
