// Loaded with NODE_OPTIONS=--import into a CLI process, to order two processes' steps without
// timing (review files LOW-4): at the first rmSync of a file named MESHWARD_GATE_RM, or the first
// renameSync onto a file named MESHWARD_GATE_RENAME (basenames), the process creates
// MESHWARD_GATE_DIR/<MESHWARD_GATE_TAG>.paused and waits until the test creates
// <MESHWARD_GATE_TAG>.go there (it gives up after 60 s). With MESHWARD_GATE_FAIL=enospc the gated
// rename then fails with ENOSPC (a full disk at that write).
import { syncBuiltinESMExports } from "node:module";
import nodeFs from "node:fs";
import { basename, join } from "node:path";

const dir = process.env.MESHWARD_GATE_DIR;
const tag = process.env.MESHWARD_GATE_TAG ?? "gate";
function gate(what) {
  const realWrite = nodeFs.writeFileSync;
  realWrite(join(dir, `${tag}.paused`), what);
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (let waited = 0; waited < 60_000 && !nodeFs.existsSync(join(dir, `${tag}.go`)); waited += 20) Atomics.wait(sleeper, 0, 0, 20);
}
if (dir) {
  const rmName = process.env.MESHWARD_GATE_RM;
  if (rmName) {
    const realRm = nodeFs.rmSync;
    let done = false;
    nodeFs.rmSync = function (path, ...rest) {
      if (!done && basename(String(path)) === rmName) {
        done = true;
        gate(`rm ${path}`);
      }
      return realRm.call(this, path, ...rest);
    };
  }
  const renameName = process.env.MESHWARD_GATE_RENAME;
  if (renameName) {
    const realRename = nodeFs.renameSync;
    let done = false;
    nodeFs.renameSync = function (from, to) {
      if (!done && basename(String(to)) === renameName) {
        done = true;
        gate(`rename onto ${to}`);
        if (process.env.MESHWARD_GATE_FAIL === "enospc") {
          const error = new Error("ENOSPC: no space left on device, write");
          error.code = "ENOSPC";
          throw error;
        }
      }
      return realRename.apply(this, arguments);
    };
  }
  syncBuiltinESMExports();
}
