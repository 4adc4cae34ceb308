import { describe, expect, it } from "vitest";
import { compileMatcher, describeMatcher } from "../../src/spiffe/match.ts";

describe("compileMatcher", () => {
  it("exact ID", () => {
    const m = compileMatcher("spiffe://td/ns/a/b");
    expect(m("spiffe://td/ns/a/b")).toBe(true);
    expect(m("spiffe://td/ns/a/c")).toBe(false);
    expect(m("spiffe://td/ns/a/b/")).toBe(false);
  });
  it("list of IDs", () => {
    const m = compileMatcher(["spiffe://td/ns/a/b", "spiffe://td/ns/a/c"]);
    expect(m("spiffe://td/ns/a/c")).toBe(true);
    expect(m("spiffe://td/ns/a/d")).toBe(false);
    expect(() => compileMatcher([])).toThrow(expect.objectContaining({ code: "E_MATCHER_INVALID" }));
  });
  it("trust domain / namespace / app id pattern", () => {
    expect(compileMatcher({ trustDomain: "td" })("spiffe://td/anything/here")).toBe(true);
    expect(compileMatcher({ trustDomain: "td" })("spiffe://other/ns/a/b")).toBe(false);
    const ns = compileMatcher({ trustDomain: "td", namespace: "prod" });
    expect(ns("spiffe://td/ns/prod/api")).toBe(true);
    expect(ns("spiffe://td/ns/dev/api")).toBe(false);
    expect(ns("spiffe://td/ns/prod/api/extra")).toBe(false);
    const app = compileMatcher({ trustDomain: "td", namespace: "prod", appId: "api" });
    expect(app("spiffe://td/ns/prod/api")).toBe(true);
    expect(app("spiffe://td/ns/prod/web")).toBe(false);
    expect(() => compileMatcher({ trustDomain: "td", appId: "api" })).toThrow();
    expect(() => compileMatcher({ trustDomain: "TD" })).toThrow();
  });
  it("predicate; a throwing predicate never matches", () => {
    expect(compileMatcher((id) => id.segments[2] === "x")("spiffe://td/ns/n/x")).toBe(true);
    expect(compileMatcher(() => { throw new Error("boom"); })("spiffe://td/ns/n/x")).toBe(false);
  });
  it("invalid IDs never match", () => {
    for (const m of [compileMatcher({ trustDomain: "td" }), compileMatcher(() => true)]) {
      for (const bad of ["", "spiffe://TD/x", "spiffe://td/../x", "https://td/x", "spiffe://td/x?q", "spiffe://td:443/x"]) expect(m(bad)).toBe(false);
    }
  });
  it("rejects invalid matchers and describes valid ones", () => {
    expect(() => compileMatcher("not-an-id")).toThrow();
    expect(() => compileMatcher(42 as never)).toThrow(expect.objectContaining({ code: "E_MATCHER_INVALID" }));
    expect(describeMatcher({ trustDomain: "td", namespace: "prod" })).toContain("spiffe://td/ns/prod/*");
    expect(describeMatcher(["spiffe://td/a"])).toContain("spiffe://td/a");
  });
  it("a pattern is copied when compiled: changing the object afterwards changes nothing", () => {
    const pattern: { trustDomain: string; namespace?: string; appId?: string } = { trustDomain: "td", namespace: "a", appId: "svc" };
    const m = compileMatcher(pattern);
    pattern.namespace = "b";
    expect(m("spiffe://td/ns/b/svc")).toBe(false);
    delete pattern.namespace;
    delete pattern.appId;
    expect(m("spiffe://td/ns/a/other")).toBe(false);
    expect(m("spiffe://td/ns/a/svc")).toBe(true);
  });
  it("refuses unknown keys in a pattern (a typo must not admit the whole trust domain)", () => {
    expect(() => compileMatcher({ trustDomain: "td", nameSpace: "a" } as never)).toThrow(expect.objectContaining({ code: "E_USAGE", message: expect.stringContaining('"nameSpace"') }));
    expect(() => compileMatcher({ trustDomain: "td", namespace: "a", appid: "svc" } as never)).toThrow(expect.objectContaining({ code: "E_USAGE" }));
  });
  it("refuses a namespace or appId that is not one path segment", () => {
    for (const bad of [{ namespace: "" }, { namespace: "a/b" }, { namespace: 7 }, { namespace: "a", appId: ".." }, { namespace: "a", appId: null }]) {
      expect(() => compileMatcher({ trustDomain: "td", ...bad } as never), JSON.stringify(bad)).toThrow(expect.objectContaining({ code: "E_MATCHER_INVALID" }));
    }
  });
});
