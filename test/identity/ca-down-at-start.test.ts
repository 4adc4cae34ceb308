import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { runCli, spawnCli, startCli, type LongRunning, type Spawned } from "../helpers/cli.ts";
import { waitFor } from "../helpers/wait.ts";

/**
 * `meshward identity` and `meshward sidecar` started while the CA is unreachable, as real
 * processes. Before the fix both exited with code 13 after the first failed attempt: their
 * retry timers are unref'd and nothing else held Node's event loop, so the process ended instead
 * of waiting for the CA (CI caught the same exit after a resumed certificate was refused).
 * The CA is real; a gate in this process refuses connections (accept, then reset) until it is
 * opened, and then pipes bytes to the CA, so no port is freed and re-bound.
 */
describe("the first certificate while the CA is down (real processes)", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-ca-down-"));
  const caDir = join(work, "ca");
  const bundle = join(caDir, "bundle.pem");
  const processes: LongRunning[] = [];
  let ca: LongRunning & { match: RegExpMatchArray };
  let gate: Server;
  let gateOpen = false;
  let gateAddress = "";
  const sockets = new Set<Socket>();

  const token = async (appId: string) => {
    const r = await runCli(["token", "create", "--dir", caDir, "--namespace", "jobs", "--app-id", appId]);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout.trim().split("\n").pop() as string;
  };
  const count = (p: LongRunning, event: string) => p.stderr().split("\n").filter((line) => line.includes(`"event":"${event}"`)).length;

  beforeAll(async () => {
    expect((await runCli(["ca", "init", "--trust-domain", "down.test", "--dir", caDir])).code).toBe(0);
    ca = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0"], /listening on (\S+)/);
    processes.push(ca);
    const [caHost, caPort] = (ca.match[1] as string).split(":") as [string, string];
    gate = createServer((client) => {
      sockets.add(client);
      client.on("close", () => sockets.delete(client));
      if (!gateOpen) {
        client.resetAndDestroy();
        return;
      }
      const upstream = createConnection({ host: caHost, port: Number(caPort) });
      sockets.add(upstream);
      upstream.on("close", () => sockets.delete(upstream));
      client.pipe(upstream).pipe(client);
      client.on("error", () => upstream.destroy());
      upstream.on("error", () => client.destroy());
    });
    await new Promise<void>((resolve) => gate.listen(0, "127.0.0.1", resolve));
    const address = gate.address();
    if (address === null || typeof address === "string") throw new Error("the gate has no TCP address");
    gateAddress = `127.0.0.1:${address.port}`;
  }, 60_000);

  afterEach(async () => {
    for (const p of processes.splice(1).reverse()) await p.stop();
    gateOpen = false;
  });

  afterAll(async () => {
    for (const p of processes.reverse()) await p.stop();
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => gate?.close(resolve));
    rmSync(work, { recursive: true, force: true });
  });

  /** Waits until the process has logged `n` failed attempts, and checks it is still running. */
  const waitForFailures = async (p: Spawned, n: number) => {
    await waitFor(`${n} failed attempts`, () => count(p, "renewal-failed") >= n || p.child.exitCode !== null, 30_000);
    expect(p.child.exitCode, `exited early:\n${p.stderr()}`).toBeNull();
    expect(p.stdout()).toBe("");
  };

  it("identity keeps retrying with backoff and becomes ready once the CA answers; the token is spent once", async () => {
    const identity = spawnCli(["identity", "--ca", gateAddress, "--bundle", bundle, "--token", await token("report"), "--out", join(work, "identity-out")]);
    processes.push(identity);
    await waitForFailures(identity, 3);
    expect(identity.stderr()).toMatch(/"reason":"E_CA_UNAVAILABLE"/);
    gateOpen = true;
    await waitFor("ready", () => /identity ready: spiffe:\/\/down\.test\/ns\/jobs\/report /.test(identity.stdout()), 30_000);
    expect(await identity.stop()).toBe(0);
    // One issuance for the one token: the refused attempts never reached the CA.
    const list = await runCli(["cert", "list", "--dir", caDir, "--json"]);
    const records = (JSON.parse(list.stdout) as { spiffeId: string }[]).filter((r) => r.spiffeId.endsWith("/report"));
    expect(records).toHaveLength(1);
  }, 60_000);

  it("sidecar (outbound only) waits for the CA too, then prints its ready line", async () => {
    const sidecar = spawnCli(["sidecar", "--ca", gateAddress, "--bundle", bundle, "--token", await token("caller"), "--namespace", "jobs", "--app-id", "caller", "--outbound", "127.0.0.1:0"]);
    processes.push(sidecar);
    await waitForFailures(sidecar, 2);
    gateOpen = true;
    await waitFor("ready", () => /spiffe:\/\/down\.test\/ns\/jobs\/caller/.test(sidecar.stdout()), 30_000);
    expect(await sidecar.stop()).toBe(0);
  }, 60_000);

  it("the SDK: an app awaiting identity.ready() at the top level waits for the CA instead of exiting 13", async () => {
    const script = join(work, "app.mts");
    const sdk = fileURLToPath(new URL("../../src/index.ts", import.meta.url));
    writeFileSync(
      script,
      [
        `import { createIdentity } from ${JSON.stringify(sdk)};`,
        `import { readFileSync } from "node:fs";`,
        `const identity = createIdentity({ ca: process.argv[2], bundlePem: readFileSync(process.argv[3], "utf8"), token: process.argv[4], logger: { info() {}, warn(fields) { console.error(JSON.stringify(fields)); }, error() {}, debug() {} } });`,
        `const { svid } = await identity.ready();`,
        `console.log("ready " + svid.spiffeId);`,
        `await identity.close();`,
      ].join("\n"),
    );
    const child = spawn(process.execPath, ["--import", "tsx", script, gateAddress, bundle, await token("sdk-app")], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
    try {
      await waitFor("two failed attempts", () => (err.match(/"event":"renewal-failed"/g) ?? []).length >= 2 || child.exitCode !== null, 30_000);
      expect(child.exitCode, `exited early:\n${err}`).toBeNull();
      gateOpen = true;
      // With the certificate in hand the script closes the identity and ends by itself: the hold is released.
      expect(await exited, err).toBe(0);
      expect(out).toBe("ready spiffe://down.test/ns/jobs/sdk-app\n");
    } finally {
      child.kill("SIGKILL");
    }
  }, 60_000);

  it("identity, sidecar and injector stop cleanly on SIGTERM while still waiting for the CA (exit 0, no stack trace)", async () => {
    // The injector attests with a Kubernetes token; none is checked here, since no attempt reaches the CA.
    const tokenFile = join(work, "sa-token");
    writeFileSync(tokenFile, "header.payload.signature\n", { mode: 0o600 });
    for (const args of [
      ["identity", "--ca", gateAddress, "--bundle", bundle, "--token", await token("waiter"), "--out", join(work, "waiter-out")],
      ["sidecar", "--ca", gateAddress, "--bundle", bundle, "--token", await token("caller2"), "--namespace", "jobs", "--app-id", "caller2", "--outbound", "127.0.0.1:0"],
      ["injector", "--ca", gateAddress, "--bundle", bundle, "--token-file", tokenFile, "--namespace", "meshward-system", "--listen", "127.0.0.1:0"],
    ]) {
      const waiting = spawnCli(args);
      processes.push(waiting);
      await waitForFailures(waiting, 2);
      expect(await waiting.stop("SIGTERM"), waiting.stderr()).toBe(0);
      expect(waiting.stdout()).toBe("");
      expect(waiting.stderr()).toMatch(/"event":"stopped"/);
      expect(waiting.stderr()).not.toMatch(/\n\s+at |unexpected error/);
    }
  }, 60_000);
});
