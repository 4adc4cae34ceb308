import { generateKeyPairSync } from "node:crypto";
import { SignJWT } from "jose";
import { afterEach, describe, expect, it } from "vitest";
import { requestCertificate } from "../../src/identity/ca-client.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { startTestCa, type TestCa } from "../helpers/ca-server.ts";
import { until } from "../helpers/wait.ts";

// Anyone who reaches the CA API can have a request refused (no certificate needed, a made-up
// token): each refusal was one warn line, ~1,500 lines/s from one connection. The lines now go
// through the same rate limit as the CA's other caller-triggered warnings; the metric still
// counts every refusal, and the left-out lines are reported as a count.
const TD = "sign-refused-log-limit.test";
const REFUSALS = 120;

describe("sign-refused log lines", () => {
  let ca: TestCa | undefined;

  afterEach(async () => {
    await ca?.close();
    ca = undefined;
  });

  it("are rate-limited per reason and address, with the suppressed count logged; every refusal is still counted", async () => {
    ca = await startTestCa(TD);
    const csrPem = await createCsr({ keyPair: generateKeyPair() });
    const refuse = () =>
      requestCertificate({ address: ca!.server.address, bundlePem: ca!.bundlePem, trustDomain: TD }, { csrPem, token: "made-up-token", validator: "JOIN_TOKEN", namespace: "", appId: "" }).then(
        () => "issued",
        (error: unknown) => String((error as { code?: string }).code),
      );
    for (let sent = 0; sent < REFUSALS; sent += 10) {
      const answers = await Promise.all(Array.from({ length: 10 }, refuse));
      for (const answer of answers) expect(answer).toMatch(/E_TOKEN_/);
    }
    const counted = (await ca.server.registry.metrics()).split("\n").filter((l) => l.startsWith('meshward_ca_sign_requests_total{result="refused"'));
    expect(counted.reduce((sum, l) => sum + Number(l.split(" ").pop()), 0)).toBe(REFUSALS);

    const entries = () => ca!.logged.map((l) => JSON.parse(l) as { event?: string; about?: string; suppressed?: number });
    const refusedLines = entries().filter((e) => e.event === "sign-refused");
    expect(refusedLines.length).toBeGreaterThan(0);
    expect(refusedLines.length).toBeLessThan(REFUSALS / 4);
    // The lines left out are reported as a count (the summary after the window, or on the key's next line):
    // Every refusal is accounted for: a line, or in a count of left-out lines.
    const reported = await until("the suppressed count to be logged", 30_000, async () => {
      const all = entries();
      const total = all.filter((e) => (e.event === "log-suppressed" && e.about?.startsWith("sign-refused|")) || (e.event === "sign-refused" && e.suppressed !== undefined)).reduce((sum, e) => sum + (e.suppressed ?? 0), 0);
      const lines = all.filter((e) => e.event === "sign-refused").length;
      return total > 0 && total + lines === REFUSALS ? { total, lines } : undefined;
    });
    expect(reported.total).toBeGreaterThan(REFUSALS / 2);
  }, 60_000);

  // Found while fixing the above: the CA's own failures (sign-failed, error level) are caused by
  // callers too, one per request: while the JWKS cannot be fetched, each JWT sent is one.
  it("sign-failed lines (the CA's own failures, here an unreachable JWKS) are rate-limited too, every failure still counted", async () => {
    // Port 1 on loopback: nothing listens, so every fetch of the keys fails (E_JWKS_UNAVAILABLE).
    ca = await startTestCa(TD, { jwks: { jwksUrl: "https://127.0.0.1:1/jwks.json", issuer: "https://issuer.test", audience: "meshward", mapping: "sentry" } });
    const signer = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const csrPem = await createCsr({ keyPair: generateKeyPair() });
    const fail = async () => {
      const now = Math.floor(Date.now() / 1000);
      const token = await new SignJWT({}).setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer("https://issuer.test").setSubject(`spiffe://${TD}/ns/orders/api`).setAudience("meshward").setIssuedAt(now).setExpirationTime(now + 600).sign(signer);
      return requestCertificate({ address: ca!.server.address, bundlePem: ca!.bundlePem, trustDomain: TD }, { csrPem, token, validator: "JWKS", namespace: "", appId: "" }).then(
        () => "issued",
        (error: unknown) => String((error as { code?: string }).code),
      );
    };
    const FAILURES = 60;
    for (let sent = 0; sent < FAILURES; sent += 10) {
      const answers = await Promise.all(Array.from({ length: 10 }, fail));
      for (const answer of answers) expect(answer).toBe("E_JWKS_UNAVAILABLE");
    }
    const counted = (await ca.server.registry.metrics()).split("\n").filter((l) => l.startsWith('meshward_ca_sign_requests_total{result="error",reason="E_JWKS_UNAVAILABLE"'));
    expect(counted.reduce((sum, l) => sum + Number(l.split(" ").pop()), 0)).toBe(FAILURES);
    const failedLines = ca.logged.map((l) => JSON.parse(l) as { event?: string; level?: number }).filter((e) => e.event === "sign-failed");
    expect(failedLines.length).toBeGreaterThan(0);
    expect(failedLines.length).toBeLessThan(FAILURES / 4);
    for (const line of failedLines) expect(line.level).toBe(50);
  }, 60_000);
});
