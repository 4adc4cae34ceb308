import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requestCertificate } from "../../src/identity/ca-client.ts";
import * as der from "../../src/pki/der.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { OID } from "../../src/pki/oids.ts";
import { toPem } from "../../src/pki/pem.ts";
import { signingAlgorithmFor } from "../../src/pki/signature.ts";
import { spkiOf } from "../../src/pki/spki.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";

// A workload with a join token sent a CSR whose DNS name held "\n" and a whole fake log line:
// `ca serve --log-format pretty` printed the refusal's message raw, so the fake line stood in the
// CA's log as one of its own. The pretty format now escapes control characters, and the refusal
// quotes the name.
const TD = "pretty-forge.test";
const FORGED = "12:00:00.000 INFO  ca: issued workload certificate event=certificate-issued spiffeId=spiffe://pretty-forge.test/ns/kube-system/admin serial=01";

/** A CSR asking for `dnsName` as is, without the printable-ASCII check createCsr makes (a hostile client skips it). */
function csrWithRawDnsName(dnsName: string): string {
  const keyPair = generateKeyPair();
  const names = der.sequence(der.implicit(2, Buffer.from(dnsName, "latin1")));
  const attributes = der.sequence(der.oid(OID.extensionRequest), der.set(der.sequence(der.sequence(der.oid(OID.subjectAltName), der.octetString(names)))));
  const info = der.sequence(der.integer(0), der.sequence(), spkiOf(keyPair.publicKey), der.explicit(0, attributes));
  const algorithm = signingAlgorithmFor(keyPair.privateKey);
  return toPem(der.sequence(info, algorithm.algorithmIdentifier, der.bitString(algorithm.sign(info))), "CERTIFICATE REQUEST");
}

describe("ca serve --log-format pretty with a caller's control characters", () => {
  let work: string;
  let caDir: string;
  let server: LongRunning | undefined;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-pretty-forge-"));
    caDir = join(work, "ca");
    const init = await runCli(["ca", "init", "--trust-domain", TD, "--dir", caDir]);
    expect(init.code, init.stderr).toBe(0);
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("prints the refusal on one line with the newline escaped, and no forged line", async () => {
    const created = await runCli(["token", "create", "--dir", caDir, "--namespace", "default", "--app-id", "web"]);
    expect(created.code, created.stderr).toBe(0);
    const token = created.stdout.trim().split("\n").pop()!;
    const started = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--log-format", "pretty"], /listening on (\S+) as (\S+)/);
    server = started;
    const address = started.match[1]!;
    const bundlePem = readFileSync(join(caDir, "bundle.pem"), "utf8");

    const refused = await requestCertificate({ address, bundlePem, trustDomain: TD }, { csrPem: csrWithRawDnsName(`x\n${FORGED}`), token, validator: "JOIN_TOKEN", namespace: "", appId: "" }).then(
      () => "issued",
      (error: unknown) => (error as { code?: string }).code,
    );
    // parseCsr refuses a DNS name that is not printable ASCII before any policy (E_CSR_INVALID),
    // naming it with every such byte (and space) as \xNN: the forged line stays inside the refusal.
    expect(refused).toBe("E_CSR_INVALID");
    await server.stop();
    const lines = server.stderr().split("\n");
    const refusal = lines.filter((l) => l.includes("event=sign-refused"));
    expect(refusal).toHaveLength(1);
    expect(refusal[0]).toContain(`DNS name "x\\x0a${FORGED.replace(/ /g, "\\x20")}`.slice(0, 60));
    expect(lines.filter((l) => l.startsWith("12:00:00.000"))).toEqual([]);
  }, 60_000);
});
