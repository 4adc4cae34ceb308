import { readFileSync, writeFileSync } from "node:fs";
import { connect as netConnect, createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isMeshwardError } from "../../src/errors.ts";
import { startEgress, type Egress } from "../../src/proxy/egress.ts";
import { quietTlsLogger } from "../backends/fixtures.ts";
import { createTestPki, type TestPki } from "../helpers/openssl-pki.ts";
import { waitFor } from "../helpers/wait.ts";

// Found by review (egress, LOW-3): startEgress only looked for a BEGIN CERTIFICATE line in caFile.
// OpenSSL skips a block that does not parse, so a truncated or mangled file left an empty trust
// store: the egress started, and every backend was then refused with "unable to verify the first
// certificate", which points at the backend, not at the config. Its log lines also named the
// configured listen address (127.0.0.1:0), not the bound one.
describe("egress caFile and log lines", () => {
  let pki: TestPki;
  const egresses: Egress[] = [];

  beforeAll(() => {
    pki = createTestPki({ name: "egress-config" });
  });
  afterAll(async () => {
    for (const egress of egresses) await egress.close();
    pki?.cleanup();
  });

  const start = (caFile: string, logger = quietTlsLogger) =>
    startEgress({ listen: "127.0.0.1:0", backend: "127.0.0.1:5432", serverName: "db.local", caFile, protocol: "postgres", drainTimeoutMs: 100 }, { logger });

  it.each([
    ["a truncated certificate", (good: string) => `${good.slice(0, Math.floor(good.length / 2))}\n-----END CERTIFICATE-----\n`],
    ["a block whose base64 is not a certificate", () => `-----BEGIN CERTIFICATE-----\n${Buffer.from("no certificate in here, only text").toString("base64")}\n-----END CERTIFICATE-----\n`],
    ["a good root followed by a mangled one", (good: string) => `${good}-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n`],
  ])("refuses at start a caFile holding %s, naming the file", async (what, content) => {
    const caFile = join(pki.dir, `bad-${what.replace(/\W+/g, "-")}.pem`);
    writeFileSync(caFile, content(readFileSync(pki.rootPath, "utf8")));
    const error = await start(caFile).then(
      (egress) => {
        egresses.push(egress);
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(isMeshwardError(error, "E_CONFIG_INVALID"), String(error)).toBe(true);
    expect((error as Error).message).toContain(`caFile ${caFile}`);
    expect((error as Error).message).toMatch(/certificate/i);
    expect((error as Error).message).not.toContain(readFileSync(pki.rootPath, "utf8").split("\n")[1]!); // the file's content is not echoed
  });

  it("takes a caFile of good certificates, and its log lines name the address it is bound to", async () => {
    const lines: string[] = [];
    const record = (line: string) => void lines.push(line);
    // A port with nothing listening: the connection fails with connect_failed, which is logged.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const deadPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const egress = await startEgress(
      { listen: "127.0.0.1:0", backend: `127.0.0.1:${deadPort}`, serverName: "db.local", caFile: pki.rootPath, drainTimeoutMs: 100 },
      { logger: { info: record, warn: record, error: record } },
    );
    egresses.push(egress);
    const app = netConnect({ host: "127.0.0.1", port: Number(egress.address.split(":").pop()) });
    app.on("error", () => undefined);
    app.resume();
    await new Promise<void>((resolve) => app.once("close", () => resolve()));
    await waitFor("the refusal to be logged", () => lines.some((line) => line.includes("connect_failed")));
    expect(egress.address).not.toBe("127.0.0.1:0");
    expect(lines.length).toBeGreaterThan(1);
    for (const line of lines) expect(line).toMatch(new RegExp(`^egress ${egress.address.replace(/\./g, "\\.")} -> 127\\.0\\.0\\.1:${deadPort}: `));
  });
});
