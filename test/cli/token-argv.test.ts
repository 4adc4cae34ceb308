import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startCli } from "../helpers/cli.ts";
import { startMeshCa, type MeshCa } from "../proxy/fixtures.ts";

/**
 * Red team: `--token TOKEN` on `meshward identity`, `meshward sidecar` and `meshward cert issue`
 * puts a join token in the process list, where every local user reads it (ps,
 * /proc/PID/cmdline) and can spend a single-use token first, getting that workload's
 * certificate. The flag stays (SPIRE's agent takes -joinToken too: spiffe/spire
 * cmd/spire-agent/cli/run/run.go, and scripts use it) but each command warns once, naming why and
 * the ways out, and never prints the token. `meshward status --status-token` is refused outright
 * (test/cli/status-token.test.ts): a status token is never single-use and has no compatibility
 * to keep. Real processes against a real CA (in-process, as the proxy tests run it).
 */
type Source = "argv" | "file" | "env" | "config";

let ca: MeshCa;
let n = 0;

beforeAll(async () => {
  ca = await startMeshCa();
}, 60_000);
afterAll(async () => {
  await ca?.close();
});

/** The token for one run, given the way `source` says: the arguments and environment to add. */
async function tokenGiven(source: Source, appId: string): Promise<{ token: string; args: string[]; env: NodeJS.ProcessEnv }> {
  const token = await ca.token("default", appId);
  const file = join(ca.dir, `${appId}-${++n}`);
  const env: NodeJS.ProcessEnv = { MESHWARD_TOKEN: undefined };
  switch (source) {
    case "argv":
      return { token, args: ["--token", token], env };
    case "file":
      writeFileSync(file, `${token}\n`, { mode: 0o600 });
      return { token, args: ["--token-file", file], env };
    case "env":
      return { token, args: [], env: { MESHWARD_TOKEN: token } };
    case "config":
      writeFileSync(file, `token: ${token}\n`, { mode: 0o600 });
      return { token, args: ["--config", file], env };
  }
}

const WHY = /--token puts the token in the process list, where every local user can read it \(ps, \/proc\/PID\/cmdline\).*--token-file FILE or MESHWARD_TOKEN/;

/** The structured warnings a daemon logged (JSON lines on stderr). */
const warnings = (stderr: string) =>
  stderr
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as { level: string; event?: string; msg: string })
    .filter((line) => line.event === "token-on-command-line");

const daemons = {
  identity: (appId: string) => ["identity", "--ca", ca.server.address, "--bundle", ca.bundleFile, "--out", join(ca.dir, `out-${appId}`)],
  sidecar: (appId: string) => ["sidecar", "--app-id", appId, "--ca", ca.server.address, "--bundle", ca.bundleFile, "--outbound", "127.0.0.1:0"],
} as const;

describe("a token on the command line: accepted, with a warning that never shows it", () => {
  for (const [command, args] of Object.entries(daemons)) {
    const sources: Source[] = command === "sidecar" ? ["argv", "file", "env", "config"] : ["argv", "file", "env"];
    for (const source of sources) {
      it(`meshward ${command} with the token from ${source}: ${source === "argv" ? "one warn-level log line at start" : "no warning"}`, async () => {
        const appId = `${command}-${source}`;
        const given = await tokenGiven(source, appId);
        const run = await startCli([...args(appId), ...given.args], /ready: /, { env: given.env, timeoutMs: 30_000 });
        await run.stop();
        const output = run.stdout() + run.stderr();
        // It started with the token, whichever way it came.
        expect(run.stdout()).toContain(`spiffe://mesh.test/ns/default/${appId}`);
        expect(output).not.toContain(given.token);
        const logged = warnings(run.stderr());
        if (source === "argv") {
          expect(logged).toHaveLength(1);
          expect(logged[0]!.level).toBe("warn");
          expect(logged[0]!.msg).toMatch(WHY);
        } else {
          expect(logged).toEqual([]);
          expect(output).not.toMatch(/process list/);
        }
      }, 60_000);
    }
  }

  for (const source of ["argv", "file", "env"] as const) {
    it(`meshward cert issue with the token from ${source}: ${source === "argv" ? "a warning on stderr" : "no warning"}`, async () => {
      const appId = `cert-${source}`;
      const given = await tokenGiven(source, appId);
      const r = await runCli(["cert", "issue", "--ca", ca.server.address, "--bundle", ca.bundleFile, "--out", join(ca.dir, `out-${appId}`), ...given.args], { env: given.env });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(`spiffe://mesh.test/ns/default/${appId}`);
      expect(r.stdout + r.stderr).not.toContain(given.token);
      if (source === "argv") {
        expect(r.stderr.split("\n").filter((line) => line.startsWith("meshward: warning: "))).toHaveLength(1);
        expect(r.stderr).toMatch(new RegExp(`^meshward: warning: ${WHY.source}`, "m"));
      } else {
        expect(r.stderr).not.toMatch(/process list/);
      }
    });
  }
});
