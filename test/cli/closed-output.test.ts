import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MESHWARD_BIN, runCli } from "../helpers/cli.ts";

/**
 * New-user review M5: `meshward audit deploy/ --format sarif | head -1` and `meshward cert list
 * | head -1` printed Node's "Unhandled 'error' event … Error: write EPIPE" stack trace when head
 * went away before meshward had written everything. A CLI stops writing and ends quietly then,
 * as cat and grep do. Each case pipes into a real `head -c1` from a shell; `printf x` feeds head
 * its byte first, so head has exited, and the pipe has no reader, by the time meshward writes.
 */
function pipedIntoHead(args: readonly string[]): Promise<{ status: string | undefined; stderr: string }> {
  const script = '{ printf x; "$0" "$@"; echo "meshward-status=$?" >&2; } | head -c1 >/dev/null';
  return new Promise((resolve, reject) => {
    const child = spawn("sh", ["-c", script, process.execPath, MESHWARD_BIN, ...args], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    child.on("error", reject);
    child.on("close", () => {
      clearTimeout(timer);
      resolve({ status: /meshward-status=(\d+)/.exec(stderr)?.[1], stderr });
    });
  });
}

function expectQuiet(r: { status: string | undefined; stderr: string }): void {
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(r.stderr).not.toMatch(/Error|EPIPE|unexpected/);
  expect(r.status, r.stderr).toBe("0");
}

describe("output piped into a reader that goes away (head)", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-closed-output-"));
  const caDir = join(work, "ca");

  beforeAll(async () => {
    const init = await runCli(["ca", "init", "--trust-domain", "closed-output.test", "--dir", caDir]);
    expect(init.code, init.stderr).toBe(0);
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("audit deploy/ --format sarif | head -c1 ends quietly", async () => {
    expectQuiet(await pipedIntoHead(["audit", "deploy/", "--format", "sarif"]));
  });

  it("audit rules --format markdown | head -c1 ends quietly", async () => {
    expectQuiet(await pipedIntoHead(["audit", "rules", "--format", "markdown"]));
  });

  it("cert list | head -c1 ends quietly", async () => {
    expectQuiet(await pipedIntoHead(["cert", "list", "--dir", caDir]));
  });

  it("ca status | head -c1 ends quietly", async () => {
    expectQuiet(await pipedIntoHead(["ca", "status", "--dir", caDir]));
  });
});
