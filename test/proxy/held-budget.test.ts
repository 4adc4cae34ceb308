import { describe, expect, it } from "vitest";
import { HeldBudget } from "../../src/proxy/held-budget.ts";

describe("HeldBudget", () => {
  it("counts each address's bytes and the total, and refuses past either bound", () => {
    const budget = new HeldBudget(1000, 600);
    const a = budget.account("10.0.0.1");
    const b = budget.account("10.0.0.2");
    expect(a.take(500)).toBe(true);
    expect(a.take(200)).toBe(false); // the address's share
    expect(b.take(501)).toBe(false); // the total
    expect(b.take(400)).toBe(true);
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
});
