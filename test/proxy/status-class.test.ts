import { describe, expect, it } from "vitest";
import { statusClass } from "../../src/proxy/respond.ts";

// The duration metric's status_class label: the table of prebuilt strings must give what the
// template gave for every status (the label values dashboards and alerts match on).
describe("statusClass", () => {
  it("is 'error' without a status and `${hundreds}xx` for every other", () => {
    expect(statusClass(undefined)).toBe("error");
    expect(statusClass(0)).toBe("error");
    for (let status = -250; status <= 1250; status++) {
      if (status === 0) continue;
      expect(statusClass(status), String(status)).toBe(`${Math.floor(status / 100)}xx`);
    }
  });
});
