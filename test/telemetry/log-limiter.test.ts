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

  it("stays bounded in keys: past maxKeys new keys share one key per kind (the part before the first |), and past maxKinds one key", () => {
    const limiter = new LogLimiter({ perWindow: 1, windowMs: 60_000, maxKeys: 10, maxKinds: 4, now: () => 0 });
    for (let i = 0; i < 10_000; i++) limiter.admit(`refused|plaintext|10.0.${i >> 8}.${i & 255}`);
    expect(limiter.size).toBe(11); // 10 addresses and other|refused
    for (let i = 0; i < 10_000; i++) limiter.admit(`kind-${i}|x`);
    expect(limiter.size).toBe(10 + 4 + 1); // and at most maxKinds overflow keys, then "other"
    const later = new LogLimiter({ perWindow: 1, windowMs: 1, maxKeys: 1, now: () => 0 });
    expect(later.admit("refused|plaintext|10.0.0.1")).toBe(0);
    expect(later.admit("refused|plaintext|10.0.0.2")).toBe(0); // other|refused
    expect(later.admit("refused|plaintext|10.0.0.3")).toBeUndefined(); // other|refused is over its budget
    // A denial that comes after the flood has its kind's own overflow key: it is logged.
    expect(later.admit("policy-denied|spiffe://td/ns/default/intruder|deny")).toBe(0);
    expect(later.size).toBe(3);
  });

  it("a flood from many addresses stays under the limiter's ceiling, and a later denial of another kind is still logged", () => {
    let now = 0;
    const limiter = new LogLimiter({ perWindow: 5, windowMs: 10_000, maxKeys: 1000, maxLinesPerWindow: 100, now: () => now });
    let logged = 0;
    // 1015 addresses in 127.1.x.y, one refused plaintext connection each (repro-2-hidden-denial).
    for (let i = 0; i < 1015; i++) if (limiter.admit(`refused|plaintext|127.1.${Math.floor(i / 250)}.${(i % 250) + 1}`) !== undefined) logged++;
    expect(logged).toBe(100);
    expect(limiter.admit("policy-denied|spiffe://mesh.test/ns/default/intruder|deny")).toBe(0);
    // Each kind has its first perWindow lines past the ceiling, then it is held too.
    for (let i = 0; i < 4; i++) expect(limiter.admit(`policy-denied|spiffe://mesh.test/ns/default/other-${i}|deny`)).toBe(0);
    expect(limiter.admit("policy-denied|spiffe://mesh.test/ns/default/other-9|deny")).toBeUndefined();
    expect(limiter.size).toBeLessThanOrEqual(1000 + 64 + 1);
    // The next window has a new ceiling; the sweep reports a few keys of a kind by name and the rest in one line.
    now = 10_000;
    const reports: [string, number][] = [];
    limiter.sweep((key, suppressed) => reports.push([key, suppressed]));
    const refusedReports = reports.filter(([key]) => key.startsWith("refused|"));
    expect(refusedReports).toHaveLength(6);
    expect(refusedReports.at(-1)).toEqual([expect.stringMatching(/^refused\|… \(\d+ more keys\)$/), expect.any(Number)]);
    expect(reports.reduce((sum, [, n]) => sum + n, 0)).toBe(1015 - 100 + 1);
    expect(limiter.size).toBe(0);
    expect(limiter.admit("refused|plaintext|127.1.0.1")).toBe(0);
  });

  it("past the ceiling a key's left-out lines are counted and reported on its next line", () => {
    let now = 0;
    const limiter = new LogLimiter({ perWindow: 5, windowMs: 1000, maxLinesPerWindow: 2, now: () => now });
    expect(limiter.admit("refused|a")).toBe(0);
    expect(limiter.admit("refused|b")).toBe(0);
    for (let i = 0; i < 3; i++) expect(limiter.admit("refused|c")).toBe(0); // the kind's first 5 of the window
    expect(limiter.admit("refused|c")).toBeUndefined();
    now = 1000;
    expect(limiter.admit("refused|c")).toBe(1);
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
