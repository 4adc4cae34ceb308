import { describe, expect, it } from "vitest";
import { trustBundleVersion } from "../../src/telemetry/bundle-version.ts";

const A = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
const B = "01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF";

describe("trustBundleVersion", () => {
  it("names the set of roots: order and case do not matter, adding or removing a root changes it", () => {
    const one = trustBundleVersion([A]);
    const two = trustBundleVersion([A, B]);
    expect(trustBundleVersion([B, A])).toBe(two);
    expect(trustBundleVersion([A.toLowerCase(), B])).toBe(two);
    expect(two).not.toBe(one);
    expect(trustBundleVersion([B])).not.toBe(one);
    expect(trustBundleVersion([B])).not.toBe(two);
  });

  it("is a whole number below 2^32, exact as a Prometheus sample", () => {
    for (const roots of [[A], [B], [A, B], []]) {
      const v = trustBundleVersion(roots);
      expect(Number.isInteger(v)).toBe(true);
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThan(2 ** 32);
    }
  });
});
