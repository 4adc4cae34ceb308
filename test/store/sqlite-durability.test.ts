import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { openSqliteStore } from "../../src/store/sqlite.ts";

const WRITER = fileURLToPath(new URL("./fixtures/issuance-writer.ts", import.meta.url));
const REPORTED_BEFORE_KILL = 300;

describe("sqlite store durability", () => {
  let dir: string | undefined;
  let kill: (() => void) | undefined;
  afterEach(() => {
    kill?.();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("keeps every write a kill -9'd writer reported as committed, and stays intact", async () => {
    dir = mkdtempSync(join(tmpdir(), "meshward-durability-"));
    const path = join(dir, "ca.db");
    const child = spawn(process.execPath, ["--import", "tsx", WRITER, path], { stdio: ["ignore", "pipe", "pipe"] });
    kill = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    };
    let stdout = "";
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const closed = new Promise<NodeJS.Signals | null>((resolve) => child.on("close", (_code, signal) => resolve(signal)));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (d) => {
        stdout += d;
        if (stdout.split("\n").length > REPORTED_BEFORE_KILL) {
          child.kill("SIGKILL"); // mid-write: the loop never pauses
          resolve();
        }
      });
      child.on("close", () => reject(new Error(`writer exited before the kill:\n${stderr}`)));
    });
    expect(await closed).toBe("SIGKILL");

    // Only complete lines were reported after their commit; a torn last line is ignored.
    const lines = stdout.split("\n").slice(0, -1).map((line) => line.split(" "));
    expect(lines.length).toBeGreaterThanOrEqual(REPORTED_BEFORE_KILL);

    const check = new Database(path, { readonly: true });
    expect(check.pragma("integrity_check", { simple: true })).toBe("ok");
    check.close();

    const store = openSqliteStore(path);
    try {
      await store.migrate();
      const missing: string[] = [];
      for (const [serial] of lines) if ((await store.getIssuance(serial!)) === undefined) missing.push(serial!);
      expect(missing).toEqual([]);
      const revoked = new Set((await store.listRevocations()).map((r) => r.serial));
      for (const [serial] of lines) if (parseInt(serial!, 16) % 3 === 0) expect(revoked.has(serial!), serial).toBe(true);
      const lastCrl = BigInt(lines.at(-1)![1]!);
      expect(await store.nextCrlNumber()).toBeGreaterThan(lastCrl);
    } finally {
      await store.close();
    }
  });
});
