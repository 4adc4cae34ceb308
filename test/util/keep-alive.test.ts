import { describe, expect, it } from "vitest";
import { idleLimitForHint, keepAliveTimeoutMs } from "../../src/util/keep-alive.ts";

describe("the Keep-Alive timeout hint", () => {
  it.each([
    ["timeout=5", 5_000],
    ["timeout=5, max=1000", 5_000],
    ["max=100, timeout=15", 15_000],
    ["Timeout = 2 ,max=3", 2_000],
  ])("reads %j", (header, ms) => {
    expect(keepAliveTimeoutMs(header)).toBe(ms);
  });

  it.each([[undefined], [""], ["max=100"], ["timeout="], ["timeout=abc"], ["timeout=-1"], ["timeout=1.5"], ["xtimeout=5"], ["timeout=5x"], ["timeout=1234567890"]])("ignores %j", (header) => {
    expect(keepAliveTimeoutMs(header)).toBeUndefined();
  });

  it("gives a connection up 2 s before the announced timeout, or at half of a short one", () => {
    expect(idleLimitForHint(5_000)).toBe(3_000);
    expect(idleLimitForHint(60_000)).toBe(58_000);
    expect(idleLimitForHint(3_000)).toBe(1_500);
    expect(idleLimitForHint(1_000)).toBe(500);
    expect(idleLimitForHint(0)).toBe(0);
  });
});
