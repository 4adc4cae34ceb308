// Loaded with NODE_OPTIONS=--import into a CLI process (review atrest): the n-th renameSync onto a
// file named MESHWARD_FAULT_RENAME_TO (basename, ",n" for the n-th; the first by default) fails.
// MESHWARD_FAULT_MODE=kill SIGKILLs the process just before it (a crash, an OOM kill, a power
// loss between two file changes); =enospc throws ENOSPC instead (a full disk at that write).
import { syncBuiltinESMExports } from "node:module";
import nodeFs from "node:fs";
import { basename } from "node:path";

const spec = process.env.MESHWARD_FAULT_RENAME_TO;
if (spec) {
  const [name, nth = "1"] = spec.split(",");
  let seen = 0;
  const real = nodeFs.renameSync;
  nodeFs.renameSync = function (from, to) {
    if (basename(String(to)) === name && ++seen === Number(nth)) {
      process.stderr.write(`[fault] ${process.env.MESHWARD_FAULT_MODE} at the rename onto ${name}\n`);
      if (process.env.MESHWARD_FAULT_MODE === "kill") process.kill(process.pid, "SIGKILL");
      const error = new Error("ENOSPC: no space left on device, write");
      error.code = "ENOSPC";
      throw error;
    }
    return real.apply(this, arguments);
  };
  syncBuiltinESMExports();
}
