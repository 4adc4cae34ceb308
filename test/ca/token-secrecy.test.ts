import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { exportJWK, generateKeyPair as joseKeyPair, SignJWT } from "jose";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { requestCertificate, type CertificateRequest } from "../../src/identity/ca-client.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";

// Tokens are credentials: a join token is a bearer secret until spent (only its SHA-256 is
// stored), a service-account JWT is one until it expires. Whatever a request does, accepted or
// refused by any validator, no token may appear in what the CA writes or shows: its log (at trace
// level), the message the client gets back, /metrics, or the status page's refusals.
const TD = "token-secrecy.test";

describe("no token in the CA's logs, errors, metrics or status page", () => {
  let work: string;
  let server: CaServer;
  let bundlePem: string;
  const log: string[] = [];
  const sent: string[] = [];
  const answers: string[] = [];
  let jwtKey: Awaited<ReturnType<typeof joseKeyPair>>["privateKey"];

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-token-secrecy-"));
    await initAnchors({ dir: join(work, "ca"), trustDomain: TD, now: new Date() });
    const jwt = await joseKeyPair("ES256");
    jwtKey = jwt.privateKey;
    writeFileSync(join(work, "jwks.json"), JSON.stringify({ keys: [{ ...(await exportJWK(jwt.publicKey)), kid: "k1", alg: "ES256" }] }));
    const sink = new Writable({
      write(chunk, _encoding, done) {
        log.push(String(chunk));
        done();
      },
    });
    server = await startCaServer({
      dir: join(work, "ca"),
      config: caConfigSchema.parse({ listen: "127.0.0.1:0", status: "127.0.0.1:0", signingWorkers: 0, jwks: { jwksFile: join(work, "jwks.json"), issuer: "https://issuer.test", audience: "meshward" } }),
      logger: pino({ level: "trace" }, sink),
    });
    bundlePem = readFileSync(join(work, "ca", "bundle.pem"), "utf8");
  });
  afterAll(async () => {
    await server?.close();
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  const joinToken = async (opts: { ttlMs?: number } = {}) => {
    const { token } = await issueJoinToken(server.store, { spiffeId: `spiffe://${TD}/ns/orders/api`, ttlMs: opts.ttlMs ?? 60_000 });
    sent.push(token);
    return token;
  };
  const jwt = async (audience: string) => {
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ "kubernetes.io": { namespace: "orders", serviceaccount: { name: "api" } } })
      .setProtectedHeader({ alg: "ES256", kid: "k1" })
      .setIssuer("https://issuer.test")
      .setAudience(audience)
      .setIssuedAt(now)
      .setExpirationTime(now + 600)
      .sign(jwtKey);
    sent.push(token);
    return token;
  };
  const ask = async (token: string, request: Partial<CertificateRequest> = {}) => {
    try {
      const signed = await requestCertificate({ address: server.address, bundlePem, trustDomain: TD }, { csrPem: await createCsr({ keyPair: generateKeyPair() }), token, validator: "JOIN_TOKEN", namespace: "", appId: "", ...request });
      return signed.certChainPem.length > 0 ? "signed" : "empty";
    } catch (error) {
      answers.push(`${(error as Error).message} ${JSON.stringify(error)}`);
      return (error as { code?: string }).code ?? "error";
    }
  };

  it("keeps every token out, accepted or refused, whatever the validator", async () => {
    const spent = await joinToken();
    expect(await ask(spent)).toBe("signed");
    expect(await ask(spent)).toBe("E_TOKEN_USED");
    expect(await ask(await joinToken(), { appId: "payments" })).toBe("E_IDENTITY_MISMATCH");
    expect(await ask(await joinToken({ ttlMs: -1000 }))).toBe("E_TOKEN_EXPIRED");
    expect(await ask(await joinToken(), { csrPem: "not a csr" })).toBe("E_CSR_INVALID");
    const unknown = `mwjt_${Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url")}`;
    sent.push(unknown);
    expect(await ask(unknown)).toBe("E_TOKEN_UNKNOWN");
    const overlong = `mwjt_${"Q".repeat(400)}`;
    sent.push(overlong);
    expect(await ask(overlong)).toBe("E_TOKEN_INVALID");
    expect(await ask(await jwt("meshward"), { validator: "JWKS" })).toBe("signed");
    expect(await ask(await jwt("someone-else"), { validator: "JWKS" })).toBe("E_TOKEN_AUDIENCE");
    expect(await ask(await jwt("meshward"), { validator: "JOIN_TOKEN" })).toBe("E_TOKEN_INVALID");
    expect(await ask(await joinToken(), { validator: "SVID" })).toBe("E_ATTESTATION_NO_CERT");

    const metrics = await server.registry.metrics();
    const feed = await (await fetch(`${server.status!.url}/status.json`)).text();
    const statusMetrics = await (await fetch(`${server.status!.url}/metrics`)).text();
    // Control: what is searched holds the refusals and the issuances.
    const written = log.join("");
    expect(written).toMatch(/"event":"sign-refused".*"reason":"E_TOKEN_USED"/);
    expect(written).toMatch(/"event":"certificate-issued"/);
    expect(feed).toContain("E_TOKEN_AUDIENCE");
    expect(answers.join("\n")).toContain("E_TOKEN_EXPIRED");
    for (const token of sent) {
      // The token, or any 24-character piece of it (a JWT's signature, a join token's secret).
      const pieces = [token, ...Array.from({ length: Math.floor(token.length / 24) }, (_, i) => token.slice(i * 24, i * 24 + 24))].filter((p) => !/^(Q+|mwjt_Q+|eyJ[A-Za-z0-9]{0,21})$/.test(p));
      for (const [where, text] of [["log", written], ["client errors", answers.join("\n")], ["metrics", metrics + statusMetrics], ["status page", feed]] as const) {
        for (const piece of pieces) expect(text.includes(piece), `${where} holds a piece of a token: ${piece}`).toBe(false);
      }
    }
  });
});
