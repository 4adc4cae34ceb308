import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { findExcessiveNesting, MAX_NESTING_DEPTH } from "../../src/util/yaml-depth.ts";

const blockMaps = (levels: number) => Array.from({ length: levels }, (_, i) => `${" ".repeat(i)}a:`).join("\n");

describe("findExcessiveNesting", () => {
  it("refuses flow, JSON, block-map and block-sequence nesting past the limit, saying where", () => {
    expect(findExcessiveNesting("[".repeat(100_000))).toMatchObject({ line: 1 });
    expect(findExcessiveNesting(`a: ${"{".repeat(200)}`)).toMatchObject({ line: 1 });
    expect(findExcessiveNesting(`${'{"a":'.repeat(200)}1${"}".repeat(200)}`)).toBeDefined();
    expect(findExcessiveNesting(blockMaps(500))).toMatchObject({ line: MAX_NESTING_DEPTH + 1 });
    expect(findExcessiveNesting(`${"- ".repeat(500)}x`)).toBeDefined();
    // Flow collections spread over lines.
    expect(findExcessiveNesting(`a:\n${"  [\n".repeat(200)}`)).toBeDefined();
  });

  it("accepts nesting up to the limit and ordinary manifests", () => {
    expect(findExcessiveNesting(blockMaps(MAX_NESTING_DEPTH))).toBeUndefined();
    expect(findExcessiveNesting(`${"[".repeat(50)}${"]".repeat(50)}`)).toBeUndefined();
    const pod = "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    args: [\"a[\", '{', \"x\\\"[\"]\n    env:\n    - {name: X, value: \"[[[\"}\n";
    expect(findExcessiveNesting(pod)).toBeUndefined();
  });

  it("does not count brackets in plain and quoted scalars, comments, or block scalar content", () => {
    expect(findExcessiveNesting(`pattern: ^[a-z]+$\n${"x: a[[[[[ # {{{{\n".repeat(200)}`)).toBeUndefined();
    expect(findExcessiveNesting(`a: "${"[".repeat(500)}"\nb: '${"{".repeat(500)}'\n`)).toBeUndefined();
    const script = `run: |\n${Array.from({ length: 300 }, (_, i) => `${" ".repeat(i + 2)}echo [`).join("\n")}\nnext: 1\n`;
    expect(findExcessiveNesting(script)).toBeUndefined();
    // Sanity: the script really is one small YAML document.
    expect(parseAllDocuments(script)).toHaveLength(1);
  });
});
