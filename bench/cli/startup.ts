// CPU (user+sys) of short CLI commands from the bundle users run, N runs each: what every start of
// `meshward ca status`, `token create`, … costs (the test suite starts the CLI ~500 times). Each
// command's process is timed by GNU time (/usr/bin/time, 10 ms resolution); printed: mean (min–max).
// A CA on loopback serves `cert issue` and `status --ca`. Linux only.
//   node --import tsx bench/cli/startup.ts [--runs 8]
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundleCli } from "../../scripts/bundle.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const TIME = "/usr/bin/time";
const runsFlag = process.argv.indexOf("--runs");
const RUNS = runsFlag === -1 ? 8 : Number(process.argv[runsFlag + 1]);

if (!existsSync(TIME)) throw new Error(`${TIME} (GNU time) is needed: apt-get install time`);
// Under the repository, so that the bundle finds better-sqlite3 in node_modules.
mkdirSync(join(ROOT, "node_modules/.cache"), { recursive: true });
const work = mkdtempSync(join(ROOT, "node_modules/.cache/meshward-bench-startup-"));
const main = await bundleCli(join(work, "bundle"));
const ca = join(work, "ca");
const cli = (...args: string[]) => spawnSync(process.execPath, [main, ...args], { encoding: "utf8" });

/** CPU seconds (user+sys) of one run of the CLI with `args`. */
function cpu(args: readonly string[]): number {
  const out = join(work, "time.out");
  const run = spawnSync(TIME, ["-o", out, "-f", "%U %S", process.execPath, main, ...args], { stdio: "ignore" });
  if (run.status !== 0 && run.status !== 1) throw new Error(`meshward ${args.join(" ")} exited ${run.status}`);
  const [user, sys] = readFileSync(out, "utf8").trim().split("\n").pop()!.split(" ").map(Number);
  return user! + sys!;
}

let serve: ReturnType<typeof spawn> | undefined;
try {
  if (cli("ca", "init", "--trust-domain", "bench.example", "--dir", ca).status !== 0) throw new Error("ca init failed");
  serve = spawn(process.execPath, [main, "ca", "serve", "--dir", ca, "--listen", "127.0.0.1:0", "--log-level", "error"], { stdio: ["ignore", "pipe", "inherit"] });
  const address = await new Promise<string>((resolve, reject) => {
    let seen = "";
    serve!.stdout!.on("data", (chunk: Buffer) => {
      seen += chunk.toString();
      const match = /listening on (\S+) as/.exec(seen);
      if (match) resolve(match[1]!);
    });
    serve!.once("exit", (code) => reject(new Error(`ca serve exited ${code}`)));
  });
  const tokens = Array.from({ length: RUNS }, (_, i) => {
    const file = join(work, `token-${i}`);
    writeFileSync(file, cli("token", "create", "--dir", ca, "--namespace", "bench", "--app-id", "app").stdout.trim().split("\n").pop()!, { mode: 0o600 });
    chmodSync(file, 0o600);
    return file;
  });
  let init = 0;
  let issue = 0;
  const commands: ReadonlyArray<readonly [string, () => string[]]> = [
    ["--version", () => ["--version"]],
    ["sidecar --help", () => ["sidecar", "--help"]],
    ["ca init", () => ["ca", "init", "--trust-domain", "bench.example", "--dir", join(work, `init-${init++}`)]],
    ["ca status", () => ["ca", "status", "--dir", ca]],
    ["ca rotate-issuer --now", () => ["ca", "rotate-issuer", "--now", "--dir", ca]],
    ["token create", () => ["token", "create", "--dir", ca, "--namespace", "bench", "--app-id", "app"]],
    ["cert list", () => ["cert", "list", "--dir", ca]],
    ["cert inspect", () => ["cert", "inspect", join(ca, "root.pem")]],
    ["cert issue", () => ["cert", "issue", "--ca", address, "--bundle", join(ca, "bundle.pem"), "--token-file", tokens[issue]!, "--out", join(work, `out-${issue++}`)]],
    ["status --ca", () => ["status", "--ca", address, "--bundle", join(ca, "bundle.pem")]],
  ];
  process.stdout.write(`CPU user+sys per start, ${RUNS} runs (node ${process.version}, load average ${(await import("node:os")).loadavg()[0]!.toFixed(1)})\n`);
  for (const [name, args] of commands) {
    const samples = Array.from({ length: RUNS }, () => cpu(args()));
    const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
    process.stdout.write(`${name.padEnd(24)} ${mean.toFixed(3)} s (${Math.min(...samples).toFixed(2)}–${Math.max(...samples).toFixed(2)})\n`);
  }
} finally {
  if (serve !== undefined && serve.exitCode === null) {
    const exited = new Promise((resolve) => serve!.once("exit", resolve));
    serve.kill("SIGTERM");
    await exited;
  }
  rmSync(work, { recursive: true, force: true });
}
