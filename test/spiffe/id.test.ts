import { describe, expect, it } from "vitest";
import { formatWorkloadId, isSpiffeId, parseSpiffeId, parseTrustDomain, parseWorkloadId } from "../../src/spiffe/id.ts";
import { isMeshwardError } from "../../src/errors.ts";

function refusal(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (error) {
    if (isMeshwardError(error)) return { code: error.code, message: error.message };
    throw error;
  }
  throw new Error("expected a refusal, got none");
}

describe("parseSpiffeId accepts valid IDs", () => {
  it.each([
    ["spiffe://example.org", "example.org", ""],
    ["spiffe://example.org/ns/default/orders", "example.org", "/ns/default/orders"],
    ["spiffe://a-b_c.9/Path.With-All_Chars/09", "a-b_c.9", "/Path.With-All_Chars/09"],
  ])("%s", (input, td, path) => {
    const id = parseSpiffeId(input);
    expect(id.trustDomain).toBe(td);
    expect(id.path).toBe(path);
    expect(id.toString()).toBe(input);
  });

  it("accepts an ID of exactly 2048 bytes", () => {
    const prefix = "spiffe://td/";
    const id = prefix + "a".repeat(2048 - prefix.length);
    expect(parseSpiffeId(id).toString()).toHaveLength(2048);
  });
});

describe("parseSpiffeId refuses every rule of the spec", () => {
  it.each([
    ["empty", "", /empty/],
    ["wrong scheme", "https://example.org/a", /spiffe:\/\//],
    ["uppercase scheme", "SPIFFE://example.org/a", /lowercase spiffe/],
    ["no trust domain", "spiffe:///a", /trust domain is missing/],
    ["uppercase trust domain", "spiffe://Example.org/a", /lowercase/],
    ["bad trust domain char", "spiffe://exa$mple.org/a", /trust domain may hold/],
    ["port", "spiffe://example.org:8080/a", /port/],
    ["user info", "spiffe://user@example.org/a", /user info/],
    ["query", "spiffe://example.org/a?x=1", /query/],
    ["fragment", "spiffe://example.org/a#frag", /fragment/],
    ["empty segment", "spiffe://example.org/a//b", /empty path segments/],
    ["trailing slash", "spiffe://example.org/a/", /trailing slash/],
    ["dot segment", "spiffe://example.org/a/./b", /'\.' and '\.\.'/],
    ["dot-dot segment", "spiffe://example.org/a/../b", /'\.' and '\.\.'/],
    ["percent-encoded char", "spiffe://example.org/a%20b", /may hold only/],
    ["space", "spiffe://example.org/a b", /may hold only/],
    ["too long", "spiffe://td/" + "a".repeat(2048), /2048 bytes/],
  ])("%s", (_name, input, reason) => {
    const r = refusal(() => parseSpiffeId(input));
    expect(r.code).toBe("E_SPIFFE_ID_INVALID");
    expect(r.message).toMatch(reason);
    expect(isSpiffeId(input)).toBe(false);
  });
});

describe("trust domains", () => {
  it("accepts a valid name", () => expect(parseTrustDomain("prod.example-1_x")).toBe("prod.example-1_x"));
  it.each([
    ["", /empty/],
    ["Example.org", /lowercase/],
    ["spiffe://example.org", /without spiffe/],
    ["example.org:443", /port/],
    ["a/b", /path/],
    ["a b", /only a-z/],
  ])("refuses %j", (input, reason) => {
    const r = refusal(() => parseTrustDomain(input));
    expect(r.code).toBe("E_TRUST_DOMAIN_INVALID");
    expect(r.message).toMatch(reason);
  });
});

describe("workload IDs (Dapr form)", () => {
  it("formats and parses round trip", () => {
    const id = formatWorkloadId({ trustDomain: "cluster.local", namespace: "orders", appId: "api" });
    expect(id).toBe("spiffe://cluster.local/ns/orders/api");
    expect(parseWorkloadId(id)).toEqual({ trustDomain: "cluster.local", namespace: "orders", appId: "api" });
  });
  it.each([
    ["spiffe://td/orders/api"],
    ["spiffe://td/ns/orders"],
    ["spiffe://td/ns/orders/api/extra"],
    ["spiffe://td"],
  ])("refuses non-workload shape %s", (input) => {
    expect(refusal(() => parseWorkloadId(input)).code).toBe("E_SPIFFE_ID_NOT_WORKLOAD");
  });
  it.each([
    [{ trustDomain: "td", namespace: "", appId: "a" }, /namespace is empty/],
    [{ trustDomain: "td", namespace: "ns", appId: "a/b" }, /app id/],
    [{ trustDomain: "td", namespace: "..", appId: "a" }, /namespace/],
    [{ trustDomain: "TD", namespace: "ns", appId: "a" }, /lowercase/],
  ])("refuses bad parts %j", (input, reason) => {
    expect(refusal(() => formatWorkloadId(input)).message).toMatch(reason);
  });
});

describe("parsed IDs are remembered (a bounded cache of valid IDs)", () => {
  it("gives the same frozen result for an ID parsed again, and refuses an invalid ID every time", () => {
    const first = parseSpiffeId("spiffe://cache.test/ns/a/b");
    const again = parseSpiffeId("spiffe://cache.test/ns/a/b");
    expect(again).toBe(first);
    expect(Object.isFrozen(again) && Object.isFrozen(again.segments)).toBe(true);
    for (let i = 0; i < 2; i++) expect(refusal(() => parseSpiffeId("spiffe://cache.test/ns/a/../b")).code).toBe("E_SPIFFE_ID_INVALID");
  });

  it("stays correct past its bound", () => {
    for (let i = 0; i < 3000; i++) {
      const id = parseSpiffeId(`spiffe://cache.test/ns/n${i}/app`);
      expect(id.segments[1]).toBe(`n${i}`);
    }
    expect(parseWorkloadId("spiffe://cache.test/ns/n5/app")).toEqual({ trustDomain: "cache.test", namespace: "n5", appId: "app" });
    const long = `spiffe://cache.test/ns/a/${"x".repeat(300)}`;
    expect(parseSpiffeId(long).toString()).toBe(long);
  });
});

// Input a token claim, a pod annotation or a request field can carry, refused as go-spiffe v2 does
// (spiffe/go-spiffe v2/spiffeid/path.go and trustdomain.go: path segments of
// [a-zA-Z0-9.-_] only, never "." or ".."; trust domain [a-z0-9.-_]): look-alike letters, encoded
// or full-width slashes, control characters, a trailing newline (a regex anchor trap elsewhere),
// and an app id that would make the whole ID longer than 2048 bytes.
describe("names that only look like a valid app id or namespace", () => {
  it.each([
    ["Cyrillic а in the app id", "оrders"],
    ["Latin-1 letter", "ördérs"],
    ["percent-encoded slash", "a%2Fb"],
    ["full-width slash", "a／b"],
    ["backslash", "a\\b"],
    ["NUL", "api\u0000"],
    ["tab", "a\tb"],
    ["trailing newline", "api\n"],
    ["zero-width space", "a\u200bpi"],
    ["colon", "a:b"],
  ])("formatWorkloadId refuses %s", (_name, appId) => {
    expect(refusal(() => formatWorkloadId({ trustDomain: "td", namespace: "ns", appId })).code).toBe("E_SPIFFE_ID_INVALID");
    expect(refusal(() => parseSpiffeId(`spiffe://td/ns/ns/${appId}`)).code).toBe("E_SPIFFE_ID_INVALID");
  });

  it("refuses an app id that makes the ID longer than 2048 bytes, and accepts the longest that fits", () => {
    const prefix = "spiffe://td/ns/ns/";
    expect(formatWorkloadId({ trustDomain: "td", namespace: "ns", appId: "a".repeat(2048 - prefix.length) })).toHaveLength(2048);
    expect(refusal(() => formatWorkloadId({ trustDomain: "td", namespace: "ns", appId: "a".repeat(2049 - prefix.length) })).message).toMatch(/2048 bytes/);
  });

  it("refuses a trust domain with look-alike or upper-case letters (IDN is not allowed)", () => {
    for (const td of ["exаmple.org", "xn--exmple-4nf.org".toUpperCase(), "bücher.example"]) {
      expect(refusal(() => parseSpiffeId(`spiffe://${td}/ns/a/b`)).code).toBe("E_SPIFFE_ID_INVALID");
    }
    expect(parseSpiffeId("spiffe://xn--exmple-4nf.org/ns/a/b").trustDomain).toBe("xn--exmple-4nf.org");
  });
});
