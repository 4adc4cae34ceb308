import { describe, expect, it } from "vitest";
import { forwardedValue, hasLength, HOP_BY_HOP, isHopByHop, lengthTable } from "../../src/proxy/headers.ts";

// The request path's lookups without hashing (isHopByHop, length tables) must answer exactly as
// the Sets they stand for, or a hop-by-hop field would be forwarded (or an end-to-end one dropped).
const NEAR_MISSES = ["", "t", "tE", "ted", "upgrades", "trailers", "connectio", "keep_alive", "keep-alivE".toLowerCase() + "x", "http2-setting", "proxy-connections", "transfer-encodinG".toLowerCase().slice(1), "proxy-authenticat", "proxy-authorizatio", "content-length", "host", "dapr-app-id", "x-forwarded-client-cert"];

describe("header lookups", () => {
  it("isHopByHop is HOP_BY_HOP.has for every member and near miss", () => {
    for (const name of HOP_BY_HOP) expect(isHopByHop(name), name).toBe(true);
    for (const name of NEAR_MISSES) expect(isHopByHop(name), name).toBe(HOP_BY_HOP.has(name));
    // every length up to the longest, in letters that spell no member
    for (let n = 0; n <= 24; n++) expect(isHopByHop("z".repeat(n))).toBe(false);
  });

  it("forwardedValue still drops every hop-by-hop field and keeps te: trailers", () => {
    for (const name of HOP_BY_HOP) if (name !== "te") expect(forwardedValue(name, "v", new Set())).toBeUndefined();
    expect(forwardedValue("te", "trailers", new Set())).toBe("trailers");
    expect(forwardedValue("x-listed", "v", new Set(["x-listed"]))).toBeUndefined();
    expect(forwardedValue("x-kept", "v", new Set())).toBe("v");
  });

  it("a length table holds exactly the lengths given", () => {
    const lengths = [2, 7, 10, 14, 23];
    const table = lengthTable(lengths);
    for (let n = 0; n < 64; n++) expect(hasLength(table, n), String(n)).toBe(lengths.includes(n));
  });
});
