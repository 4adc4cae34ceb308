import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.ts";

/**
 * Red team: `meshward status --status-token TOKEN` put the status token on the command line,
 * where every local user reads it (ps, /proc/PID/cmdline) while the command runs; the servers
 * already take theirs from a file or the environment only. The client now does the same:
 * --status-token-file FILE or MESHWARD_STATUS_TOKEN, and --status-token is refused with the way
 * out. The endpoint is a small node:http server that answers the status feed only with the
 * right bearer token: what is tested is the CLI's side (which token it sends, and where it takes
 * it from), and a full identity with a token would add a CA without testing more of it.
 */
const TOKEN = "0123456789abcdef0123456789abcdef";
const FEED = JSON.stringify({
  component: "identity",
  name: "orders",
  identities: [{ spiffeId: "spiffe://status.test/ns/shop/orders", serial: "01", notAfter: new Date(Date.now() + 86_400_000).toISOString(), kind: "workload" }],
  rotations: [],
  health: { ok: true, checks: {} },
});

let dir: string;
let server: Server;
let url: string;
const seen: (string | undefined)[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshward-status-token-"));
  server = createServer((req, res) => {
    seen.push(req.headers.authorization);
    const ok = req.headers.authorization === `Bearer ${TOKEN}`;
    res.writeHead(ok ? 200 : 401, { "content-type": "application/json" });
    res.end(ok ? FEED : "{}");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

describe("meshward status: the status token from a file or the environment, never the command line", () => {
  it("reads the token from --status-token-file, or MESHWARD_STATUS_TOKEN", async () => {
    const file = join(dir, "status-token");
    writeFileSync(file, `${TOKEN}\n`);
    chmodSync(file, 0o600);
    const fromFile = await runCli(["status", "--status-url", url, "--status-token-file", file, "--json"], { env: { MESHWARD_STATUS_TOKEN: "" } });
    expect(fromFile.code, fromFile.stdout + fromFile.stderr).toBe(0);
    expect(JSON.parse(fromFile.stdout)).toEqual([expect.objectContaining({ identity: "spiffe://status.test/ns/shop/orders", healthy: true })]);
    const fromEnv = await runCli(["status", "--status-url", url, "--json"], { env: { MESHWARD_STATUS_TOKEN: TOKEN } });
    expect(fromEnv.code, fromEnv.stdout + fromEnv.stderr).toBe(0);
    // Without a token the endpoint answers 401, and the row says so.
    const without = await runCli(["status", "--status-url", url], { env: { MESHWARD_STATUS_TOKEN: "" } });
    expect(without.code).toBe(1);
    expect(without.stdout).toMatch(/unreachable: HTTP 401/);
  });

  it("refuses --status-token on the command line before sending anything, naming the alternatives", async () => {
    const before = seen.length;
    const r = await runCli(["status", "--status-url", url, "--status-token", TOKEN]);
    expect(r.code).toBe(2); // a usage error (E_USAGE)
    expect(r.stderr).toMatch(/--status-token puts the token in the process list.*--status-token-file FILE or MESHWARD_STATUS_TOKEN.*\[E_USAGE\]/);
    expect(r.stderr).not.toContain(TOKEN);
    expect(r.stderr).not.toMatch(/\n\s+at |unexpected error/);
    expect(seen.length).toBe(before);
  });

  it("a token file that cannot be read, or is empty, is refused with its name", async () => {
    const missing = await runCli(["status", "--status-url", url, "--status-token-file", join(dir, "nope")]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot read status token file .*nope: ENOENT.*\[E_FILE_MISSING\]/);
    const empty = join(dir, "empty");
    writeFileSync(empty, "\n", { mode: 0o600 });
    const r = await runCli(["status", "--status-url", url, "--status-token-file", empty]);
    expect(r.code).toBe(2); // a usage error (E_USAGE)
    expect(r.stderr).toMatch(/status token file .*empty is empty.*\[E_USAGE\]/);
  });
});
