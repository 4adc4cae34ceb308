import type { Finding, IgnoreProblem, SuppressedFinding } from "./types.ts";
import type { ReadFile } from "./walk.ts";

/**
 * Ignore comments: a finding the team has looked at and accepted is marked where it is, with the
 * rule and the reason, so the next audit neither reports it nor forgets it (it is listed as
 * suppressed in every format, and in SARIF as an in-source suppression).
 *
 *   password: devonly   # meshward-audit-ignore MW-SECRET-001 -- local kind cluster, no real data
 *
 *   # meshward-audit-ignore MW-TLS-001, MW-TLS-002 -- loopback Redis in the CI job
 *   redisHost: localhost:6379
 *
 *   # meshward-audit-ignore-file MW-SECRET-003 -- test fixtures, keys generated for the tests only
 *
 * A line directive covers findings on its own line (a trailing comment) or on the first line
 * after the comment block it stands in; a file directive covers the whole file. Rule ids are
 * required (there is no "ignore everything") and so is a reason after `--`; a directive that
 * names an unknown rule, gives no reason, or covers no finding is reported, never silently
 * taken, so a typo cannot hide a finding and a stale comment does not outlive its finding.
 */
const DIRECTIVE = /(?:#|\/\/)\s*meshward-audit-ignore(-file)?\b(.*)$/;
const COMMENT_LINE = /^\s*(?:#|\/\/)/;
const RULE_ID = /^MW-[A-Z0-9]+-\d{3}$/;

interface Directive {
  file: string;
  /** 1-based line of the comment. */
  line: number;
  column: number;
  scope: "line" | "file";
  /** For a line directive: the line whose findings it covers. */
  target: number;
  rules: string[];
  reason: string;
  used: boolean;
}

export interface SuppressionOutcome {
  findings: Finding[];
  suppressed: SuppressedFinding[];
  problems: IgnoreProblem[];
}

/** Splits `findings` into those reported and those an ignore comment in their file covers. */
export function applySuppressions(findings: readonly Finding[], files: readonly ReadFile[], knownRules: ReadonlySet<string>, rulesRun: ReadonlySet<string> = knownRules): SuppressionOutcome {
  const problems: IgnoreProblem[] = [];
  const byFile = new Map<string, Directive[]>();
  for (const { file, text } of files) {
    if (!text.includes("meshward-audit-ignore")) continue;
    const directives = parseDirectives(file, text, knownRules, problems);
    if (directives.length > 0) byFile.set(file, directives);
  }
  const reported: Finding[] = [];
  const suppressed: SuppressedFinding[] = [];
  for (const finding of findings) {
    const directive = byFile.get(finding.file)?.find((candidate) => candidate.rules.includes(finding.ruleId)
      && (candidate.scope === "file" || candidate.target === finding.line));
    if (directive === undefined) {
      reported.push(finding);
      continue;
    }
    directive.used = true;
    suppressed.push({ ...finding, suppression: { reason: directive.reason, line: directive.line, scope: directive.scope } });
  }
  for (const directives of byFile.values()) {
    for (const directive of directives) {
      // A directive for an opt-in rule that did not run is neither used nor stale.
      if (!directive.used && directive.rules.some((id) => rulesRun.has(id))) problems.push({ file: directive.file, line: directive.line, column: directive.column, message: `meshward-audit-ignore${directive.scope === "file" ? "-file" : ""} ${directive.rules.join(", ")} covers no finding${directive.scope === "line" ? ` on line ${directive.target}` : " in this file"}: remove it, or move it next to the finding` });
    }
  }
  problems.sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line);
  return { findings: reported, suppressed, problems };
}

function parseDirectives(file: string, text: string, knownRules: ReadonlySet<string>, problems: IgnoreProblem[]): Directive[] {
  const lines = text.split(/\r?\n/);
  const directives: Directive[] = [];
  lines.forEach((content, index) => {
    const match = DIRECTIVE.exec(content);
    if (match === null) return;
    const line = index + 1;
    const column = match.index + 1;
    const scope = match[1] === undefined ? "line" : "file";
    const name = `meshward-audit-ignore${scope === "file" ? "-file" : ""}`;
    const body = match[2] ?? "";
    const separator = body.indexOf("--");
    const ids = (separator === -1 ? body : body.slice(0, separator)).split(/[\s,]+/).map((id) => id.trim()).filter((id) => id !== "");
    const reason = separator === -1 ? "" : body.slice(separator + 2).trim();
    const problem = (message: string) => problems.push({ file, line, column, message: `${name}: ${message}; not applied` });
    if (ids.length === 0) return void problem("name the rule ids it ignores (e.g. MW-TLS-001); there is no ignore-everything");
    const unknown = ids.filter((id) => !RULE_ID.test(id.toUpperCase()) || !knownRules.has(id.toUpperCase()));
    if (unknown.length > 0) return void problem(`no such rule ${unknown.join(", ")} (\`meshward audit rules\` lists them)`);
    if (reason === "") return void problem("give the reason after `--`, e.g. `-- test fixture, not deployed`");
    // A comment on a line of its own covers the first line after its comment block; a trailing one, its own line.
    let target = line;
    if (scope === "line" && COMMENT_LINE.test(content)) {
      target = index + 2;
      while (target <= lines.length && COMMENT_LINE.test(lines[target - 1] ?? "")) target += 1;
    }
    directives.push({ file, line, column, scope, target, rules: ids.map((id) => id.toUpperCase()), reason, used: false });
  });
  return directives;
}
