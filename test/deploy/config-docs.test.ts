import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { caConfigSchema } from "../../src/config/ca.ts";
import { OUTPUT, renderConfigDocs } from "../../scripts/gen-config-docs.ts";

describe("docs/configuration.md", () => {
  it("is exactly what scripts/gen-config-docs.ts generates from the zod schemas today", async () => {
    const expected = await renderConfigDocs();
    const actual = readFileSync(OUTPUT, "utf8");
    // On failure: run `node --import tsx scripts/gen-config-docs.ts` and commit docs/configuration.md.
    expect(actual, "docs/configuration.md is out of date: run `node --import tsx scripts/gen-config-docs.ts`").toBe(expected);
  });

  it("has a row for every CA config field, with its description and default taken from the schema", async () => {
    const text = await renderConfigDocs();
    for (const key of Object.keys(caConfigSchema.shape)) expect(text, key).toContain(`| \`${key}\` |`);
    const listen = text.split("\n").find((line) => line.startsWith("| `listen` |"));
    expect(listen).toBe(`| \`listen\` | string | no | \`"127.0.0.1:8443"\` | ${caConfigSchema.shape.listen.description} |`);
    // durations show the unit form a person writes, not milliseconds
    expect(text).toMatch(/^\| `workloadTtl` \| duration [^|]*\| no \| `24h` \|/m);
    expect(text).toMatch(/^\| `clockSkew` \| duration [^|]*\| no \| `15m` \|/m);
  });

  it("the script's --check mode agrees (exit 0 when up to date)", () => {
    const result = spawnSync(process.execPath, ["--import", "tsx", "scripts/gen-config-docs.ts", "--check"], { cwd: new URL("../../", import.meta.url).pathname, encoding: "utf8", timeout: 30_000 });
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
  });
});
