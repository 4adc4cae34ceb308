/**
 * limits.upgradeIdleTimeout: a joined WebSocket with no byte either way for that long is closed
 * both ways, by the inbound and by the outbound, and logged once (`upgrade-idle`); one that keeps
 * exchanging messages stays open however long it lasts. Two sidecars, each with the WebSocket
 * app behind it: "short" has a 1 s upgradeIdleTimeout, "long" and "caller" the default
 * (5 min). Through caller's outbound to short's inbound only the inbound's timer can close;
 * through short's outbound to long's inbound only the outbound's.
 */
import type { Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildSidecarConfig } from "../../src/cli/sidecar-config.ts";
import { clientTextFrame, openWebSocket, startWsApp, WS_HEADERS, type WsApp } from "../helpers/ws-app.ts";
import { startMeshCa, startTestSidecar, TD, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

// Far above a loaded machine's round trip: a busy WebSocket's bytes must never be IDLE_MS apart
// (at 300 ms a full `npm test` on two cores once took longer than that for one reply).
const IDLE_MS = 1000;

/** Resolves when the socket closes; rejects if it is still open after `ms` (far beyond the idle timeout). */
function closedWithin(socket: Duplex, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return resolve();
    const timer = setTimeout(() => reject(new Error(`the WebSocket was still open after ${ms} ms`)), ms);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Sends `count` messages, one every `everyMs`, each after the previous reply arrived; returns the replies. */
async function chat(socket: Duplex, count: number, everyMs: number): Promise<string[]> {
  const replies: string[] = [];
  let closed = false;
  socket.once("close", () => (closed = true));
  for (let i = 0; i < count; i++) {
    await new Promise((r) => setTimeout(r, everyMs));
    if (closed) throw new Error(`the WebSocket was closed after ${i} messages`);
    const reply = new Promise<Buffer>((resolve, reject) => {
      socket.once("data", resolve);
      socket.once("close", () => reject(new Error(`the WebSocket was closed waiting for reply ${i}`)));
    });
    socket.write(clientTextFrame(`message ${i}`));
    replies.push((await reply).subarray(2).toString());
  }
  return replies;
}

describe("idle timeout of upgraded connections (limits.upgradeIdleTimeout)", () => {
  let ca: MeshCa;
  let app: WsApp;
  let short: TestSidecarWithApp;
  let long: TestSidecarWithApp;
  let caller: TestSidecarWithApp;
  const open: Duplex[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startWsApp();
    const appAddress = `127.0.0.1:${app.port}`;
    long = await startTestSidecar(ca, { appId: "long", app: appAddress });
    short = await startTestSidecar(ca, {
      appId: "short",
      app: appAddress,
      outbound: "127.0.0.1:0",
      peers: { long: `127.0.0.1:${long.addresses.inbound.port}` },
      limits: { upgradeIdleTimeout: `${IDLE_MS}ms` },
    });
    caller = await startTestSidecar(ca, { appId: "caller", app: appAddress, outbound: "127.0.0.1:0", peers: { short: `127.0.0.1:${short.addresses.inbound.port}` } });
  }, 60_000);

  afterAll(async () => {
    for (const socket of open) socket.destroy();
    for (const s of [caller, short, long]) await s?.close();
    await app?.close();
    await ca?.close();
  });

  const ws = async (via: TestSidecarWithApp, to: string, path: string): Promise<Duplex> => {
    const socket = await openWebSocket(via.addresses.outbound!.port, path, WS_HEADERS(to));
    open.push(socket);
    socket.on("error", () => undefined);
    return socket;
  };

  it("the inbound closes a silent WebSocket after upgradeIdleTimeout, both ways, and logs it once", async () => {
    const endedAtApp = app.ended;
    const socket = await ws(caller, "short", "/ws/silent-in");
    await closedWithin(socket, 10_000);
    // The sidecar's connection to the app is gone too.
    await expect.poll(() => app.ended, { timeout: 5000 }).toBeGreaterThan(endedAtApp);
    const lines = short.logs.lines.filter((line) => line.event === "upgrade-idle" && line.path === "/ws/silent-in");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ direction: "inbound", caller: `spiffe://${TD}/ns/default/caller`, idleMs: IDLE_MS });
  });

  it("the outbound closes a silent WebSocket after upgradeIdleTimeout, both ways, and logs it once", async () => {
    const endedAtApp = app.ended;
    const socket = await ws(short, "long", "/ws/silent-out");
    await closedWithin(socket, 10_000);
    // The sidecar's connection to the app is gone too.
    await expect.poll(() => app.ended, { timeout: 5000 }).toBeGreaterThan(endedAtApp);
    const lines = short.logs.lines.filter((line) => line.event === "upgrade-idle" && line.path === "/ws/silent-out");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ direction: "outbound", app: "long", idleMs: IDLE_MS });
  });

  it("keeps a WebSocket that exchanges messages open past several timeouts, on the inbound and on the outbound", async () => {
    const inbound = await ws(caller, "short", "/ws/busy-in");
    const outbound = await ws(short, "long", "/ws/busy-out");
    // 30 exchanges a tenth of the timeout apart: past 3 timeouts in all.
    const [viaInbound, viaOutbound] = await Promise.all([chat(inbound, 30, IDLE_MS / 10), chat(outbound, 30, IDLE_MS / 10)]);
    expect(viaInbound).toEqual(Array.from({ length: 30 }, (_, i) => `spiffe://${TD}/ns/default/caller says: message ${i}`));
    expect(viaOutbound).toEqual(Array.from({ length: 30 }, (_, i) => `spiffe://${TD}/ns/default/short says: message ${i}`));
    expect(inbound.destroyed).toBe(false);
    expect(outbound.destroyed).toBe(false);
    expect(short.logs.lines.filter((line) => line.event === "upgrade-idle" && String(line.path).startsWith("/ws/busy"))).toEqual([]);
  });
});

describe("limits.upgradeIdleTimeout in the config", () => {
  it("defaults to 5 min (Envoy's stream_idle_timeout) and is set by --upgrade-idle-timeout", () => {
    const base = { appId: "web", ca: "127.0.0.1:1", bundle: "b.pem", token: "t", app: "127.0.0.1:1" };
    expect(buildSidecarConfig(base).limits.upgradeIdleTimeout).toBe(300_000);
    // What commander hands over for --upgrade-idle-timeout 90s.
    expect(buildSidecarConfig({ ...base, upgradeIdleTimeout: "90s" }).limits.upgradeIdleTimeout).toBe(90_000);
  });
});
