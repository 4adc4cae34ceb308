import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

// The memory-bound tests read what a sidecar keeps alive, so they collect garbage first.
setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Two full collections: the second frees what finalizers of the first let go. */
export function collectGarbage(): void {
  gc();
  gc();
}

/** process.memoryUsage() once callbacks already queued have run and garbage is collected. */
export async function settledMemory(): Promise<NodeJS.MemoryUsage> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
  collectGarbage();
  return process.memoryUsage();
}
