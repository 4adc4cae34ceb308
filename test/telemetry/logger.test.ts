import { describe, expect, it } from "vitest";
import { createLogger, type LoggerConfig } from "../../src/telemetry/logger.ts";
import { redactSecrets } from "../../src/telemetry/redact.ts";
import { MeshwardError } from "../../src/errors.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";

function capture(config: Omit<LoggerConfig, "destination"> = { component: "test" }) {
  const lines: string[] = [];
  const logger = createLogger({ ...config, destination: { write: (chunk: string) => lines.push(chunk) } });
  return { logger, lines, records: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>) };
}

// Generated at test time: no key material lives in the repository.
const { privateKey: ecKey } = generateKeyPair();
const PKCS8 = ecKey.export({ type: "pkcs8", format: "pem" }).toString();
const SEC1 = ecKey.export({ type: "sec1", format: "pem" }).toString();
const ENCRYPTED = ecKey.export({ type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: "pw-for-test" }).toString();
const KEY_BODY_LINE = PKCS8.split("\n")[1]!;
const JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy93In0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU";

describe("createLogger", () => {
  it("writes one JSON object per line with level label, component and message", () => {
    const { logger, records } = capture({ component: "sidecar" });
    logger.info({ peer: "127.0.0.1:5000" }, "accepted");
    logger.debug("hidden at info level");
    const [record, ...rest] = records();
    expect(rest).toHaveLength(0);
    expect(record).toMatchObject({ level: "info", component: "sidecar", msg: "accepted", peer: "127.0.0.1:5000" });
    expect(typeof record!.time).toBe("number");
  });

  it("honours the level", () => {
    const { logger, records } = capture({ component: "c", level: "debug" });
    logger.debug("visible");
    expect(records()[0]).toMatchObject({ level: "debug", msg: "visible" });
  });

  it("censors secret-named fields, top level and one level deep", () => {
    const { logger, lines } = capture();
    logger.info(
      {
        key: PKCS8,
        privateKey: "pk-value-1",
        token: "tok-value-2",
        passphrase: "pass-value-3",
        password: "pw-value-4",
        authorization: "Bearer abc.def.ghi-5",
        svid: { token: "nested-token-6", key: "nested-key-7", spiffeId: "spiffe://example.org/ns/default/a" },
        headers: { authorization: "Basic dXNlcjpwYXNz-8" },
      },
      "identity loaded",
    );
    const text = lines.join("");
    for (const secret of [KEY_BODY_LINE, "pk-value-1", "tok-value-2", "pass-value-3", "pw-value-4", "abc.def.ghi-5", "nested-token-6", "nested-key-7", "dXNlcjpwYXNz-8"]) {
      expect(text).not.toContain(secret);
    }
    expect(text).toContain("spiffe://example.org/ns/default/a");
    expect(text).toContain("[REDACTED]");
  });

  it("scrubs private keys and JWTs from messages and from error messages and stacks", () => {
    const { logger, lines } = capture();
    logger.warn(`bad config: ${SEC1}`);
    logger.error({ err: new MeshwardError("E_TOKEN_INVALID", `token ${JWT} refused`) }, "attestation failed");
    const text = lines.join("");
    expect(text).not.toContain(SEC1.split("\n")[1]!);
    expect(text).not.toContain(JWT);
    expect(text).not.toContain(JWT.split(".")[1]!);
    expect(text).toContain("[REDACTED PRIVATE KEY]");
    expect(text).toContain("[REDACTED JWT]");
    expect(text).toContain("E_TOKEN_INVALID");
  });

  it("scrubs private keys, JWTs and bearer values from any string field, not only secret-named ones", () => {
    // Red team: the on-rotate command's output is logged as a field ("output"); a hook that
    // prints the key (cat "$MESHWARD_KEY_FILE", openssl … -text) put it in the log verbatim.
    const { logger, lines, records } = capture();
    logger.error({ event: "on-rotate-finished", output: `unable to load\n${PKCS8}`, nested: { detail: `x ${SEC1}`, list: [ENCRYPTED, `auth Bearer ${JWT}`] } }, "on-rotate command failed");
    const text = lines.join("");
    for (const secret of [KEY_BODY_LINE, SEC1.split("\n")[1]!, ENCRYPTED.split("\n")[1]!, JWT.split(".")[1]!]) expect(text).not.toContain(secret);
    const [record] = records();
    expect(record).toMatchObject({ event: "on-rotate-finished", output: "unable to load\n[REDACTED PRIVATE KEY]\n", nested: { detail: "x [REDACTED PRIVATE KEY]\n" } });
  });

  it("pretty format prints one readable line per record, still redacted", () => {
    const { logger, lines } = capture({ component: "ca", format: "pretty" });
    logger.info({ spiffeId: "spiffe://example.org/ns/default/a", token: "t-secret-1", count: 3 }, "issued");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO  ca: issued spiffeId=spiffe:\/\/example.org\/ns\/default\/a token=\[REDACTED\] count=3\n$/);
    expect(() => JSON.parse(lines[0]!)).toThrow();
  });

  it("pretty format escapes control characters in the message, field values and errors, so a caller's text cannot start a line or drive the terminal", () => {
    const { logger, lines } = capture({ component: "ca", format: "pretty" });
    const forged = "x\r\n12:00:00.000 INFO  ca: issued workload certificate spiffeId=spiffe://example.org/ns/kube-system/admin";
    logger.warn({ appId: forged, nested: { name: "a\u009b31mred\u2028" }, err: new MeshwardError("E_CSR_INVALID", "bad\nname\u001b[2J") }, `refused DNS name ${forged}\u0007`);
    expect(lines).toHaveLength(1);
    const line = lines[0]!;
    expect(line.endsWith("\n")).toBe(true);
    expect(line.slice(0, -1)).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/);
    expect(line).toContain("refused DNS name x\\r\\n12:00:00.000 INFO  ca: issued workload certificate");
    expect(line).toContain("\\x07");
    expect(line).toContain("\\x9b31mred\\u2028");
    expect(line).toContain("\\u001b[2J"); // JSON-quoted err
  });
});

describe("redactSecrets", () => {
  it.each([
    ["PKCS#8", PKCS8],
    ["SEC1 (EC PRIVATE KEY)", SEC1],
    ["encrypted PKCS#8", ENCRYPTED],
  ])("removes a %s PEM block and keeps surrounding text", (_label, pem) => {
    const out = redactSecrets(`before\n${pem}after`);
    expect(out).toBe("before\n[REDACTED PRIVATE KEY]\nafter");
  });

  it("removes a truncated key block (no END line)", () => {
    const truncated = PKCS8.split("\n").slice(0, 2).join("\n");
    expect(redactSecrets(`x ${truncated}`)).toBe("x [REDACTED PRIVATE KEY]");
  });

  it("removes JWTs and bearer values, keeps certificates and ordinary text", () => {
    const cert = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----";
    const out = redactSecrets(`jwt=${JWT} auth: Bearer abcdefgh12345678 ${cert} eyJust-a-word`);
    expect(out).toBe(`jwt=[REDACTED JWT] auth: Bearer [REDACTED] ${cert} eyJust-a-word`);
  });
});
