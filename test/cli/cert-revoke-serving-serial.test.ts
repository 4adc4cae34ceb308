import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:tls";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { expectRefused, runCli } from "../helpers/cli.ts";

/*
 * `meshward cert revoke --serial S` with S the serial of the CA's own serving certificate (made in
 * memory, recorded nowhere, so not an issuance record): refused with E_CERT_UNKNOWN, whose message
 * now says that a serving certificate is not revocable this way and that a leaked serving key is
 * handled with `meshward ca rotate-issuer --now` (docs/rotation.md, "Issuer rotation"). Nothing is
 * stored. A real CA on 127.0.0.1:0 and a real `meshward` process.
 */
let work: string;
let dir: string;
let server: CaServer;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "meshward-revoke-serving-"));
  dir = join(work, "ca");
  await initAnchors({ dir, trustDomain: "revoke-serving.test", now: new Date() });
  server = await startCaServer({ dir, config: caConfigSchema.parse({ listen: "127.0.0.1:0", signingWorkers: 0 }), logger: pino({ level: "silent" }) });
}, 60_000);

afterAll(async () => {
  try {
    await server?.close();
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

/** The serial of the certificate the CA serves with, as a TLS client sees it. */
function servingSerial(address: string): Promise<string> {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, rejectUnauthorized: false, ALPNProtocols: ["h2"] }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      resolve(serial);
    });
    socket.on("error", reject);
  });
}

describe("meshward cert revoke --serial of the CA's serving certificate", () => {
  it("is refused with E_CERT_UNKNOWN naming rotate-issuer --now, and nothing is revoked", async () => {
    const serial = await servingSerial(server.address);
    expect(serial).toMatch(/^[0-9A-F]+$/);
    const refused = await runCli(["cert", "revoke", "--dir", dir, "--serial", serial]);
    expectRefused(refused, "E_CERT_UNKNOWN", /no certificate with serial [0-9A-F]+ was issued by this CA/);
    expect(refused.stderr).toMatch(/A CA's own serving certificate is not revocable this way: if its key may have leaked, run 'meshward ca rotate-issuer --now'.*docs\/rotation\.md, "Issuer rotation"/s);
    expect(refused.stdout).toBe("");
    expect(await server.store.listRevocations()).toEqual([]);
  }, 60_000);
});
