import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as netConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startHttpApp, startTcpEcho, type HttpApp } from "../helpers/app-servers.ts";
import { waitFor } from "../helpers/wait.ts";
import { startMeshCa, startTestSidecar, TD, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// Found by review: in TCP mode the policy was decided once per tunnel, so a reload that denies a
// caller left its open tunnels passing bytes; and plaintext tunnels (PERMISSIVE) were never
// registered for the age cap: with maxConnectionAge 1 s and the policy switched to deny-all at
// 1.5 s, a plaintext tunnel still passed bytes at 4.5 s. A reload now judges open tunnels again
// and ends the denied ones, and plaintext connections are aged out like mTLS ones.
describe("TCP mode: open tunnels follow policy reloads and the age cap", () => {
  let ca: MeshCa;
  let echo: { port: number; close(): Promise<void> };
  let dir: string;
  let holder: { cert: string; key: string };
  const sidecars: TestSidecarWithApp[] = [];
  const sockets: Socket[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "meshward-tunnel-policy-"));
    ca = await startMeshCa();
    echo = await startTcpEcho();
    holder = await ca.clientFiles("default", "holder");
  }, 60_000);
  afterEach(async () => {
    for (const socket of sockets.splice(0)) socket.destroy();
    for (const sidecar of sidecars.splice(0)) await sidecar.close();
  });
  afterAll(async () => {
    await echo?.close();
    await ca?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const start = async (fields: Record<string, unknown>) => {
    const sidecar = await startTestSidecar(ca, { appId: "tunnel", app: `127.0.0.1:${echo.port}`, mode: "permissive", protocol: "tcp", ...fields }, { dnsNames: ["tunnel.mesh.test"] });
    sidecars.push(sidecar);
    return sidecar;
  };
  /** A tunnel, plaintext or mTLS as `holder`, once it echoed a first byte; `closed` resolves when it closes. */
  const tunnel = async (sidecar: TestSidecarWithApp, kind: "plaintext" | "mtls") => {
    const port = sidecar.addresses.inbound.port;
    const socket: Socket =
      kind === "plaintext"
        ? netConnect({ host: "127.0.0.1", port })
        : tlsConnect({ host: "127.0.0.1", port, servername: "tunnel.mesh.test", cert: readFileSync(holder.cert), key: readFileSync(holder.key), ca: ca.bundlePem });
    sockets.push(socket);
    socket.on("error", () => undefined);
    let echoed = "";
    socket.on("data", (d: Buffer) => (echoed += d.toString("latin1")));
    const closed = new Promise<"closed">((resolve) => socket.once("close", () => resolve("closed")));
    socket.write("a");
    await waitFor(`the ${kind} tunnel to echo`, () => echoed.includes("a"));
    /** Whether a byte written now comes back. */
    const echoes = async (byte: string) => {
      socket.write(byte);
      await waitFor(`the ${kind} tunnel to echo ${byte}`, () => echoed.includes(byte));
      return true;
    };
    return { socket, closed, echoes };
  };
  const within = (closed: Promise<"closed">, ms: number) => Promise.race([closed, new Promise<"open">((resolve) => setTimeout(() => resolve("open"), ms))]);

  it("ends a plaintext tunnel at maxConnectionAge", async () => {
    const sidecar = await start({ limits: { maxConnectionAge: "1s", drainTimeout: "1s" } });
    const plain = await tunnel(sidecar, "plaintext");
    expect(await within(plain.closed, 20_000)).toBe("closed");
  }, 40_000);

  it("ends the open tunnels a reloaded policy denies, and keeps those it still allows", async () => {
    const policy = join(dir, "policy.yaml");
    writeFileSync(policy, "accessControl:\n  defaultAction: allow\n");
    const sidecar = await start({ policy });
    const plain = await tunnel(sidecar, "plaintext");
    const verified = await tunnel(sidecar, "mtls");
    // Unverified callers (plaintext) now get the global default, deny; holder stays allowed.
    writeFileSync(policy, `kind: Configuration\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: ${TD}\n    policies:\n      - appId: holder\n        namespace: default\n        trustDomain: ${TD}\n        defaultAction: allow\n`);
    await waitFor("the policy to be reloaded", () => sidecar.logs.find((line) => String(line.msg).includes("access policy reloaded")) !== undefined);
    expect(await within(plain.closed, 15_000)).toBe("closed");
    expect(await verified.echoes("b")).toBe(true);
    expect(verified.socket.destroyed).toBe(false);

    // Denied as well now: the verified tunnel ends too.
    writeFileSync(policy, "accessControl:\n  defaultAction: deny\n");
    await waitFor("the second reload", () => sidecar.logs.lines.filter((line) => String(line.msg).includes("access policy reloaded")).length === 2);
    expect(await within(verified.closed, 15_000)).toBe("closed");
  }, 60_000);

  it("warns once at start (structured) that per-path, HTTP-verb and shadowed operations of its policy never apply in TCP mode, and what decides", async () => {
    const policy = join(dir, "paths.yaml");
    // A GET-only / allow (a health page) makes decide() stop at /, and answer with the app's
    // defaultAction: the /** deny behind it never applies (review finding 5).
    writeFileSync(
      policy,
      "accessControl:\n  defaultAction: deny\n  policies:\n    - appId: holder\n      namespace: default\n      trustDomain: " + TD + "\n      defaultAction: allow\n      operations:\n" +
        "        - { name: /admin/**, httpVerb: ['*'], action: deny }\n        - { name: /, httpVerb: [GET], action: allow }\n        - { name: /**, action: deny }\n",
    );
    const sidecar = await start({ policy });
    const warnings = sidecar.logs.lines.filter((line) => line["event"] === "policy-operations-never-apply-tcp");
    const decidedBy = { kind: "default", name: "/", action: "allow" };
    const holder = { appId: "holder", namespace: "default", trustDomain: TD };
    expect(warnings).toEqual([
      expect.objectContaining({
        operations: [
          { ...holder, name: "/admin/**", action: "deny", why: "path", decidedBy, at: `${policy}:9:11` },
          { ...holder, name: "/", action: "allow", why: "verbs", decidedBy, at: `${policy}:10:11` },
          { ...holder, name: "/**", action: "deny", why: "shadowed", decidedBy, at: `${policy}:11:11` },
        ],
      }),
    ]);
    expect(String(warnings[0]!["msg"])).toContain("every connection is allowed by the app policy's defaultAction (allow; /, the operation that decides the path /, allows HTTP verbs only)");
    // As the warning says: none of the operations applies, the app's defaultAction (allow) decides.
    const verified = await tunnel(sidecar, "mtls");
    expect(await verified.echoes("b")).toBe(true);
  }, 40_000);
});

describe("PERMISSIVE plaintext HTTP connections are aged out like mTLS ones", () => {
  let ca: MeshCa;
  let app: HttpApp;
  let sidecar: TestSidecarWithApp;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startHttpApp();
    sidecar = await startTestSidecar(ca, { appId: "aged", app: `127.0.0.1:${app.port}`, mode: "permissive", limits: { maxConnectionAge: "1s", drainTimeout: "1s" } });
  }, 60_000);
  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await sidecar?.close();
    await app?.close();
    await ca?.close();
  });

  it("closes a plaintext keep-alive connection at maxConnectionAge", async () => {
    const socket = netConnect({ host: "127.0.0.1", port: sidecar.addresses.inbound.port });
    sockets.push(socket);
    socket.on("error", () => undefined);
    let text = "";
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    const closed = new Promise<"closed">((resolve) => socket.once("close", () => resolve("closed")));
    socket.write("GET /hello HTTP/1.1\r\nHost: aged\r\n\r\n");
    await waitFor("the answer", () => text.startsWith("HTTP/1.1 200 "));
    const outcome = await Promise.race([closed, new Promise<"open">((resolve) => setTimeout(() => resolve("open"), 20_000))]);
    expect(outcome).toBe("closed");
  }, 40_000);
});
