import { describe, expect, it } from "vitest";
import { perAddressShare } from "../../src/proxy/held-budget.ts";
import { addressShare, HeldBudget } from "../../src/util/held-budget.ts";

describe("HeldBudget", () => {
  it("counts each address's bytes and the total, and refuses past either bound", () => {
    const budget = new HeldBudget(1000, 600);
    const a = budget.account("10.0.0.1");
    const b = budget.account("10.0.0.2");
    expect(a.take(500)).toBe(true);
    expect(a.take(200)).toBe(false); // the address's share
    expect(b.take(501)).toBe(false); // the total
    expect(b.take(400)).toBe(true);
    // Which bound a further take would go past (the CA's refusal reason).
    expect([budget.wouldRefuse("10.0.0.1", 101), budget.wouldRefuse("10.0.0.1", 100), budget.wouldRefuse("10.0.0.3", 100)]).toEqual(["total", undefined, undefined]);
    const roomy = new HeldBudget(1000, 300);
    roomy.account("10.0.0.1").take(300);
    expect([roomy.wouldRefuse("10.0.0.1", 1), roomy.wouldRefuse("10.0.0.2", 300), roomy.wouldRefuse("10.0.0.2", 301)]).toEqual(["address", undefined, "address"]);
    expect([budget.used, budget.usedBy("10.0.0.1"), budget.usedBy("10.0.0.2")]).toEqual([900, 500, 400]);
    a.give(100);
    expect([budget.used, budget.usedBy("10.0.0.1"), a.held]).toEqual([800, 400, 400]);
    a.close();
    b.close();
    expect([budget.used, budget.usedBy("10.0.0.1"), budget.usedBy("10.0.0.2")]).toEqual([0, 0, 0]);
    // Closed: later takes count nothing; a second close gives nothing back twice.
    expect(a.take(10)).toBe(true);
    a.close();
    expect(budget.used).toBe(0);
  });

  it("one address's requests one after another share its count, with any number of other addresses coming and going", () => {
    const budget = new HeldBudget(1 << 20, 1000);
    const kept = budget.account("10.1.0.1");
    expect(kept.take(600)).toBe(true);
    for (let i = 0; i < 2000; i++) {
      // Other callers come once each and leave (their empty entries are let go in batches) ...
      const other = budget.account(`10.2.${i >> 8}.${i & 255}`);
      expect(other.take(900)).toBe(true);
      other.close();
      // ... while requests of the same caller still see what it holds.
      const again = budget.account("10.1.0.1");
      expect(again.take(401)).toBe(false);
      expect(again.take(400)).toBe(true);
      expect(budget.usedBy("10.1.0.1")).toBe(1000);
      again.close();
    }
    expect([budget.used, budget.usedBy("10.1.0.1")]).toEqual([600, 600]);
    kept.close();
    expect(budget.used).toBe(0);
    for (let i = 0; i < 2000; i++) expect(budget.usedBy(`10.2.${i >> 8}.${i & 255}`)).toBe(0);
  });

  it("each address's share: the budget × maxConnectionsPerAddress / maxConnections, at least `atLeast`, at most the budget (the sidecar's and the CA's rule)", () => {
    // The CA at its defaults: 64 KiB × 256 = 16 MiB, 256 of 4096 connections: 1 MiB per address.
    expect(addressShare(16 << 20, 4096, 256, (64 << 10) + 5)).toBe(1 << 20);
    // The schema's smallest maxRequestBytes: still at least one whole request.
    expect(addressShare(1024 * 256, 4096, 1, 1029)).toBe(1029);
    // A per-address cap at or above the total turns the share off.
    expect(addressShare(1000, 10, 10, 1)).toBe(1000);
    expect(addressShare(1000, 10, 2, 5000)).toBe(1000);
    // The sidecar keeps its own floor (one HTTP/1 body held).
    expect(perAddressShare(16 << 20, 768, 128)).toBe(addressShare(16 << 20, 768, 128, (1 << 20) + (64 << 10)));
    expect(perAddressShare(4 << 20, 768, 128)).toBe((1 << 20) + (64 << 10));
  });
});
