import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startCli } from "../helpers/cli.ts";
import type { LongRunning } from "../helpers/cli.ts";
import { startHttpApp } from "../helpers/app-servers.ts";
import type { HttpApp } from "../helpers/app-servers.ts";
import { startMeshCa } from "./fixtures.ts";
import type { MeshCa } from "./fixtures.ts";

// The sidecar as a user runs it, on a Node that lacks one HTTP/1 parser build or both:
// - no WebAssembly: `--jitless` (a real Node mode: the WebAssembly global is not there);
// - no `_http_common` HTTPParser (what DEP0199 may bring): a preload makes user-land
//   require("_http_common") return an empty module. Node's own http keeps its internal copy, so
//   nothing else changes. No Node release without it exists yet to run instead.
const READY = /meshward sidecar ready: id=(\S+) inbound=127\.0\.0\.1:(\d+)/;

describe("meshward sidecar without one or both HTTP/1 parser builds (real process)", () => {
  let ca: MeshCa;
  let app: HttpApp;
  let dir: string;
  let noHttpCommon: string;
  const running: LongRunning[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startHttpApp();
    dir = mkdtempSync(join(tmpdir(), "meshward-parser-"));
    noHttpCommon = join(dir, "no-http-common.cjs");
    writeFileSync(
      noHttpCommon,
      `const Module = require("node:module");\nconst load = Module._load;\nModule._load = function (request, ...rest) { return request === "_http_common" ? {} : load.call(this, request, ...rest); };\n`,
    );
  });
  afterAll(async () => {
    for (const r of running) await r.stop("SIGKILL");
    await app?.close();
    await ca?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const args = async (appId: string) => ["sidecar", "--app-id", appId, "--ca", ca.server.address, "--bundle", ca.bundleFile, "--token", await ca.token("default", appId), "--inbound", "127.0.0.1:0", "--app", `127.0.0.1:${app.port}`, "--mode", "permissive"];
  const fallbacks = (out: string) => out.split("\n").filter((line) => line.includes("http1-parser-fallback"));

  it("falls back to the WebAssembly build when Node's was asked for and is gone, says so once, and relays with it", async () => {
    const side = await startCli(await args("no-native"), READY, { env: { NODE_OPTIONS: `--require ${noHttpCommon}`, MESHWARD_HTTP1_PARSER: "node" } });
    running.push(side);
    const warnings = fallbacks(side.stdout() + side.stderr());
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('"parser":"wasm"');
    expect(warnings[0]).toContain("_http_common has no HTTPParser");
    // PERMISSIVE: a plaintext request goes through the inbound's HTTP/1 relay to the app.
    const response = await fetch(`http://127.0.0.1:${side.match[2]}/through`, { headers: { connection: "close" } });
    expect(response.status).toBe(200);
    expect(app.seen.at(-1)?.url).toBe("/through");
    await side.stop();
  });

  it("falls back from the default (WebAssembly) build to Node's when WebAssembly is gone, says so once, and relays with it", async () => {
    const side = await startCli(await args("no-wasm"), READY, { env: { NODE_OPTIONS: "--jitless", MESHWARD_HTTP1_PARSER: "" } });
    running.push(side);
    const warnings = fallbacks(side.stdout() + side.stderr());
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('"parser":"node"');
    expect(warnings[0]).toContain('"preferred":"wasm"');
    expect(warnings[0]).toContain("WebAssembly is not available");
    const response = await fetch(`http://127.0.0.1:${side.match[2]}/jitless`, { headers: { connection: "close" } });
    expect(response.status).toBe(200);
    expect(app.seen.at(-1)?.url).toBe("/jitless");
    await side.stop();
  });

  it("refuses to start (E_RUNTIME_UNSUPPORTED) when neither build is usable", async () => {
    const refused = await runCli(await args("neither"), { env: { NODE_OPTIONS: `--jitless --require ${noHttpCommon}`, MESHWARD_HTTP1_PARSER: "" } });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("[E_RUNTIME_UNSUPPORTED]");
    expect(refused.stderr).toContain("node: _http_common has no HTTPParser");
    expect(refused.stderr).toContain("wasm: WebAssembly is not available");
  });

  it("refuses an unknown MESHWARD_HTTP1_PARSER value", async () => {
    const refused = await runCli(await args("unknown"), { env: { MESHWARD_HTTP1_PARSER: "lenient" } });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('MESHWARD_HTTP1_PARSER must be "node" or "wasm"');
  });
});
