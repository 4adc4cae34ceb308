import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Sidecar } from "../../src/proxy/sidecar.ts";
import { waitFor } from "../helpers/wait.ts";
import { clientTextFrame, openWebSocket, startWsApp, WS_HEADERS, type WsApp } from "../helpers/ws-app.ts";
import { metricValue, startMeshCa, startTestSidecar, TD, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// Found by review: the policy decided once per WebSocket (on its upgrade request) and a reload
// judged again only TCP-mode tunnels, so a caller whose access was revoked kept its open
// WebSocket until the age cap. A reload now judges each open upgraded connection again, with the
// caller, method and canonical path it was opened with, and closes the ones the new policy denies.
describe("open WebSockets follow policy reloads", () => {
  const caller = `spiffe://${TD}/ns/default/web`;
  let ca: MeshCa;
  let app: WsApp;
  let dir: string;
  const sidecars: (TestSidecarWithApp | Sidecar)[] = [];
  const sockets: Duplex[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "meshward-ws-reload-"));
    ca = await startMeshCa();
    app = await startWsApp();
  }, 60_000);
  afterEach(async () => {
    for (const socket of sockets.splice(0)) socket.destroy();
    for (const sidecar of sidecars.splice(0)) await sidecar.close();
  });
  afterAll(async () => {
    await app?.close();
    await ca?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A policy letting web open WebSockets: GET on /ws/**, and on /live/** with `liveVerbs`. */
  const policyText = (liveVerbs: string[]) =>
    `kind: Configuration\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: ${TD}\n    policies:\n      - appId: web\n        namespace: default\n        trustDomain: ${TD}\n        defaultAction: deny\n        operations:\n          - name: /ws/**\n            httpVerb: ["GET"]\n            action: allow\n          - name: /live/**\n            httpVerb: ${JSON.stringify(liveVerbs)}\n            action: allow\n`;

  /** web's outbound sidecar → mTLS → chat's inbound sidecar (policy from `policy`) → the WebSocket app. */
  const startPair = async (policy: string) => {
    const chat = await startTestSidecar(ca, { appId: "chat", app: `127.0.0.1:${app.port}`, policy });
    sidecars.push(chat);
    const web = await startTestSidecar(ca, { appId: "web", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { chat: `127.0.0.1:${chat.addresses.inbound.port}` } });
    sidecars.push(web);
    return { chat, outboundPort: web.addresses.outbound!.port };
  };

  /** An open WebSocket through the pair, once it carried a first message; `closed` resolves when it closes. */
  const webSocket = async (port: number, path: string) => {
    const socket = await openWebSocket(port, path, WS_HEADERS("chat"));
    sockets.push(socket);
    socket.on("error", () => undefined);
    let received = "";
    socket.on("data", (d: Buffer) => (received += d.toString("latin1")));
    const closed = new Promise<"closed">((resolve) => socket.once("close", () => resolve("closed")));
    /** Whether a message sent now is echoed back by the app. */
    const echoes = async (text: string) => {
      socket.write(clientTextFrame(text));
      await waitFor(`${path} to echo ${text}`, () => received.includes(`${caller} says: ${text}`));
      return true;
    };
    await echoes("hello");
    return { socket, closed, echoes };
  };
  const within = (closed: Promise<"closed">, ms: number) => Promise.race([closed, new Promise<"open">((resolve) => setTimeout(() => resolve("open"), ms))]);
  const reloads = (sidecar: TestSidecarWithApp) => sidecar.logs.lines.filter((line) => String(line.msg).includes("access policy reloaded")).length;

  it("closes the WebSocket whose opening request the reloaded policy denies, and keeps the one it still allows", async () => {
    const policy = join(dir, "policy.yaml");
    writeFileSync(policy, policyText(["GET"]));
    const { chat, outboundPort } = await startPair(policy);
    const kept = await webSocket(outboundPort, "/ws/room-1");
    const revoked = await webSocket(outboundPort, "/live/feed");
    const refusedBefore = metricValue(await chat.metrics.text(), "meshward_sidecar_refused_total", { direction: "inbound", reason: "policy" });

    // /live/** is now POST only: the GET that opened /live/feed is denied, /ws/room-1 still allowed.
    writeFileSync(policy, policyText(["POST"]));
    await waitFor("the policy to be reloaded", () => reloads(chat) === 1);
    expect(await within(revoked.closed, 15_000)).toBe("closed");
    // Every open tunnel is judged in the same pass as the one just closed: this one was judged too.
    expect(await kept.echoes("after the reload")).toBe(true);
    expect(kept.socket.destroyed).toBe(false);

    const line = chat.logs.find((l) => l.event === "policy-denied" && l.operation === "/live/feed");
    expect(line).toMatchObject({ caller, operation: "/live/feed", verb: "GET" });
    expect(metricValue(await chat.metrics.text(), "meshward_sidecar_refused_total", { direction: "inbound", reason: "policy" })).toBe(refusedBefore + 1);
    expect(metricValue(await chat.metrics.text(), "meshward_policy_denials_total", { caller })).toBeGreaterThanOrEqual(1);

    // Denied as well now: the WebSocket that survived the first reload ends too.
    writeFileSync(policy, "accessControl:\n  defaultAction: deny\n");
    await waitFor("the second reload", () => reloads(chat) === 2);
    expect(await within(kept.closed, 15_000)).toBe("closed");
    expect(chat.logs.find((l) => l.event === "policy-denied" && l.operation === "/ws/room-1")).toMatchObject({ caller, verb: "GET" });
  }, 60_000);
});
