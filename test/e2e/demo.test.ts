import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCli, startCli } from "../helpers/cli.ts";

// The README's main command, end to end: real CA, real sidecar processes, a Python app,
// an SDK service; then the logs of the whole run are searched for secrets.
describe("meshward demo --once", () => {
  let kept: string | undefined;
  afterAll(() => {
    if (kept) rmSync(kept, { recursive: true, force: true });
  });

  it("shows mTLS working, a policy denial and plaintext refused, and logs no secret", async () => {
    const result = await runCli(["demo", "--once", "--keep"], { timeoutMs: 90_000 });
    kept = /kept (\S+)/.exec(result.stdout)?.[1];
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/✓ 1\. mTLS between services/);
    expect(result.stdout).toMatch(/URI=spiffe:\/\/demo\.local\/ns\/shop\/orders/);
    expect(result.stdout).toMatch(/✓ 2\. a call the access policy denies\n.*DELETE \/items\/42 on inventory: 403 E_POLICY_DENIED/);
    expect(result.stdout).toMatch(/✓ 3\. plaintext refused\n.*: 400 E_MTLS_REQUIRED/);
    expect(result.stdout).toMatch(/All checks passed/);

    expect(kept).toBeDefined();
    const logDir = join(kept as string, "logs");
    const logs = readdirSync(logDir).map((f) => readFileSync(join(logDir, f), "utf8"));
    expect(logs.join("").length).toBeGreaterThan(500); // the components did log
    for (const text of logs) {
      expect(text).not.toMatch(/PRIVATE KEY/);
      expect(text).not.toMatch(/mwjt_[A-Za-z0-9_-]{20,}/); // join tokens
      expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\./); // JWTs
    }
    // Refusals are logged with the peer and reason.
    expect(logs.join("\n")).toMatch(/E_MTLS_REQUIRED|plaintext/);
  }, 120_000);

  it("without python3 on PATH says what to install (exit 1, no stack trace)", async () => {
    const empty = mkdtempSync(join(tmpdir(), "meshward-demo-path-"));
    try {
      const result = await runCli(["demo", "--once"], { env: { PATH: empty }, timeoutMs: 90_000 });
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/could not start a demo process: spawn python3 ENOENT: python3 is not installed or not on PATH \(the demo's inventory app is a Python program; install python3/);
      expect(result.stderr).toContain("[E_DEMO]");
      expect(result.stderr).not.toMatch(/\n\s+at /);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  }, 120_000);
});

// `meshward demo` without --once: the README's main command as a user runs it.
describe("meshward demo (left running)", () => {
  it("prints live status pages for the CA and both sidecars, and stops everything on Ctrl-C", async () => {
    const demo = await startCli(["demo"], /Everything keeps running[\s\S]*logs:\s+\S+\n/, { timeoutMs: 90_000 });
    try {
      const pages = [...demo.stdout().matchAll(/status page \(([^)]+)\):\s+(http:\/\/\S+)\//g)].map((m) => ({ who: m[1] as string, url: m[2] as string }));
      expect(pages.map((p) => p.who)).toEqual(["CA", "orders' sidecar", "inventory's sidecar"]);
      // The lines under "Look around:" read as two columns: every value starts in the same column.
      const look = demo.stdout().split("Look around:\n")[1]?.split("\n").filter((l) => /^ {2}\S[^:]*: /.test(l)) ?? [];
      expect(look.map((l) => l.slice(0, l.indexOf(":") + 1).trim())).toEqual(["status page (CA):", "status page (orders' sidecar):", "status page (inventory's sidecar):", "call orders:", "CA health:", "logs:"]);
      expect(new Set(look.map((l) => /^ {2}[^:]*: +/.exec(l)?.[0].length)).size, look.join("\n")).toBe(1);
      const feeds = await Promise.all(pages.map(async (p) => (await (await fetch(`${p.url}/status.json`)).json()) as { component: string; identities: { spiffeId: string }[]; health: { ok: boolean } }));
      expect(feeds.map((f) => f.component)).toEqual(["ca", "sidecar", "sidecar"]);
      expect(feeds[1]?.identities[0]?.spiffeId).toBe("spiffe://demo.local/ns/shop/orders");
      expect(feeds[2]?.identities[0]?.spiffeId).toBe("spiffe://demo.local/ns/shop/inventory");
      expect(feeds.every((f) => f.health.ok)).toBe(true);
      // The denied call and the plaintext attempt of the checks show up on inventory's page.
      const inventory = (await (await fetch(`${pages[2]!.url}/status.json`)).json()) as { refusals: { reason: string }[] };
      expect(inventory.refusals.map((r) => r.reason)).toEqual(expect.arrayContaining(["plaintext", expect.stringMatching(/^policy denied/)]));

      expect(await demo.stop("SIGINT")).toBe(0);
      for (const p of pages) await expect(fetch(`${p.url}/status.json`)).rejects.toThrow();
    } finally {
      await demo.stop("SIGKILL");
    }
  }, 120_000);
});
