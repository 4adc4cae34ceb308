import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { caLayout } from "../../src/ca/anchors.ts";
import { expectRefused, runCli } from "../helpers/cli.ts";
import { opensslIssuer as makeIssuer, treeSnapshot } from "../helpers/openssl-issuer.ts";

/*
 * `meshward ca rotate-root activate --issuer-cert …` refuses an issuer whose serial equals a
 * retired issuer's, the current issuer's or the previous one's (assertIssuerSerialFree in
 * src/ca/rotation.ts, as `ca import-issuer` does: see import-issuer-serial-cli.test.ts).
 * Revocations are matched by serial, so such an issuer would be taken for the other one. The CA
 * directory is left byte for byte as it was. Real `meshward` processes and real openssl; keys
 * generated in a temp dir; no CA running.
 */
const TD = "activate-serial.test";
let work: string;
let dir: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "meshward-activate-serial-"));
  dir = join(work, "ca");
  const init = await runCli(["ca", "init", "--trust-domain", TD, "--dir", dir]);
  expect(init.code, init.stderr).toBe(0);
}, 60_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

const opensslIssuer = (name: string, serial: string, root: { cert: string; key: string }) => makeIssuer(work, TD, name, serial, root);

const snapshot = treeSnapshot;

const fingerprintOf = (file: string) => new X509Certificate(readFileSync(file)).fingerprint256;

describe("meshward ca rotate-root activate --issuer-cert refuses an issuer whose serial is already used", () => {
  it("same serial as a retired issuer, the current one, the previous one: refused naming both serials, the CA directory unchanged; a new serial is activated", async () => {
    const layout = caLayout(dir);
    const currentRoot = { cert: layout.rootCert, key: layout.rootKey };
    const importIssuer = (issuer: { cert: string; key: string }, now: boolean) => runCli(["ca", "import-issuer", "--dir", dir, "--issuer-cert", issuer.cert, "--issuer-key", issuer.key, ...(now ? ["--now"] : [])]);
    // A (serial 1) retired by C (serial 2, --now); E (serial 3) then current, C kept as previous.
    for (const [name, serial, now] of [["a", "1", true], ["c", "2", true], ["e", "3", false]] as const) {
      const imported = await importIssuer(opensslIssuer(name, serial, currentRoot), now);
      expect(imported.code, imported.stderr).toBe(0);
    }
    expect(readFileSync(layout.retiredIssuers, "utf8")).toContain("BEGIN CERTIFICATE");
    expect(new X509Certificate(readFileSync(layout.issuerCert)).serialNumber).toBe("03");
    expect(new X509Certificate(readFileSync(layout.previousIssuerCert)).serialNumber).toBe("02");

    const prepared = await runCli(["ca", "rotate-root", "prepare", "--dir", dir]);
    expect(prepared.code, prepared.stderr).toBe(0);
    const nextRoot = { cert: layout.nextRootCert, key: layout.nextRootKey };
    const activate = (issuer: { cert: string; key: string }) => runCli(["ca", "rotate-root", "activate", "--dir", dir, "--issuer-cert", issuer.cert, "--issuer-key", issuer.key]);

    const before = snapshot(dir);
    const clashes = [
      ["b", "1", /has serial 01, the same as the retired issuer .*".*CN=issuer a" \(serial 01\).*re-issue it with a random serial/s],
      ["d", "0x03", /has serial 03, the same as the current issuer .*".*CN=issuer e" \(serial 03\).*re-issue it with a random serial/s],
      ["f", "2", /has serial 02, the same as the previous issuer \(issuer\.prev\.pem\) .*".*CN=issuer c" \(serial 02\).*re-issue it with a random serial/s],
    ] as const;
    for (const [name, serial, message] of clashes) {
      expectRefused(await activate(opensslIssuer(name, serial, nextRoot)), "E_IMPORT_INVALID", message);
      expect(snapshot(dir)).toEqual(before);
    }

    // G (serial 4, under the new root) is activated: the refusals were the serials, not the issuers.
    const g = opensslIssuer("g", "4", nextRoot);
    const activated = await activate(g);
    expect(activated.code, activated.stderr).toBe(0);
    expect(fingerprintOf(layout.issuerCert)).toBe(g.fingerprint);
  }, 120_000);
});
