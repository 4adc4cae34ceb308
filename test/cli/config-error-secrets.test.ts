import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shownValue } from "../../src/errors.ts";
import { runCli } from "../helpers/cli.ts";

// Review atrest (note): a config error printed the rejected value in full, so a private key
// pasted into a duration field (a YAML block scalar) was echoed to the terminal and the logs.
let dir: string;
let keyPem: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "meshward-config-secrets-"));
  keyPem = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Every 20-character piece of the key's base64 body: none may appear in the output. */
function keyPieces(pem: string): string[] {
  const body = pem.split("\n").filter((line) => line !== "" && !line.startsWith("-----")).join("");
  const pieces: string[] = [];
  for (let i = 0; i + 20 <= body.length; i += 10) pieces.push(body.slice(i, i + 20));
  return pieces;
}

function expectNoKey(output: string): void {
  expect(output).not.toContain("-----BEGIN");
  expect(output).not.toContain("PRIVATE KEY");
  for (const piece of keyPieces(keyPem)) expect(output, `key material ${piece} in the output`).not.toContain(piece);
}

const indented = (pem: string) => pem.trimEnd().split("\n").map((line) => `  ${line}`).join("\n");

describe("config errors never echo a pasted key or a long value", { timeout: 60_000 }, () => {
  it("ca serve: a private key pasted into workloadTtl is refused without printing it", async () => {
    const config = join(dir, "ca-key.yaml");
    writeFileSync(config, `listen: 127.0.0.1:0\nworkloadTtl: |\n${indented(keyPem)}\n`);
    const r = await runCli(["ca", "serve", "--dir", join(dir, "no-ca"), "--config", config]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/ca-key\.yaml:2:\d+: workloadTtl: invalid workload TTL \(a PEM block, not shown\)/);
    expect(r.stderr).toContain("[E_CONFIG_INVALID]");
    expectNoKey(r.stdout + r.stderr);
  });

  it("sidecar: a private key pasted into a timeout and into an address is refused without printing it", async () => {
    for (const [name, yaml] of [
      ["idle", `limits:\n  idleTimeout: |\n${indented(indented(keyPem))}\n`],
      ["app", ""],
    ] as const) {
      const config = join(dir, `sidecar-${name}.yaml`);
      const app = name === "app" ? `app: |\n${indented(keyPem)}\n` : "app: 127.0.0.1:1\n";
      writeFileSync(config, `appId: web\nca: 127.0.0.1:1\nbundle: /nonexistent\n${app}${yaml}`);
      const r = await runCli(["sidecar", "--config", config, "--token", "never-sent-0123456789"]);
      expect(r.code, name).toBe(1);
      expect(r.stderr, name).toContain("E_");
      expectNoKey(r.stdout + r.stderr);
    }
  });

  it("a long value is shown cut to 40 characters, with its length", async () => {
    const long = `9${"x".repeat(199)}`;
    const config = join(dir, "ca-long.yaml");
    writeFileSync(config, `listen: 127.0.0.1:0\nworkloadTtl: ${long}\n`);
    const r = await runCli(["ca", "serve", "--dir", join(dir, "no-ca"), "--config", config]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`invalid workload TTL "${long.slice(0, 40)}"… (200 characters)`);
    expect(r.stderr).not.toContain(long.slice(0, 41));
  });

  it("a flag's value is held to the same rule (--workload-ttl with a key)", async () => {
    const r = await runCli(["ca", "serve", "--dir", join(dir, "no-ca"), "--workload-ttl", keyPem]);
    expect(r.code).not.toBe(0);
    expectNoKey(r.stdout + r.stderr);
  });

  it("shownValue: short values quoted as before, PEM blocks never, long ones cut", () => {
    expect(shownValue("30x")).toBe('"30x"');
    expect(shownValue(5)).toBe("5");
    expect(shownValue(keyPem)).toBe("(a PEM block, not shown)");
    expect(shownValue(`  ${keyPem}`)).toBe("(a PEM block, not shown)");
    expect(shownValue("a".repeat(41))).toBe(`"${"a".repeat(40)}"… (41 characters)`);
    expect(shownValue(["-----BEGIN X-----"])).toBe("(a PEM block, not shown)");
  });
});
