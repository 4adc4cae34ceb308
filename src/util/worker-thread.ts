import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { Worker, type WorkerOptions } from "node:worker_threads";

/** The worker threads meshward starts; each is an entry point of the bundle (scripts/bundle.ts). */
export type MeshwardWorkerName = "signing-worker" | "sqlite-writer-worker";

/**
 * Set to a folder holding the bundled workers, it is used instead when meshward runs from its
 * TypeScript sources. Only the test run sets it, to the bundle it builds from the same sources
 * (test/global-setup.ts): a worker started through tsx costs ~0.3 s of CPU more, and the suite
 * starts well over a hundred. A build ignores it.
 */
export const SOURCE_WORKERS_DIR_ENV = "MESHWARD_SOURCE_WORKERS_DIR";

/**
 * Starts worker `name`, which lives next to `callerUrl` (the module that starts it). The build
 * runs `<name>.js`; from the sources the worker registers tsx itself, since a worker does not
 * inherit its parent's tsx hooks on Node 20.
 */
export function startMeshwardWorker(callerUrl: string, name: MeshwardWorkerName, options: WorkerOptions = {}): Worker {
  if (!callerUrl.endsWith(".ts")) return new Worker(new URL(`./${name}.js`, callerUrl), options);
  const bundled = process.env[SOURCE_WORKERS_DIR_ENV];
  if (bundled !== undefined && bundled !== "") return new Worker(pathToFileURL(join(bundled, `${name}.js`)), options);
  const tsx = import.meta.resolve("tsx/esm/api");
  const entry = new URL(`./${name}.ts`, callerUrl).href;
  return new Worker(`import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); });`, { ...options, eval: true });
}
