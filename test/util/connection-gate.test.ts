import { describe, expect, it } from "vitest";
import { sourceAddress } from "../../src/util/connection-gate.ts";
import { openFileLimit } from "../../src/util/open-file-limit.ts";

// ConnectionGate itself is tested with real sockets through the CA (test/ca/connection-limits.test.ts).
describe("sourceAddress: the key a per-address cap counts under", () => {
  it("counts an IPv4 peer seen by a dual-stack listener (::ffff:a.b.c.d) as the IPv4 address", () => {
    expect(sourceAddress("::ffff:127.0.0.2")).toBe("127.0.0.2");
    expect(sourceAddress("::FFFF:10.1.2.3")).toBe("10.1.2.3");
    expect(sourceAddress("10.1.2.3")).toBe("10.1.2.3");
  });
  it("keeps IPv6 addresses whole (lower case) and names a missing one", () => {
    expect(sourceAddress("2001:DB8::1")).toBe("2001:db8::1");
    expect(sourceAddress("::ffff:2001:db8::1")).toBe("::ffff:2001:db8::1");
    expect(sourceAddress(undefined)).toBe("(unknown)");
  });
});

describe("openFileLimit: the soft RLIMIT_NOFILE from /proc/self/limits", () => {
  const limits = (soft: string, hard: string) =>
    [
      "Limit                     Soft Limit           Hard Limit           Units     ",
      "Max processes             unlimited            unlimited            processes ",
      `Max open files            ${soft.padEnd(20)} ${hard.padEnd(20)} files     `,
      "Max locked memory         8388608              8388608              bytes     ",
    ].join("\n");
  it("reads the soft limit, and unlimited as Infinity", () => {
    expect(openFileLimit(limits("1024", "524288"))).toBe(1024);
    expect(openFileLimit(limits("unlimited", "unlimited"))).toBe(Number.POSITIVE_INFINITY);
  });
  it("is undefined when the line is missing or unreadable", () => {
    expect(openFileLimit("Limit Soft Limit Hard Limit Units\n")).toBeUndefined();
    expect(openFileLimit(limits("lots", "lots"))).toBeUndefined();
  });
  it("reads this process's own limit on Linux", () => {
    const own = openFileLimit();
    expect(own).toBeGreaterThan(0);
  });
});
