/**
 * src/store/index.ts loads the PostgreSQL driver (./postgres.ts and pg) when a postgres:// store is
 * opened, not when it is imported: a SQLite store never loads it, and a driver that cannot be
 * loaded is a MeshwardError naming the store (password hidden), not an unexpected error.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, it, vi } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import { openStore } from "../../src/store/index.ts";

const loads = vi.hoisted(() => ({ pg: 0 }));
vi.mock("pg", () => {
  loads.pg++;
  throw new Error("Cannot find package 'pg' (removed in this test)");
});

const dir = mkdtempSync(join(tmpdir(), "meshward-openstore-driver-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it("a SQLite store does not load pg", async () => {
  const store = await openStore(`sqlite:${join(dir, "ca.db")}`);
  await store.migrate();
  await store.close();
  expect(loads.pg).toBe(0);
});

it("a postgres:// store whose driver cannot be loaded is E_STORE_OPEN, password hidden", async () => {
  const error = await openStore("postgres://ca:s3cret@127.0.0.1:1/meshward").then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isMeshwardError(error, "E_STORE_OPEN"), String(error)).toBe(true);
  expect((error as Error).message).toMatch(/^cannot open postgres:\/\/ca:\*\*\*@127\.0\.0\.1:1\/meshward: the PostgreSQL driver \(pg\) could not be loaded: /);
  expect((error as Error).message).not.toContain("s3cret");
  expect(loads.pg).toBe(1);
});
