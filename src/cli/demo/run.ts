import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { createWriteStream, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initAnchors } from "../../ca/anchors.ts";
import { startCaServer, type CaServer } from "../../ca/server.ts";
import { issueJoinToken } from "../../ca/tokens.ts";
import { caConfigSchema } from "../../config/ca.ts";
import { describeError, MeshwardError } from "../../errors.ts";
import { createIdentity } from "../../identity/ca-source.ts";
import { createLogger } from "../../telemetry/logger.ts";
import { createHttpsServer, type MtlsHttpsServer } from "../../transport/index.ts";
import { packageFile } from "../../util/package-files.ts";
import { STOP_ON_STDIN_CLOSE_ENV } from "../options.ts";
import { httpCall, INVENTORY_APP_PY, startOrdersApp } from "./apps.ts";

const MESHWARD_BIN = packageFile("bin/meshward.js");
const TRUST_DOMAIN = "demo.local";
const NAMESPACE = "shop";

const INVENTORY_POLICY = `# Dapr accessControl: only orders may read items; everything else is denied.
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: inventory-access
spec:
  accessControl:
    defaultAction: deny
    trustDomain: ${TRUST_DOMAIN}
    policies:
      - appId: orders
        namespace: ${NAMESPACE}
        trustDomain: ${TRUST_DOMAIN}
        defaultAction: deny
        operations:
          - name: /items/**
            httpVerb: ["GET"]
            action: allow
`;

export interface DemoOptions {
  readonly once: boolean;
  /** Keep the working directory (logs, certificates) instead of deleting it. */
  readonly keep: boolean;
  readonly say: (line: string) => void;
}

/** The signals that stop the demo, at any point: Ctrl-C, `kill`, a closed terminal. */
const STOP_SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/**
 * The demo's last child: it holds the read end of a pipe from the demo and, when that pipe
 * closes without "keep" having come through it, removes the working directory. The demo removes
 * the directory itself when it stops normally; this is for when it cannot: `kill -9`, the OOM
 * killer. Plain CommonJS for `node -e`; the directory is its argument.
 */
const JANITOR_JS = `
let keep = false;
process.stdin.on("data", (d) => { if (String(d).includes("keep")) keep = true; });
process.stdin.on("error", () => undefined);
process.stdin.on("close", () => { if (!keep) require("node:fs").rmSync(process.argv[1], { recursive: true, force: true }); });
`;

/** Thrown into the step that a stop signal interrupts. */
class DemoStopped extends Error {}

/**
 * Listens for SIGINT, SIGTERM and SIGHUP from before the demo writes its first file until it
 * has removed its last one. Before the new-user review (M1) the handlers came only after
 * startup: a signal in the first seconds took Node's default action, so the Python app and the
 * sidecars were left running (reparented to PID 1) and the working directory, root key
 * included, stayed behind.
 */
function watchStopSignals(onRepeat: (signal: NodeJS.Signals) => void) {
  let received: NodeJS.Signals | undefined;
  let resolveStop: (signal: NodeJS.Signals) => void = () => undefined;
  const requested = new Promise<NodeJS.Signals>((resolve) => (resolveStop = resolve));
  // Signal handlers do not keep Node's event loop alive; the demo waits on them.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  let done = false;
  const handler = (signal: NodeJS.Signals) => {
    // After the cleanup the handlers stay, so that a late signal cannot kill the process by
    // Node's default action: it ends it now, with the status the demo has set.
    if (done) process.exit();
    if (received === undefined) {
      received = signal;
      resolveStop(signal);
    } else {
      onRepeat(signal);
    }
  };
  for (const name of STOP_SIGNALS) process.on(name, handler);
  return {
    requested,
    get received() {
      return received;
    },
    dispose() {
      clearInterval(keepAlive);
      done = true;
    },
  };
}

interface Check {
  readonly ok: boolean;
  readonly title: string;
  readonly detail: string;
  readonly proves: string;
}

/** `meshward demo`: a CA, two services in different runtimes behind sidecars, one SDK service, and three checks. */
export async function runDemo(options: DemoOptions): Promise<boolean> {
  const children = new Set<ChildProcess>();
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  let closing = false;
  const stop = watchStopSignals((signal) => {
    // A second signal while cleaning up: no more waiting for the children to stop by themselves.
    options.say(`${signal} again: killing the demo's processes now`);
    for (const child of children) child.kill("SIGKILL");
  });
  const demo: DemoProcesses = {
    spawn(command, args, spawnOptions) {
      if (closing) throw new DemoStopped("stopping");
      // stdin is a pipe from the demo that it never writes to: each child stops when it closes,
      // which the kernel does however the demo ends, kill -9 included (see INVENTORY_APP_PY and
      // STOP_ON_STDIN_CLOSE_ENV). Without it a killed demo left its children running.
      const child = spawn(command, args, { ...spawnOptions, stdio: ["pipe", "pipe", "pipe"] });
      child.stdin?.on("error", () => undefined);
      children.add(child);
      child.once("exit", () => children.delete(child));
      cleanups.push(() => stopChild(child));
      return child;
    },
    onCleanup(cleanup) {
      cleanups.push(cleanup);
    },
  };
  const runCleanups = async () => {
    for (let cleanup = cleanups.pop(); cleanup !== undefined; cleanup = cleanups.pop()) {
      try {
        await cleanup();
      } catch {
        // keep cleaning up
      }
    }
  };
  // What a stop signal interrupted: it may still add a cleanup (a server that was starting).
  let inFlight: Promise<unknown> = Promise.resolve();
  const untilStopped = <T>(pending: Promise<T>): Promise<T> => {
    inFlight = pending.catch(() => undefined);
    return Promise.race([pending, stop.requested.then((signal) => Promise.reject(new DemoStopped(signal)))]);
  };
  const work = mkdtempSync(join(tmpdir(), "meshward-demo-"));
  // Not one of `children`: it outlives the cleanups, and is told at the end whether to keep the directory.
  const janitor = spawn(process.execPath, ["-e", JANITOR_JS, work], { stdio: ["pipe", "ignore", "ignore"] });
  janitor.stdin?.on("error", () => undefined);
  janitor.on("error", () => undefined);
  const logs = join(work, "logs");
  const step = async <T>(label: string, action: () => Promise<T>): Promise<T> => {
    if (stop.received !== undefined) throw new DemoStopped(stop.received);
    const started = Date.now();
    options.say(`  … ${label}`);
    const result = await untilStopped(action());
    options.say(`  ✓ ${label} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    return result;
  };
  try {
    mkdirSync(logs);
    options.say(`meshward demo — working directory ${work}`);
    const ca = await step(`certificate authority for trust domain ${TRUST_DOMAIN}`, async () => {
      await initAnchors({ dir: join(work, "ca"), trustDomain: TRUST_DOMAIN, now: new Date() });
      const server = await startCaServer({
        dir: join(work, "ca"),
        config: caConfigSchema.parse({ listen: "127.0.0.1:0", status: "127.0.0.1:0", workloadTtl: "1h" }),
        logger: createLogger({ component: "ca", destination: openSync(join(logs, "ca.log"), "a") }),
      });
      demo.onCleanup(() => server.close());
      return server;
    });
    const bundle = join(work, "ca", "bundle.pem");
    const token = (appId: string) => createJoinToken(ca, appId);

    const inventoryApp = await step("inventory app (Python http.server) on loopback", async () => {
      const child = demo.spawn("python3", ["-c", INVENTORY_APP_PY], {});
      const port = Number((await firstLine(child, /^(\d+)$/m, 30_000, "python3"))[1]);
      return { port };
    });
    writeFileSync(join(work, "inventory-policy.yaml"), INVENTORY_POLICY);
    const inventory = await step("inventory's sidecar (mTLS in, Dapr access policy, STRICT)", async () =>
      startSidecar(work, demo, "inventory", await token("inventory"), [
        "--app-id", "inventory", "--namespace", NAMESPACE, "--ca", ca.address, "--bundle", bundle,
        "--inbound", "127.0.0.1:0", "--app", `127.0.0.1:${inventoryApp.port}`, "--policy", join(work, "inventory-policy.yaml"), "--status", "127.0.0.1:0",
      ]),
    );
    const billing = await step("billing service (Node, the meshward SDK, no sidecar)", async () => {
      const identity = createIdentity({ ca: ca.address, bundlePem: readFileSync(bundle, "utf8"), token: await token("billing") });
      demo.onCleanup(() => identity.close());
      await identity.ready();
      const server: MtlsHttpsServer = await createHttpsServer(
        { identity, authorize: { trustDomain: TRUST_DOMAIN, namespace: NAMESPACE, appId: "orders" }, logger: createLogger({ component: "billing", destination: openSync(join(logs, "billing.log"), "a") }) },
        (req, res) => {
          res.setHeader("content-type", "application/json");
          res.end(JSON.stringify({ app: "billing (SDK)", caller: req.peer.spiffeId }));
        },
      );
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      demo.onCleanup(() => server.meshward.close());
      return { identity, port: (server.address() as AddressInfo).port };
    });
    let ordersOutbound = 0;
    const ordersApp = await step("orders app (Node) on loopback", async () => {
      const app = await startOrdersApp(() => ordersOutbound);
      demo.onCleanup(() => closeServer(app.server));
      return app;
    });
    const orders = await step("orders' sidecar (mTLS out to inventory and billing)", async () =>
      startSidecar(work, demo, "orders", await token("orders"), [
        "--app-id", "orders", "--namespace", NAMESPACE, "--ca", ca.address, "--bundle", bundle,
        "--inbound", "127.0.0.1:0", "--app", `127.0.0.1:${ordersApp.port}`, "--outbound", "127.0.0.1:0",
        "--peer", `inventory=${inventory.fields.inbound}`, "--peer", `billing=127.0.0.1:${billing.port}`, "--status", "127.0.0.1:0",
      ]),
    );
    ordersOutbound = Number(orders.fields.outbound?.split(":").pop());

    options.say("");
    const checks = await untilStopped(runChecks({ ordersPort: ordersApp.port, ordersOutbound, inventoryInbound: inventory.fields.inbound as string }));
    for (const [index, check] of checks.entries()) {
      options.say(`${check.ok ? "✓" : "✗"} ${index + 1}. ${check.title}`);
      options.say(`     ${check.detail}`);
      options.say(`     proves: ${check.proves}`);
    }
    const ok = checks.every((c) => c.ok);
    options.say("");
    options.say(ok ? "All checks passed." : `Some checks failed; logs are in ${logs}.`);
    if (!options.once) {
      options.say("");
      options.say("Everything keeps running. Look around:");
      const look: [string, string | undefined][] = [
        ["status page (CA)", ca.status ? `${ca.status.url}/` : undefined],
        ["status page (orders' sidecar)", orders.fields.status ? `http://${orders.fields.status}/` : undefined],
        ["status page (inventory's sidecar)", inventory.fields.status ? `http://${inventory.fields.status}/` : undefined],
        ["call orders", `curl http://127.0.0.1:${ordersApp.port}/checkout`],
        ["CA health", `curl --cacert ${bundle} https://localhost:${ca.port}/readyz`],
        ["logs", logs],
      ];
      for (const line of alignedColumns(look)) options.say(`  ${line}`);
      options.say("Press Ctrl-C to stop and clean up.");
      await stop.requested;
    }
    return ok;
  } catch (error) {
    // After a stop signal, whatever failed (a child that Ctrl-C reached first) is the stop. Ctrl-C
    // reaches the whole process group at once, and a busy machine may run a child's exit before
    // this process's own signal handler: a child that failed gets that signal half a second.
    if (!(error instanceof DemoStopped) && stop.received === undefined && error instanceof MeshwardError && error.code === "E_DEMO") {
      await Promise.race([stop.requested, new Promise((resolve) => setTimeout(resolve, 500).unref())]);
    }
    if (!(error instanceof DemoStopped) && stop.received === undefined) throw error;
    options.say(`${stop.received ?? (error as Error).message}: stopping before the demo was ready`);
    return false;
  } finally {
    closing = true;
    await runCleanups();
    // The interrupted step ends once its children are stopped; whatever it started meanwhile is stopped too.
    await Promise.race([inFlight, new Promise((resolve) => setTimeout(resolve, 10_000).unref())]);
    await runCleanups();
    if (options.keep) options.say(`kept ${work}`);
    else {
      rmSync(work, { recursive: true, force: true });
      if (stop.received !== undefined) options.say(`stopped; removed ${work}`);
    }
    await endJanitor(janitor, options.keep);
    stop.dispose();
  }
}

/** How the demo starts processes and registers what to undo: nothing is started once it is stopping. */
interface DemoProcesses {
  /** stdin, stdout and stderr are pipes; the child must stop when its stdin closes. */
  spawn(command: string, args: readonly string[], options: Omit<SpawnOptions, "stdio">): ChildProcess;
  onCleanup(cleanup: () => Promise<unknown> | unknown): void;
}

async function runChecks(ports: { ordersPort: number; ordersOutbound: number; inventoryInbound: string }): Promise<Check[]> {
  const checks: Check[] = [];
  const attempt = async (make: () => Promise<Check>, title: string, proves: string) => {
    try {
      checks.push(await make());
    } catch (error) {
      checks.push({ ok: false, title, detail: describeError(error), proves });
    }
  };

  const mtlsProves = "the calls crossed the network encrypted; both ends showed certificates from the CA; each callee knows exactly which workload called (and nothing in the apps deals with certificates)";
  await attempt(async () => {
    const answer = await httpCall(ports.ordersPort, "/checkout");
    const { inventory, billing } = JSON.parse(answer.body) as { inventory: { status: number; body: string }; billing: { status: number; body: string } };
    const inventoryCaller = (JSON.parse(inventory.body) as { caller: string }).caller;
    const billingCaller = (JSON.parse(billing.body) as { caller: string }).caller;
    const ordersId = `spiffe://${TRUST_DOMAIN}/ns/${NAMESPACE}/orders`;
    const ok = inventory.status === 200 && inventoryCaller.includes(`URI=${ordersId}`) && billing.status === 200 && billingCaller === ordersId;
    return {
      ok,
      title: "mTLS between services",
      detail: `orders (Node) → inventory (Python): ${inventory.status}, inventory's sidecar verified the caller and told the app "${inventoryCaller}"; orders → billing (SDK): ${billing.status}, billing verified ${billingCaller}`,
      proves: mtlsProves,
    };
  }, "mTLS between services", mtlsProves);

  const policyProves = "inventory's sidecar enforces a Dapr accessControl policy on the verified caller identity: orders may GET /items/**, nothing else";
  await attempt(async () => {
    const denied = await httpCall(ports.ordersOutbound, "/items/42", { method: "DELETE", headers: { "dapr-app-id": "inventory" } });
    const allowed = await httpCall(ports.ordersOutbound, "/items/42", { headers: { "dapr-app-id": "inventory" } });
    return {
      ok: denied.status === 403 && allowed.status === 200,
      title: "a call the access policy denies",
      detail: `orders → DELETE /items/42 on inventory: ${denied.status} ${summarize(denied.body)}; GET /items/42: ${allowed.status}`,
      proves: policyProves,
    };
  }, "a call the access policy denies", policyProves);

  const plaintextProves = "in STRICT mode nobody on the network can talk to a service without a certificate, or read the traffic";
  await attempt(async () => {
    const [, port] = /:(\d+)$/.exec(ports.inventoryInbound) ?? [];
    const answer = await httpCall(Number(port), "/items/42");
    return {
      ok: answer.status === 400,
      title: "plaintext refused",
      detail: `a plain HTTP GET straight to inventory's mTLS port: ${answer.status} ${summarize(answer.body)}`,
      proves: plaintextProves,
    };
  }, "plaintext refused", plaintextProves);
  return checks;
}

/** `label: value` lines with every value starting in the same column; a missing value drops its line. */
export function alignedColumns(rows: readonly (readonly [string, string | undefined])[]): string[] {
  const shown = rows.filter((row): row is readonly [string, string] => row[1] !== undefined);
  const width = Math.max(0, ...shown.map(([label]) => label.length + 1));
  return shown.map(([label, value]) => `${`${label}:`.padEnd(width)} ${value}`);
}

/** A sidecar's JSON refusal in one line: code, message and the deciding rule. */
function summarize(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: string; message?: string; rule?: string };
    return `${parsed.error ?? ""}: ${parsed.message ?? ""}${parsed.rule ? ` (rule ${parsed.rule})` : ""}`;
  } catch {
    return body.trim().slice(0, 200);
  }
}

async function createJoinToken(ca: CaServer, appId: string): Promise<string> {
  return (await issueJoinToken(ca.store, { spiffeId: `spiffe://${TRUST_DOMAIN}/ns/${NAMESPACE}/${appId}`, ttlMs: 600_000 })).token;
}

/** The token goes in the environment, not the arguments, which every local user can read (ps). */
async function startSidecar(work: string, demo: DemoProcesses, name: string, token: string, args: string[]): Promise<{ fields: Record<string, string> }> {
  const child = demo.spawn(process.execPath, [MESHWARD_BIN, "sidecar", ...args], { env: { ...process.env, MESHWARD_TOKEN: token, [STOP_ON_STDIN_CLOSE_ENV]: "1" } });
  child.stderr?.pipe(createWriteStream(join(work, "logs", `${name}-sidecar.log`)));
  const [, line] = await firstLine(child, /meshward sidecar ready: (.*)/);
  const fields: Record<string, string> = {};
  for (const part of (line ?? "").split(" ")) {
    const eq = part.indexOf("=");
    if (eq > 0) fields[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return { fields };
}

function firstLine(child: ChildProcess, pattern: RegExp, timeoutMs = 30_000, command = "node"): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let text = "";
    const timer = setTimeout(() => reject(new MeshwardError("E_DEMO", `a demo process did not start in time: ${text.slice(-300)}`)), timeoutMs);
    child.stdout?.on("data", (d) => {
      text += d;
      const match = text.match(pattern);
      if (match) {
        clearTimeout(timer);
        resolve(match);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new MeshwardError("E_DEMO", `a demo process exited with ${code} before it was ready`));
    });
    child.once("error", (error) => {
      clearTimeout(timer);
      const missing = (error as NodeJS.ErrnoException).code === "ENOENT" && command === "python3" ? ": python3 is not installed or not on PATH (the demo's inventory app is a Python program; install python3, e.g. apt-get install python3)" : "";
      reject(new MeshwardError("E_DEMO", `could not start a demo process: ${error.message}${missing}`));
    });
  });
}

/** Tells the janitor whether to keep the directory, and waits (a little) for it to be gone. */
async function endJanitor(janitor: ChildProcess, keep: boolean): Promise<void> {
  if (janitor.exitCode !== null || janitor.signalCode !== null) return;
  const exited = new Promise((resolve) => janitor.once("exit", resolve));
  janitor.stdin?.end(keep ? "keep" : "");
  const timer = setTimeout(() => janitor.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
