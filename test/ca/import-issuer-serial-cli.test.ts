import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { caLayout } from "../../src/ca/anchors.ts";
import { expectRefused, runCli } from "../helpers/cli.ts";
import { opensslIssuer as makeIssuer, treeSnapshot } from "../helpers/openssl-issuer.ts";

/*
 * `meshward ca import-issuer` refuses an issuer whose serial equals a retired issuer's, or the
 * current or previous issuer's (review cacon LOW-3). Revocations are matched by serial: the root's
 * CRL lists retired issuers by serial, so an issuer made twice with `openssl x509 -set_serial 1`
 * and imported with --now would be taken for the retired one, and no workload could get an SVID.
 * Real `meshward` processes and real openssl; keys generated in a temp dir; no CA running.
 */
const TD = "import-serial.test";
let work: string;
let dir: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "meshward-import-serial-"));
  dir = join(work, "ca");
  const init = await runCli(["ca", "init", "--trust-domain", TD, "--dir", dir]);
  expect(init.code, init.stderr).toBe(0);
}, 60_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

/** An issuer signed by the CA's root with openssl and a fixed serial, as many recipes make one. */
const opensslIssuer = (name: string, serial: string) => makeIssuer(work, TD, name, serial, { cert: caLayout(dir).rootCert, key: caLayout(dir).rootKey });

const snapshot = treeSnapshot;

const importIssuer = (issuer: { cert: string; key: string }, now: boolean) => runCli(["ca", "import-issuer", "--dir", dir, "--issuer-cert", issuer.cert, "--issuer-key", issuer.key, ...(now ? ["--now"] : [])]);
const fingerprintOf = (file: string) => new X509Certificate(readFileSync(file)).fingerprint256;

describe("meshward ca import-issuer refuses an issuer whose serial is already used", () => {
  it("same serial as a retired issuer, as the current one, as the previous one: refused naming both serials, nothing changed; a new serial is accepted", async () => {
    const layout = caLayout(dir);
    // A (serial 1) replaces the generated issuer at once; C (serial 2) then retires A.
    const a = opensslIssuer("a", "1");
    const first = await importIssuer(a, true);
    expect(first.code, first.stderr).toBe(0);
    const c = opensslIssuer("c", "2");
    const second = await importIssuer(c, true);
    expect(second.code, second.stderr).toBe(0);
    expect(readFileSync(layout.retiredIssuers, "utf8")).toContain("BEGIN CERTIFICATE");

    // B, made with -set_serial 1 again: A's serial, on the root's CRL.
    const before = snapshot(dir);
    const b = opensslIssuer("b", "1");
    for (const now of [true, false]) {
      const refused = await importIssuer(b, now);
      expectRefused(refused, "E_IMPORT_INVALID", /has serial 01, the same as the retired issuer .*".*CN=issuer a" \(serial 01\).*re-issue it with a random serial/s);
    }
    expect(snapshot(dir)).toEqual(before);

    // D, -set_serial 0x02: the current issuer C's serial (it would be taken for C once C is retired).
    const d = opensslIssuer("d", "0x02");
    expectRefused(await importIssuer(d, false), "E_IMPORT_INVALID", /has serial 02, the same as the current issuer .*".*CN=issuer c" \(serial 02\).*re-issue it with a random serial/s);
    expect(snapshot(dir)).toEqual(before);

    // E (serial 3) is accepted, C kept as the previous issuer; F with serial 2 then clashes with it.
    const e = opensslIssuer("e", "3");
    const kept = await importIssuer(e, false);
    expect(kept.code, kept.stderr).toBe(0);
    expect(fingerprintOf(layout.issuerCert)).toBe(e.fingerprint);
    expect(fingerprintOf(layout.previousIssuerCert)).toBe(c.fingerprint);
    const afterE = snapshot(dir);
    const f = opensslIssuer("f", "2");
    expectRefused(await importIssuer(f, true), "E_IMPORT_INVALID", /has serial 02, the same as the previous issuer \(issuer\.prev\.pem\) .*".*CN=issuer c" \(serial 02\)/s);
    expect(snapshot(dir)).toEqual(afterE);

    // A retried import of the issuer in place is no clash.
    const again = await importIssuer(e, false);
    expect(again.code, again.stderr).toBe(0);
  }, 120_000);
});
