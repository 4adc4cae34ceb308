import { connect, createServer, type Http2Server } from "node:http2";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { emptyMinuteSeries, type StatusSnapshot } from "../../src/dashboard/feed.ts";
import { createStatusRoutes, statusTokenRequired } from "../../src/dashboard/routes.ts";
import { isMeshwardError } from "../../src/errors.ts";

const snapshot = (): StatusSnapshot => ({
  component: "ca",
  name: "prod.example.com",
  generatedAt: new Date(),
  identities: [{ spiffeId: "spiffe://prod.example.com/ns/meshward-system/meshward-ca", serial: "0a", notBefore: new Date(0), notAfter: new Date(86_400_000), kind: "workload" }],
  roots: [],
  rotations: [],
  handshakeFailures: emptyMinuteSeries(new Date()),
  denials: emptyMinuteSeries(new Date()),
  refusals: [],
  health: { ok: true, checks: {} },
});

const servers: Http2Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
});

/** GET over real HTTP/2 (h2c) against the plain handler, as the CA's node:http2 server would mount it. */
async function h2Get(handler: ReturnType<typeof createStatusRoutes>["handler"], path: string, headers: Record<string, string> = {}) {
  const server = createServer((req, res) => void handler(req, res));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const client = connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  try {
    return await new Promise<{ status: number; body: string; headers: Record<string, unknown> }>((resolve, reject) => {
      const req = client.request({ ":path": path, ...headers });
      let body = "";
      let status = 0;
      let responseHeaders: Record<string, unknown> = {};
      req.on("response", (h) => {
        status = Number(h[":status"]);
        responseHeaders = h;
      });
      req.setEncoding("utf8");
      req.on("data", (chunk: string) => (body += chunk));
      req.on("end", () => resolve({ status, body, headers: responseHeaders }));
      req.on("error", reject);
      req.end();
    });
  } finally {
    client.close();
  }
}

describe("createStatusRoutes as a plain handler on node:http2", () => {
  it("serves the page and the feed, 404s other paths", async () => {
    const { handler } = createStatusRoutes(snapshot);
    const page = await h2Get(handler, "/");
    expect(page.status).toBe(200);
    expect(page.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(page.body).toContain("<title>meshward status</title>");
    expect(page.body).not.toContain("/*SCRIPT*/");
    const feed = await h2Get(handler, "/status.json");
    expect(JSON.parse(feed.body).name).toBe("prod.example.com");
    expect((await h2Get(handler, "/v1/bundle")).status).toBe(404);
  });

  it("enforces the token on HTTP/2 too", async () => {
    const { handler } = createStatusRoutes(snapshot, { token: "0123456789abcdef0123" });
    expect((await h2Get(handler, "/status.json")).status).toBe(401);
    expect((await h2Get(handler, "/status.json", { authorization: "Bearer 0123456789abcdef0123" })).status).toBe(200);
    expect((await h2Get(handler, "/", { authorization: "Basic 0123456789abcdef0123" })).status).toBe(401);
  });

  it("refuses writes with 405 and a provider failure with 503 (no stack, no crash)", async () => {
    const { routes } = createStatusRoutes(() => {
      throw new Error("identity source closed");
    });
    const calls: { status: number; body?: string }[] = [];
    const res = {
      writeHead: (status: number) => calls.push({ status }),
      end: (body?: string) => {
        (calls.at(-1) as { body?: string }).body = body;
      },
    };
    await routes["/status.json"]?.({ url: "/status.json", method: "POST", headers: {} }, res);
    await routes["/status.json"]?.({ url: "/status.json", method: "GET", headers: {} }, res);
    expect(calls.map((c) => c.status)).toEqual([405, 503]);
    expect(JSON.parse(calls[1]?.body ?? "{}")).toEqual({ error: "status unavailable", detail: "identity source closed" });
  });

  it("refuses a token too short to be a secret", () => {
    let error: unknown;
    try {
      createStatusRoutes(snapshot, { token: "short" });
    } catch (e) {
      error = e;
    }
    expect(isMeshwardError(error, "E_STATUS_TOKEN_WEAK")).toBe(true);
  });
});

describe("statusTokenRequired", () => {
  it.each([
    ["127.0.0.1", false],
    ["127.0.0.53", false],
    ["::1", false],
    ["[::1]", false],
    ["localhost", false],
    ["0.0.0.0", true],
    ["::", true],
    ["10.0.0.4", true],
    ["status.example.com", true],
    ["128.0.0.1", true],
  ])("%s → %s", (host, required) => {
    expect(statusTokenRequired(host)).toBe(required);
  });
});
