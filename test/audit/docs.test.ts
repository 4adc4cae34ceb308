import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { parse as parseYaml } from "yaml";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { auditSources } from "../../src/audit/audit.ts";
import { ALL_RULES } from "../../src/audit/rules/index.ts";
import { buildSidecarConfig } from "../../src/cli/sidecar-config.ts";
import { sidecarConfigSchema } from "../../src/config/sidecar.ts";
import { RULE_TABLE_BEGIN, RULE_TABLE_END, renderRulesMarkdown } from "../../src/audit/rules-doc.ts";

const doc = readFileSync(join(import.meta.dirname, "..", "..", "docs", "audit-rules.md"), "utf8");

describe("docs/audit-rules.md", () => {
  it("documents every rule id with a section", () => {
    for (const rule of ALL_RULES) {
      expect(doc, rule.id).toContain(`| [${rule.id}](#${rule.id.toLowerCase()}) |`);
      expect(doc, rule.id).toContain(`### ${rule.id}\n`);
    }
  });

  it("the README's count of rules is the number of rules", () => {
    const readme = readFileSync(join(import.meta.dirname, "..", "..", "README.md"), "utf8");
    expect(readme).toMatch(/\| (\d+) rules over Dapr/);
    expect(Number(/\| (\d+) rules over Dapr/.exec(readme)?.[1])).toBe(ALL_RULES.length);
  });

  it("holds the rule table generated from the current rule definitions", () => {
    const begin = doc.indexOf(RULE_TABLE_BEGIN);
    const end = doc.indexOf(RULE_TABLE_END);
    expect(begin).toBeGreaterThan(0);
    expect(end).toBeGreaterThan(begin);
    // Regenerate with `meshward audit rules --format markdown` when this fails.
    expect(doc.slice(begin, end + RULE_TABLE_END.length + 1)).toBe(renderRulesMarkdown(ALL_RULES));
  });

  it("says when MW-ACCESS-012 is medium and when low, as the rule reports it", () => {
    const rule = ALL_RULES.find((candidate) => candidate.id === "MW-ACCESS-012");
    const companion = rule?.example.companion;
    if (rule === undefined || companion === undefined) throw new Error("MW-ACCESS-012 and its example policy");
    const severity = (policy: string): string | undefined =>
      auditSources([{ file: rule.example.file, text: rule.example.bad }, { file: companion.file, text: policy }], { rules: [rule] }).findings[0]?.severity;
    // The example's operation that never applies is a deny: medium; the same one as an allow: low.
    expect(companion.bad).toContain("action: deny");
    expect(severity(companion.bad)).toBe("medium");
    expect(severity(companion.bad.replace("action: deny", "action: allow"))).toBe("low");
    expect(doc).toContain("| [MW-ACCESS-012](#mw-access-012) | medium or low | access |");
    expect(doc).toContain("— severity medium (low when every operation that never applies is an allow: connections the file seems to admit are refused, none are opened; medium as soon as one is a deny, which protects nothing), family access.");
  });

  it("lists every E_AUDIT_ error code the audit and its CLI raise under 'Output and exit codes'", () => {
    const sources = [join("src", "audit"), join("src", "audit", "rules"), join("src", "cli"), join("src", "cli", "actions")].flatMap((folder) => {
      const root = join(import.meta.dirname, "..", "..", folder);
      return readdirSync(root).filter((name) => name.endsWith(".ts")).map((name) => readFileSync(join(root, name), "utf8"));
    });
    const codes = new Set(sources.flatMap((text) => [...text.matchAll(/"(E_AUDIT_[A-Z_]+)"/g)].map((match) => match[1])));
    expect(codes.size).toBeGreaterThanOrEqual(4);
    const section = doc.slice(doc.indexOf("## Output and exit codes"), doc.indexOf("\n## ", doc.indexOf("## Output and exit codes") + 1));
    for (const code of codes) expect(section, code).toContain(`\`${code}\``);
  });

  it("documents no rule id that does not exist", () => {
    const known = new Set(ALL_RULES.map((rule) => rule.id));
    const mentioned = new Set(doc.match(/MW-[A-Z0-9]+-\d{3}/g) ?? []);
    for (const id of mentioned) expect(known.has(id), id).toBe(true);
  });

  // Issue 15 item 6: the example sidecar.yaml used `app-id:`, which the sidecar refuses.
  it("every meshward sidecar example the docs show is accepted by the sidecar's own schema, except the bad ones of MW-CONFIG-001 and MW-ACCESS-004", () => {
    const blocks = [...doc.matchAll(/Example \(`sidecar\.yaml`\) that fires:\n\n```yaml\n([\s\S]*?)```[\s\S]*?Fixed form \(no finding\):\n\n```yaml\n([\s\S]*?)```/g)];
    expect(blocks.length).toBeGreaterThanOrEqual(5);
    let refused = 0;
    for (const [, bad, good] of blocks) {
      for (const text of [bad, good]) {
        // Fields the docs leave to flags (bundle, app) are filled in the way the CLI would.
        const config = { bundle: "/etc/meshward/bundle.pem", app: "127.0.0.1:8080", ...(parseYaml(text ?? "") as Record<string, unknown>) };
        const ok = sidecarConfigSchema.safeParse(config).success;
        if (!ok) refused += 1;
        const findings = auditSources([{ file: "sidecar.yaml", text: text ?? "" }]).findings;
        // A listener off loopback is refused by the sidecar and reported by MW-ACCESS-004 alone.
        const refusedBy = findings.filter((finding) => finding.ruleId === "MW-CONFIG-001" || finding.ruleId === "MW-ACCESS-004");
        expect(refusedBy.length > 0, text).toBe(!ok);
      }
    }
    // Only MW-CONFIG-001's own bad example (`app-id:`) and MW-ACCESS-004's (outbound: 0.0.0.0) are refused.
    expect(refused).toBe(2);
    expect(doc).toMatch(/### MW-CONFIG-001[\s\S]*?that fires:\n\n```yaml\napp-id: orders/);
  });

  it("the sidecar's own --config loading (buildSidecarConfig) accepts the fixed examples and refuses `app-id:`", () => {
    const dir = mkdtempSync(join(tmpdir(), "meshward-audit-docs-"));
    try {
      const blocks = [...doc.matchAll(/Fixed form \(no finding\):\n\n```yaml\n([\s\S]*?)```/g)].map((match) => match[1] ?? "").filter((text) => /^appId: /m.test(text));
      expect(blocks.length).toBeGreaterThanOrEqual(5);
      for (const [index, text] of blocks.entries()) {
        const file = join(dir, `example-${index}.yaml`);
        writeFileSync(file, text);
        // --bundle and --app as a user would give them on the command line.
        expect(() => buildSidecarConfig({ config: file, bundle: "/etc/meshward/bundle.pem", app: "127.0.0.1:8080" }), text).not.toThrow();
      }
      const refused = join(dir, "app-id.yaml");
      writeFileSync(refused, "app-id: orders\nca: ca.prod.svc:8443\nbundle: /etc/meshward/bundle.pem\napp: 127.0.0.1:8080\n");
      expect(() => buildSidecarConfig({ config: refused })).toThrow(/app-id/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
