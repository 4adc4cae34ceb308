import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startCli } from "../helpers/cli.ts";
import type { LongRunning } from "../helpers/cli.ts";
import { exec } from "../helpers/exec.ts";
import { startHttpApp } from "../helpers/app-servers.ts";
import type { HttpApp } from "../helpers/app-servers.ts";
import { metricValue, startMeshCa, TD } from "./fixtures.ts";
import type { MeshCa } from "./fixtures.ts";

const READY = /meshward sidecar ready: id=(\S+) inbound=(\S+) (?:outbound=(\S+) )?.*status=(\S+) mode=(\w+)/;

describe("meshward sidecar (real process)", () => {
  let ca: MeshCa;
  let app: HttpApp;
  const running: LongRunning[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startHttpApp();
  });
  afterAll(async () => {
    for (const r of running) await r.stop("SIGKILL");
    await app?.close();
    await ca?.close();
  });

  it("explains every flag in --help", async () => {
    const r = await runCli(["sidecar", "--help"]);
    expect(r.code).toBe(0);
    for (const flag of ["--config", "--app-id", "--namespace", "--ca", "--bundle", "--token", "--token-file", "--inbound", "--app", "--outbound", "--peer", "--peer-template", "--tcp-upstream", "--policy", "--mode", "--protocol", "--status", "--headers-timeout", "--max-header-bytes", "--egress"]) {
      expect(r.stdout).toContain(flag);
    }
    // A --no-* flag says what turning it off does (it read "Serve the status page…", the field's text).
    expect(r.stdout.replace(/\s+/g, " ")).toMatch(/--no-status-page turn the status page \(\/ and \/status\.json\) off/);
  });

  it("names file:line:column of a bad config field, and the flag for a bad flag", async () => {
    const file = join(ca.dir, "bad.yaml");
    writeFileSync(file, `appId: web\nca: 127.0.0.1:1\nbundle: ${ca.bundleFile}\napp: 127.0.0.1:8080\nmode: lenient\n`);
    const bad = await runCli(["sidecar", "--config", file, "--token", "x"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`${file}:5:7: mode:`);
    expect(bad.stderr).toContain("[E_CONFIG_INVALID]");
    const badFlag = await runCli(["sidecar", "--config", file, "--mode", "strict", "--inbound", "nonsense", "--token", "x"]);
    expect(badFlag.stderr).toContain("--inbound: inbound:");
    const missing = await runCli(["sidecar", "--token", "x"]);
    expect(missing.stderr).toMatch(/appId: required \(give --app-id/);
  });

  it("refuses a --max-connections (limits.maxConnections) that is not a whole number of at least 1, naming the flag or file:line:column", async () => {
    const base = ["sidecar", "--app-id", "web", "--ca", "127.0.0.1:1", "--bundle", ca.bundleFile, "--token", "x", "--app", "127.0.0.1:1"];
    const cases = [
      ["0", "must be at least 1"],
      ["-5", "must be at least 1"],
      ["1.5", "must be a whole number"],
      ["many", "must be a number of connections"],
    ] as const;
    const results = await Promise.all(cases.map(([value]) => runCli([...base, "--max-connections", value])));
    results.forEach((r, i) => {
      expect(r.code).toBe(2); // a flag's value: a usage error
      expect(r.stderr).toContain(`--max-connections: limits.maxConnections: ${cases[i]![1]}`);
      expect(r.stderr).toContain("[E_CONFIG_INVALID]");
      expect(r.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
    });
    const file = join(ca.dir, "max-connections.yaml");
    writeFileSync(file, `appId: web\nca: 127.0.0.1:1\nbundle: ${ca.bundleFile}\napp: 127.0.0.1:1\nlimits:\n  maxConnections: 2.5\n`);
    const fromFile = await runCli(["sidecar", "--config", file, "--token", "x"]);
    expect(fromFile.code).toBe(1);
    expect(fromFile.stderr).toContain(`${file}:6:19: limits.maxConnections: must be a whole number`);
    expect((await runCli(["sidecar", "--help"])).stdout).toContain("--max-connections <n>");
  });

  it("refuses a bundle file that holds no certificate, naming the file, and a taken inbound port", async () => {
    const garbage = join(ca.dir, "garbage.pem");
    writeFileSync(garbage, "not a bundle\n");
    const bad = await runCli(["sidecar", "--app-id", "web", "--ca", ca.server.address, "--bundle", garbage, "--token", "x", "--inbound", "127.0.0.1:0", "--app", "127.0.0.1:1"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`the trust bundle ${garbage} is not usable`);
    expect(bad.stderr).toContain("[E_BUNDLE_INVALID]");
    const busyPort = Number(ca.server.address.split(":").pop());
    const busy = await runCli(["sidecar", "--app-id", "web", "--ca", ca.server.address, "--bundle", ca.bundleFile, "--token", await ca.token("default", "web"), "--inbound", `127.0.0.1:${busyPort}`, "--app", "127.0.0.1:1"]);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/the inbound listener cannot listen on 127\.0\.0\.1:\d+: the address is already in use.*\[E_LISTEN_FAILED\]\n$/);
  });

  it("starts from a config file plus flags, prints its addresses, serves /readyz, and drains in-flight requests on SIGTERM", async () => {
    const file = join(ca.dir, "sidecar.yaml");
    writeFileSync(file, `appId: web\nnamespace: default\nca: ${ca.server.address}\nbundle: ${ca.bundleFile}\napp: 127.0.0.1:${app.port}\ninbound: 127.0.0.1:0\nlimits:\n  drainTimeout: 5s\n`);
    const side = await startCli(["sidecar", "--config", file, "--token", await ca.token("default", "web", { dnsNames: ["web.mesh.test"] }), "--dns-name", "web.mesh.test", "--outbound", "127.0.0.1:0", "--status", "127.0.0.1:0"], READY);
    running.push(side);
    const [, id, inbound, outbound, status, mode] = side.match;
    expect(id).toBe(`spiffe://${TD}/ns/default/web`);
    expect(mode).toBe("strict");
    expect(outbound).toMatch(/^127\.0\.0\.1:\d+$/);
    const ready = await fetch(`http://${status}/readyz`);
    expect(ready.status).toBe(200);
    const port = inbound!.split(":")[1]!;
    const caller = await ca.clientFiles("default", "caller");
    const curlArgs = (path: string) => ["-sS", "--max-time", "10", "-w", "\n%{http_code}", "--cacert", ca.bundleFile, "--resolve", `web.mesh.test:${port}:127.0.0.1`, "--cert", caller.cert, "--key", caller.key, `https://web.mesh.test:${port}${path}`];
    const quick = await exec("curl", curlArgs("/quick"));
    expect(quick.stdout.trim().endsWith("200")).toBe(true);
    // curl's connection was counted and, once closed, uncounted.
    let active = -1;
    for (let i = 0; i < 40 && active !== 0; i++) {
      active = metricValue(await (await fetch(`http://${status}/metrics`)).text(), "meshward_connections_active", { direction: "inbound" });
      if (active !== 0) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(active).toBe(0);
    expect(metricValue(await (await fetch(`http://${status}/metrics`)).text(), "meshward_tls_handshakes_total", { direction: "inbound", result: "ok" })).toBe(1);

    const inFlight = exec("curl", curlArgs("/slow?ms=1500"));
    await new Promise((resolve) => setTimeout(resolve, 500));
    const exited = side.stop("SIGTERM");
    await new Promise((resolve) => setTimeout(resolve, 200));
    const refused = await exec("curl", curlArgs("/after"));
    const finished = await inFlight;
    expect(finished.stdout.trim().endsWith("200")).toBe(true);
    expect(JSON.parse(finished.stdout.slice(0, finished.stdout.lastIndexOf("\n")))).toMatchObject({ url: "/slow?ms=1500" });
    expect(refused.code).not.toBe(0);
    expect(await exited).toBe(0);
    expect(side.stderr()).toContain('"event":"draining"');
  });

  it("--escaped-slashes: curl's escaped slash is refused by default, and with unescape judged and forwarded as the path it decodes to", async () => {
    const caller = await ca.clientFiles("default", "escaper");
    const curl = (port: string, path: string) =>
      exec("curl", ["-sS", "--path-as-is", "--max-time", "10", "-w", "\n%{http_code}", "--cacert", ca.bundleFile, "--resolve", `web.mesh.test:${port}:127.0.0.1`, "--cert", caller.cert, "--key", caller.key, `https://web.mesh.test:${port}${path}`]);
    const start = async (extra: string[]) => {
      const side = await startCli(["sidecar", "--app-id", "web", "--ca", ca.server.address, "--bundle", ca.bundleFile, "--token", await ca.token("default", "web", { dnsNames: ["web.mesh.test"] }), "--dns-name", "web.mesh.test", "--inbound", "127.0.0.1:0", "--app", `127.0.0.1:${app.port}`, "--status", "127.0.0.1:0", ...extra], READY);
      running.push(side);
      return { side, port: side.match[2]!.split(":")[1]! };
    };
    const seenBefore = app.seen.length;
    const strict = await start([]);
    const refused = await curl(strict.port, "/items/..%2fadmin/x");
    expect(refused.stdout.trim().endsWith("400")).toBe(true);
    expect(refused.stdout).toContain("E_AMBIGUOUS_REQUEST");
    expect(app.seen.length).toBe(seenBefore);
    const unescaping = await start(["--escaped-slashes", "unescape"]);
    const decoded = await curl(unescaping.port, "/items/..%2fadmin/x");
    expect(decoded.stdout.trim().endsWith("200")).toBe(true);
    expect(app.seen.at(-1)?.url).toBe("/admin/x");
    const bad = await runCli(["sidecar", "--escaped-slashes", "decode"]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--escaped-slashes.*decode.*(reject|Allowed)/s);
  });

  it("takes --mode and the config's mode in either case (STRICT/PERMISSIVE, as Istio writes them), and names the values it takes", async () => {
    // An outbound-only sidecar has no inbound listener for PERMISSIVE to apply to: the refusal
    // shows the upper-case value was read as permissive.
    const upper = await runCli(["sidecar", "--app-id", "web", "--ca", ca.server.address, "--bundle", ca.bundleFile, "--token", "x", "--outbound", "127.0.0.1:0", "--mode", "PERMISSIVE"]);
    expect(upper.code).toBe(2); // flags alone at fault: a usage error
    expect(upper.stderr).toContain("permissive mode applies to the inbound listener");
    const file = join(ca.dir, "upper-mode.yaml");
    writeFileSync(file, `appId: web\nca: ${ca.server.address}\nbundle: ${ca.bundleFile}\noutbound: 127.0.0.1:0\nmode: PERMISSIVE\n`);
    const fromFile = await runCli(["sidecar", "--config", file, "--token", "x"]);
    expect(fromFile.stderr).toContain("permissive mode applies to the inbound listener");
    const wrong = await runCli(["sidecar", "--mode", "loose"]);
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toContain("Allowed: strict, permissive.");
  });
});
