import { Parser } from "yaml";
import { blankJsonComments, formatOf } from "./loaders/index.ts";
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
  for (const { file, text, format, rendered } of files) {
    // kustomize drops comments: a directive in its output can only be a value (review audit finding 4).
    if (rendered !== undefined || !text.includes("meshward-audit-ignore")) continue;
    const directives = parseDirectives(file, text, commentStarts(file, text, format), knownRules, problems);
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

/**
 * Where each comment of the file starts: 0-based line → 0-based column. Only comments count as
 * directives, never text in a value (`readme: "see //meshward-audit-ignore-file …"`, a URL, a block
 * scalar's `# …` line): YAML (and JSON, read as YAML) by the YAML parser's comment tokens (JSON's
 * `//` and `/* *\/` comments too); an env file and anything else by a line scan, a `#` (or `//`
 * outside env files) at the start of a line or after whitespace, outside quotes.
 */
function commentStarts(file: string, text: string, format: ReadFile["format"]): Map<number, number> {
  const starts = new Map<number, number>();
  const kind = format ?? formatOf(file);
  if (kind === "yaml") {
    const lineStarts = [0];
    for (let index = text.indexOf("\n"); index >= 0; index = text.indexOf("\n", index + 1)) lineStarts.push(index + 1);
    const lineOf = (offset: number): number => {
      let low = 0;
      let high = lineStarts.length - 1;
      while (low < high) {
        const middle = (low + high + 1) >> 1;
        if ((lineStarts[middle] ?? 0) <= offset) low = middle;
        else high = middle - 1;
      }
      return low;
    };
    const add = (offset: number): void => {
      const line = lineOf(offset);
      const column = offset - (lineStarts[line] ?? 0);
      if (!starts.has(line) || (starts.get(line) ?? 0) > column) starts.set(line, column);
    };
    const json = /\.jsonc?$/i.test(file);
    const yamlText = json ? blankJsonComments(text) : text;
    if (json) for (const match of text.matchAll(/\/[/*]/g)) if (yamlText[match.index] === " ") add(match.index);
    const visit = (node: unknown): void => {
      if (Array.isArray(node)) {
        node.forEach(visit);
        return;
      }
      if (node === null || typeof node !== "object") return;
      const token = node as { type?: unknown; offset?: unknown };
      if (token.type === "comment" && typeof token.offset === "number") add(token.offset);
      for (const value of Object.values(node)) if (value !== null && typeof value === "object") visit(value);
    };
    try {
      for (const token of new Parser().parse(yamlText)) visit(token);
    } catch {
      // Unparseable: no comments taken.
    }
    return starts;
  }
  const slashes = kind !== "env";
  text.split(/\r?\n/).forEach((content, line) => {
    let quote: string | undefined;
    for (let index = 0; index < content.length; index += 1) {
      const char = content[index] ?? "";
      if (quote !== undefined) {
        if (char === "\\") index += 1;
        else if (char === quote) quote = undefined;
        continue;
      }
      const afterSpace = index === 0 || /\s/.test(content[index - 1] ?? "");
      if (afterSpace && (char === "#" || (slashes && char === "/" && content[index + 1] === "/"))) {
        starts.set(line, index);
        return;
      }
      if (char === '"' || char === "'") quote = char;
    }
  });
  return starts;
}

function parseDirectives(file: string, text: string, comments: ReadonlyMap<number, number>, knownRules: ReadonlySet<string>, problems: IgnoreProblem[]): Directive[] {
  const lines = text.split(/\r?\n/);
  const directives: Directive[] = [];
  lines.forEach((content, index) => {
    const start = comments.get(index);
    if (start === undefined) return;
    const match = DIRECTIVE.exec(content.slice(start));
    if (match === null) return;
    const line = index + 1;
    const column = start + match.index + 1;
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
    if (scope === "line" && content.slice(0, start).trim() === "") {
      target = index + 2;
      while (target <= lines.length && COMMENT_LINE.test(lines[target - 1] ?? "")) target += 1;
    }
    directives.push({ file, line, column, scope, target, rules: ids.map((id) => id.toUpperCase()), reason, used: false });
  });
  return directives;
}
