import { connect as netConnect } from "node:net";
import type { Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHttpApp, type HttpApp } from "../helpers/app-servers.ts";
import { exec } from "../helpers/exec.ts";
import { classify } from "../../src/proxy/sniff.ts";
import { metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";

/**
 * The outbound listener decides from a connection's first chunk what it is (src/proxy/sniff.ts,
 * FirstChunkWatch): HTTP/1 goes to the relay with that chunk, HTTP/2 prior knowledge to the
 * HTTP/2 server, a TLS ClientHello and anything else is refused, and a connection that sends
 * nothing is closed after `limits.handshakeTimeout`, each refusal counted by its reason.
 */
describe("outbound listener: the first chunk decides", () => {
  let ca: MeshCa;
  let app: HttpApp;
  let callee: TestSidecarWithApp;
  let caller: TestSidecarWithApp;
  let outbound: number;

  const refused = async (reason: string): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${caller.addresses.status!.port}/metrics`)).text();
    return metricValue(text, "meshward_sidecar_refused_total", { direction: "outbound", reason });
  };

  /** Opens a connection, writes `bytes` (if any) and 50 ms later `later` (if any), reads until the sidecar closes it. */
  const exchange = (bytes: string | undefined, later?: string): Promise<{ text: string; closedBySidecar: boolean }> =>
    new Promise((resolve) => {
      const socket: Socket = netConnect({ host: "127.0.0.1", port: outbound });
      let text = "";
      let closedBySidecar = false;
      socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
      socket.on("end", () => (closedBySidecar = true));
      socket.on("error", () => (closedBySidecar = true)); // a reset is the sidecar closing too
      socket.on("close", () => resolve({ text, closedBySidecar }));
      if (bytes !== undefined) socket.write(bytes);
      if (later !== undefined) setTimeout(() => socket.write(later), 50);
    });

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startHttpApp();
    callee = await startTestSidecar(ca, { appId: "inventory", app: `127.0.0.1:${app.port}` });
    caller = await startTestSidecar(ca, {
      appId: "checkout",
      app: "127.0.0.1:1",
      outbound: "127.0.0.1:0",
      peers: { inventory: `127.0.0.1:${callee.addresses.inbound.port}` },
      limits: { handshakeTimeout: "400ms" },
    });
    outbound = caller.addresses.outbound!.port;
  }, 60_000);
  afterAll(async () => {
    await caller?.close();
    await callee?.close();
    await app?.close();
    await ca?.close();
  });

  it("relays HTTP/1 whose first chunk holds one request, two pipelined requests, or a request line cut short", async () => {
    const one = await exchange("GET /one HTTP/1.1\r\nHost: inventory\r\nConnection: close\r\n\r\n");
    expect(one.text).toMatch(/^HTTP\/1\.1 200 /);
    expect(one.text).toContain('"url":"/one"');
    const two = await exchange("GET /first HTTP/1.1\r\nHost: inventory\r\n\r\nGET /second HTTP/1.1\r\nHost: inventory\r\nConnection: close\r\n\r\n");
    expect(two.text.match(/HTTP\/1\.1 200 /g)).toHaveLength(2);
    expect(two.text.indexOf('"url":"/first"')).toBeLessThan(two.text.indexOf('"url":"/second"'));
    // The first chunk ends inside the head: the rest arrives in later chunks, to the relay.
    const split = (await exchange("GET /split HTTP/1.1\r\nHo", "st: inventory\r\nConnection: close\r\n\r\n")).text;
    expect(split).toMatch(/^HTTP\/1\.1 200 /);
    expect(split).toContain('"url":"/split"');
    // The first chunk is too short to tell what it is: the sidecar waits for more.
    const short = (await exchange("GE", "T /short HTTP/1.1\r\nHost: inventory\r\nConnection: close\r\n\r\n")).text;
    expect(short).toMatch(/^HTTP\/1\.1 200 /);
    expect(short).toContain('"url":"/short"');
  });

  it("tells TLS, HTTP/2, HTTP/1 and garbage apart from the first bytes, and asks for more while it cannot", () => {
    const kinds = Object.fromEntries(
      ["", "G", "GE", "DELETE", "PR", "PRI", "PRI * HTTP/2.0\r\n", "PUT /x HTTP/1.1", "GET / HTTP/1.1", "get / HTTP/1.1", "ABCDEFGHIJKL", "\x16\x03\x01\x02\x00", "GET\t/", "\r\nGET / HTTP/1.1"].map((t) => [t, classify(Buffer.from(t, "latin1"))]),
    );
    expect(kinds).toEqual({
      "": "more",
      G: "more",
      GE: "more",
      DELETE: "more",
      PR: "more",
      PRI: "more",
      "PRI * HTTP/2.0\r\n": "h2c",
      "PUT /x HTTP/1.1": "http1",
      "GET / HTTP/1.1": "http1",
      "get / HTTP/1.1": "garbage",
      ABCDEFGHIJKL: "garbage",
      "\x16\x03\x01\x02\x00": "tls",
      "GET\t/": "garbage",
      "\r\nGET / HTTP/1.1": "garbage",
    });
  });

  it("relays HTTP/2 with prior knowledge (curl)", async () => {
    const r = await exec("curl", ["-sS", "--max-time", "10", "--http2-prior-knowledge", "-H", "dapr-app-id: inventory", "-o", "-", "-w", "\n%{http_version} %{http_code}", `http://127.0.0.1:${outbound}/h2`]);
    expect(r.stdout).toContain('"url":"/h2"');
    expect(r.stdout.trim().endsWith("2 200")).toBe(true);
  });

  it("refuses a TLS handshake (openssl s_client), bytes that are no HTTP, and a connection that says nothing, each counted", async () => {
    const [tlsBefore, garbageBefore, timeoutBefore] = [await refused("tls_on_plaintext_port"), await refused("garbage"), await refused("timeout")];

    const tls = await exec("openssl", ["s_client", "-connect", `127.0.0.1:${outbound}`, "-servername", "inventory"], { input: "" });
    expect(tls.code).not.toBe(0);
    expect(tls.stdout).toContain("no peer certificate available");

    const garbage = await exchange("\x00\x01\x02 not http\r\n\r\n");
    expect(garbage.closedBySidecar).toBe(true);
    expect(garbage.text).toBe("");

    const silent = await exchange(undefined);
    expect(silent.closedBySidecar).toBe(true);
    expect(silent.text).toBe("");

    expect(await refused("tls_on_plaintext_port")).toBe(tlsBefore + 1);
    expect(await refused("garbage")).toBe(garbageBefore + 1);
    expect(await refused("timeout")).toBe(timeoutBefore + 1);
    // The listener still serves after the refusals.
    const after = await exchange("GET /after HTTP/1.1\r\nHost: inventory\r\nConnection: close\r\n\r\n");
    expect(after.text).toContain('"url":"/after"');
  });
});
