import jsonPatch from "fast-json-patch";
import { describe, expect, it } from "vitest";
import { diffJson } from "../../src/inject/json-patch.ts";

// Keys are compared as own properties: a label or annotation named like an Object.prototype
// member ("constructor", "toString", "hasOwnProperty" are valid Kubernetes label keys) once made
// `key in object` true, so an added key became a "replace" of a path that does not exist (the
// API server refuses the whole patch) and a removed one was silently kept. Checked by applying
// the patch with fast-json-patch in validating mode (RFC 6902), as the injector test does.
describe("diffJson", () => {
  const cases: [string, unknown, unknown][] = [
    ["add a prototype-named key", { metadata: { labels: { app: "a" } } }, { metadata: { labels: { app: "a", constructor: "x", toString: "y" } } }],
    ["remove a prototype-named key", { metadata: { labels: { app: "a", hasOwnProperty: "z" } } }, { metadata: { labels: { app: "a" } } }],
    ["change one", { metadata: { labels: { valueOf: "1" } } }, { metadata: { labels: { valueOf: "2" } } }],
    ["plain add, remove and replace", { a: 1, b: { c: [1, 2] }, d: "x" }, { a: 2, b: { c: [1, 2, 3] }, e: null }],
  ];
  for (const [name, before, after] of cases) {
    it(name, () => {
      const ops = diffJson(before, after);
      const patched = jsonPatch.applyPatch(structuredClone(before), ops as jsonPatch.Operation[], true, false).newDocument;
      expect(patched).toEqual(after);
    });
  }
  it("an added prototype-named key is an add, not a replace", () => {
    expect(diffJson({}, { constructor: "x" })).toEqual([{ op: "add", path: "/constructor", value: "x" }]);
    expect(diffJson({ toString: "x" }, {})).toEqual([{ op: "remove", path: "/toString" }]);
  });
});
