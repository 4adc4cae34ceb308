import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ALL_RULES } from "../../src/audit/rules/index.ts";
import { RULE_TABLE_BEGIN, RULE_TABLE_END, renderRulesMarkdown } from "../../src/audit/rules-doc.ts";

const doc = readFileSync(join(import.meta.dirname, "..", "..", "docs", "audit-rules.md"), "utf8");

describe("docs/audit-rules.md", () => {
  it("documents every rule id with a section", () => {
    for (const rule of ALL_RULES) {
      expect(doc, rule.id).toContain(`| [${rule.id}](#${rule.id.toLowerCase()}) |`);
      expect(doc, rule.id).toContain(`### ${rule.id}\n`);
    }
  });

  it("holds the rule table generated from the current rule definitions", () => {
    const begin = doc.indexOf(RULE_TABLE_BEGIN);
    const end = doc.indexOf(RULE_TABLE_END);
    expect(begin).toBeGreaterThan(0);
    expect(end).toBeGreaterThan(begin);
    // Regenerate with `meshward audit rules --format markdown` when this fails.
    expect(doc.slice(begin, end + RULE_TABLE_END.length + 1)).toBe(renderRulesMarkdown(ALL_RULES));
  });

  it("documents no rule id that does not exist", () => {
    const known = new Set(ALL_RULES.map((rule) => rule.id));
    const mentioned = new Set(doc.match(/MW-[A-Z0-9]+-\d{3}/g) ?? []);
    for (const id of mentioned) expect(known.has(id), id).toBe(true);
  });
});
