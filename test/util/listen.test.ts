import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { listenOn } from "../../src/util/listen.ts";
import { runCli } from "../helpers/cli.ts";

describe("listenOn", () => {
  let busy: Server;
  let port: number;
  let work: string;

  beforeAll(async () => {
    busy = createServer();
    port = (await listenOn(busy, { host: "127.0.0.1", port: 0 }, "the test listener")).port;
    work = mkdtempSync(join(tmpdir(), "meshward-listen-"));
  });
  afterAll(() => {
    busy?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it("resolves with the bound address for port 0", async () => {
    const server = createServer();
    const at = await listenOn(server, { host: "127.0.0.1", port: 0 }, "x");
    expect(at.host).toBe("127.0.0.1");
    expect(at.port).toBeGreaterThan(0);
    server.close();
  });

  it("says what could not listen, where, and what to do when the port is taken", async () => {
    await expect(listenOn(createServer(), { host: "127.0.0.1", port }, "the inbound listener")).rejects.toMatchObject({
      code: "E_LISTEN_FAILED",
      message: `the inbound listener cannot listen on 127.0.0.1:${port}: the address is already in use: another process listens there (pick another port, or 0 for any free one)`,
    });
  });

  it("meshward ca serve exits 1 with that message for a taken API or status port, no stack trace", async () => {
    await initAnchors({ dir: join(work, "ca"), trustDomain: "listen.test", now: new Date() });
    const ca = await runCli(["ca", "serve", "--dir", join(work, "ca"), "--listen", `127.0.0.1:${port}`], { timeoutMs: 20_000 });
    expect(ca.code).toBe(1);
    expect(ca.stderr).toBe(`meshward: the CA API cannot listen on 127.0.0.1:${port}: the address is already in use: another process listens there (pick another port, or 0 for any free one) [E_LISTEN_FAILED]\n`);
    const status = await runCli(["ca", "serve", "--dir", join(work, "ca"), "--listen", "127.0.0.1:0", "--status", `127.0.0.1:${port}`], { timeoutMs: 20_000 });
    expect(status.code).toBe(1);
    expect(status.stderr).toMatch(/the status port cannot listen on .*already in use.*\[E_LISTEN_FAILED\]\n$/);
    expect(status.stderr).not.toMatch(/\n\s+at /);
  });
});
