import { spawn } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listenWorkloadApi, type WorkloadApiListener } from "../../src/identity/workload-api/index.ts";
import { runCli } from "../helpers/cli.ts";
import { closedPort } from "../helpers/closed-port.ts";

// Who may connect to the Workload API socket is decided by its mode and group (the socket
// carries the identity's private key): proven here with a process of another uid, not only by
// reading the mode back. The tests' container runs as root, which may spawn children as any
// uid; nobody (65534, group nogroup 65534) plays the other workload. Not root: the first test
// fails, saying why (a skip would hide that the access control went untested).
const NOBODY = 65534;
const NOGROUP = 65534;
const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** Runs `node -e script` as uid/gid and returns what it printed (stdout, trimmed) and stderr. */
function runAs(uid: number, gid: number, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, args, { uid, gid, cwd: ROOT, env: { ...process.env, HOME: "/tmp", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.once("error", reject);
    child.once("close", (code) => resolvePromise({ code, stdout: stdout.trim(), stderr }));
  });
}

/** "connected", or the errno code connecting to `socket` failed with, as seen by uid/gid. */
async function connectAs(uid: number, gid: number, socket: string): Promise<string> {
  const script = `const s = require("node:net").connect(${JSON.stringify(socket)}); s.on("connect", () => { console.log("connected"); s.destroy(); }); s.on("error", (e) => console.log(e.code));`;
  const result = await runAs(uid, gid, ["-e", script]);
  expect(result.stderr).toBe("");
  return result.stdout;
}

describe("the Workload API socket's mode and group decide which other uid may connect (real processes)", () => {
  let work: string;
  const listeners: WorkloadApiListener[] = [];

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), "meshward-socket-uid-"));
    // Traversable by nobody (mkdtemp makes it 0700); writable by root only.
    chmodSync(work, 0o755);
  });
  afterAll(async () => {
    for (const listener of listeners) await listener.close();
    rmSync(work, { recursive: true, force: true });
  });

  async function serve(name: string, options: { socketMode?: number; socketGroup?: number }): Promise<string> {
    const dir = join(work, name);
    mkdirSync(dir, { mode: 0o755 });
    const listener = await listenWorkloadApi({ socketPath: join(dir, "api.sock"), ...options });
    listeners.push(listener);
    return listener.socketPath;
  }

  it("runs as root, so that it can be another uid (a skip would leave the access control untested)", () => {
    expect(process.getuid?.(), "these tests spawn processes as uid 65534, which needs root: run them as root (the tests' container does)").toBe(0);
  });

  it("0600 (the default): another uid is refused with EACCES; the owner connects", async () => {
    const socket = await serve("default", {});
    expect(await connectAs(NOBODY, NOGROUP, socket)).toBe("EACCES");
    expect(await connectAs(0, 0, socket)).toBe("connected");
  });

  it("0660 with a group: a member of it connects, a uid outside it gets EACCES", async () => {
    const socket = await serve("group", { socketMode: 0o660, socketGroup: NOGROUP });
    expect(await connectAs(NOBODY, NOGROUP, socket)).toBe("connected");
    // The same uid in another group (its primary group here; no supplementary ones) is refused.
    expect(await connectAs(NOBODY, 12345, socket)).toBe("EACCES");
    const rootGroup = await serve("root-group", { socketMode: 0o660, socketGroup: 0 });
    expect(await connectAs(NOBODY, NOGROUP, rootGroup)).toBe("EACCES");
  });

  it("0666: every local uid connects", async () => {
    const socket = await serve("everyone", { socketMode: 0o666 });
    expect(await connectAs(NOBODY, NOGROUP, socket)).toBe("connected");
  });

  it("a --workload-api-socket-group the process may not give (not a member, not root) is a clear usage error naming the group, before the CA is asked", async () => {
    const dir = join(work, "not-member");
    mkdirSync(dir, { mode: 0o755 });
    chownSync(dir, NOBODY, NOGROUP);
    expect((await runCli(["ca", "init", "--trust-domain", "uid.test", "--dir", join(work, "ca")])).code).toBe(0);
    const bundle = join(work, "ca", "bundle.pem");
    chmodSync(join(work, "ca"), 0o755);
    const tokenFile = join(dir, "token");
    writeFileSync(tokenFile, "unused-token\n", { mode: 0o600 });
    chownSync(tokenFile, NOBODY, NOGROUP);
    const socket = join(dir, "api.sock");
    // bin/meshward.js from the sources: the tests' bundled CLI sits in a directory only root reads.
    const result = await runAs(
      NOBODY,
      NOGROUP,
      [join(ROOT, "bin/meshward.js"), "identity", "--ca", `127.0.0.1:${await closedPort()}`, "--bundle", bundle, "--token-file", tokenFile, "--workload-api-socket", socket, "--workload-api-socket-mode", "0660", "--workload-api-socket-group", "root"],
      { MESHWARD_FROM_SOURCE: "1" },
    );
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toMatch(
      /--workload-api-socket-group root: the socket cannot be given to group root \(gid 0\): this process \(uid 65534\) is not root and not a member of group root \(gid 0\) \(its groups: nogroup \(gid 65534\)\).*Run meshward as a member of that group \(or as root\).*\[E_USAGE\]/s,
    );
    expect(result.stderr).not.toMatch(/E_WORKLOAD_API_BIND|\n\s+at /);
    // Nothing was bound and the CA was never asked.
    expect(result.stdout).not.toMatch(/renewal|workload-api-listening/);
    expect(readdirSync(dir)).toEqual(["token"]);
  }, 60_000);

  it("the server itself (the SDK's listenWorkloadApi), asked for such a group, names it and why instead of a bare EPERM", async () => {
    const dir = join(work, "sdk-not-member");
    mkdirSync(dir, { mode: 0o755 });
    chownSync(dir, NOBODY, NOGROUP);
    const script = [
      `import { listenWorkloadApi } from ${JSON.stringify(join(ROOT, "src/identity/workload-api/index.ts"))};`,
      `try { await listenWorkloadApi({ socketPath: ${JSON.stringify(join(dir, "api.sock"))}, socketMode: 0o660, socketGroup: 0 }); console.log("bound"); }`,
      `catch (e) { console.log(e.code + " " + e.message); }`,
    ].join("\n");
    const file = join(work, "sdk-listen.mts");
    writeFileSync(file, script, { mode: 0o644 });
    const result = await runAs(NOBODY, NOGROUP, ["--import", "tsx", file]);
    expect(result.stdout).toMatch(
      /^E_WORKLOAD_API_SOCKET cannot give the Workload API socket \S+api\.sock to group root \(gid 0\) \(EPERM\): this process \(uid 65534\) is not root and not a member of group root \(gid 0\)/,
    );
    expect(readdirSync(dir)).toEqual([]);
  }, 60_000);
});
