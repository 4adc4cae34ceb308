import { describe, expect, it } from "vitest";
import { LimitedWarnings, LogLimiter, OTHER_KEY } from "../../src/telemetry/log-limiter.ts";

describe("LogLimiter: log lines a peer can cause at will", () => {
  it("logs the first lines of a key per window, counts the rest, and reports the count on the next window's first line", () => {
    let now = 0;
    const limiter = new LogLimiter({ perWindow: 3, windowMs: 1000, now: () => now });
    const admitted = Array.from({ length: 10 }, () => limiter.admit("orders|deny"));
    expect(admitted).toEqual([0, 0, 0, undefined, undefined, undefined, undefined, undefined, undefined, undefined]);
    // Another key has its own budget.
    expect(limiter.admit("billing|deny")).toBe(0);
    now = 1000;
    expect(limiter.admit("orders|deny")).toBe(7);
    expect(limiter.admit("orders|deny")).toBe(0);
  });

  it("sweeps ended windows: a summary for each key with unreported suppressions, and quiet keys forgotten", () => {
    let now = 0;
    const limiter = new LogLimiter({ perWindow: 1, windowMs: 1000, now: () => now });
    limiter.admit("a");
    limiter.admit("a");
    limiter.admit("a");
    limiter.admit("b");
    const reports: [string, number][] = [];
    limiter.sweep((key, suppressed) => reports.push([key, suppressed]));
    expect(reports).toEqual([]);
    now = 1500;
    limiter.sweep((key, suppressed) => reports.push([key, suppressed]));
    expect(reports).toEqual([["a", 2]]);
    expect(limiter.size).toBe(0);
  });

  it("stays bounded in keys: past maxKeys new keys share one", () => {
    const limiter = new LogLimiter({ perWindow: 1, windowMs: 60_000, maxKeys: 10, now: () => 0 });
    for (let i = 0; i < 10_000; i++) limiter.admit(`caller-${i}`);
    expect(limiter.size).toBe(11);
    const later = new LogLimiter({ perWindow: 1, windowMs: 1, maxKeys: 1, now: () => 0 });
    later.admit("x");
    expect(later.admit("y")).toBe(0);
    expect(later.admit("z")).toBeUndefined();
    expect(later.size).toBe(2);
    expect(later.admit(OTHER_KEY)).toBeUndefined();
  });
});

describe("LimitedWarnings", () => {
  it("puts the count of left-out lines on the next admitted line, and in a log-suppressed summary when none comes", async () => {
    let now = 0;
    const lines: Record<string, unknown>[] = [];
    const warnings = new LimitedWarnings({ warn: (fields, msg) => lines.push({ ...fields, msg }) }, { perWindow: 2, windowMs: 1000, sweepMs: 20, now: () => now });
    try {
      for (let i = 0; i < 5; i++) warnings.warn("policy-denied|orders|rule", { event: "policy-denied", i }, "denied");
      expect(lines.map((l) => l.i)).toEqual([0, 1]);
      now = 1000;
      warnings.warn("policy-denied|orders|rule", { event: "policy-denied", i: 5 }, "denied");
      expect(lines[2]).toMatchObject({ i: 5, suppressed: 3 });
      warnings.warn("policy-denied|orders|rule", { event: "policy-denied", i: 6 }, "denied");
      warnings.warn("policy-denied|orders|rule", { event: "policy-denied", i: 7 }, "denied");
      now = 2500;
      await new Promise((resolve) => setTimeout(resolve, 60));
      expect(lines.at(-1)).toMatchObject({ event: "log-suppressed", about: "policy-denied|orders|rule", suppressed: 1 });
    } finally {
      warnings.close();
    }
  });
});
