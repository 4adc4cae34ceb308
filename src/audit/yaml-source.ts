import { LineCounter, isMap, isPair, isScalar, isSeq, parseAllDocuments, visit } from "yaml";
import type { Document } from "yaml";
import type { Node as YamlNode } from "yaml";
import { findExcessiveNesting, MAX_NESTING_DEPTH } from "../util/yaml-depth.ts";
import type { NodePath, ParseProblem, Position, SourceDocument } from "./types.ts";

export interface ParsedYaml {
  documents: SourceDocument[];
  problems: ParseProblem[];
}

/**
 * Parses every document of a (multi-document) YAML file. A document with syntax errors is
 * reported with its file:line:column and left out; the other documents are still returned.
 */
export function parseYamlFile(file: string, text: string): ParsedYaml {
  const lineCounter = new LineCounter();
  const documents: SourceDocument[] = [];
  const problems: ParseProblem[] = [];
  // Nesting deep enough to exhaust the parser's stack is refused before parsing (a crash
  // there would take the whole audit down): the file is reported, the others still audited.
  const tooDeep = findExcessiveNesting(text);
  if (tooDeep !== undefined) {
    problems.push({ file, line: tooDeep.line, column: tooDeep.column, message: `nested more than ${MAX_NESTING_DEPTH} levels deep: not parsed (refused as hostile input)` });
    return { documents, problems };
  }
  let parsed;
  try {
    // logLevel "error": the yaml package would otherwise print warnings (e.g. on the
    // `{{ … }}` keys of an unrendered template) straight to stderr.
    parsed = parseAllDocuments(text, { lineCounter, uniqueKeys: false, merge: true, logLevel: "error" });
  } catch (error) {
    problems.push({ file, line: 1, column: 1, message: error instanceof Error ? error.message : String(error) });
    return { documents, problems };
  }
  const docs = Array.isArray(parsed) ? parsed : [];
  if (!Array.isArray(parsed)) {
    // The yaml package returns an EmptyStream for input without documents.
    return { documents, problems };
  }
  docs.forEach((doc, index) => {
    if (doc.errors.length > 0) {
      const seen = new Set<number>();
      for (const error of doc.errors) {
        if (seen.has(error.pos[0])) continue;
        seen.add(error.pos[0]);
        const pos = lineCounter.linePos(error.pos[0]);
        problems.push({ file, line: pos.line, column: pos.col, message: firstLine(error.message).replace(/ at line \d+, column \d+:?$/, "") });
      }
      return;
    }
    let data: unknown;
    try {
      data = doc.toJS({ maxAliasCount: 100 });
    } catch (error) {
      const message = firstLine(error instanceof Error ? error.message : String(error));
      // Alias errors (unresolved, or too many expansions) point at the alias itself.
      const pos = lineCounter.linePos(aliasOffset(doc, message) ?? doc.range[0]);
      problems.push({ file, line: pos.line, column: pos.col, message });
      return;
    }
    const root = doc.contents;
    const docStart = doc.range[0];
    documents.push({
      file,
      index,
      data,
      locate: (path) => toPosition(lineCounter, offsetOf(root, path) ?? docStart),
    });
  });
  return { documents, problems };
}

/** Offset of the alias an alias error is about: the one named in the message, else the first. */
function aliasOffset(doc: Document.Parsed, message: string): number | undefined {
  if (!/alias/i.test(message)) return undefined;
  const named = /:\s*(\S+)$/.exec(message)?.[1];
  let first: number | undefined;
  let match: number | undefined;
  visit(doc, {
    Alias(_key, node) {
      const start = node.range?.[0];
      if (start === undefined) return undefined;
      first ??= start;
      if (named !== undefined && node.source === named) {
        match = start;
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return match ?? first;
}

function firstLine(message: string): string {
  return message.split("\n")[0] ?? message;
}

function toPosition(lineCounter: LineCounter, offset: number): Position {
  const pos = lineCounter.linePos(offset);
  return { line: pos.line, column: pos.col };
}

/**
 * Offset of the deepest node reached by `path`: the key of the last map entry found, or the
 * item of the last sequence index found, so a finding points at the line that says it.
 */
function offsetOf(root: YamlNode | null, path: NodePath): number | undefined {
  let node: unknown = root;
  let best: number | undefined = rangeStart(root);
  for (const segment of path) {
    if (isMap(node)) {
      const pair = node.items.find((item) => isPair(item) && keyMatches(item.key, segment));
      if (pair === undefined) return best;
      best = rangeStart(pair.key) ?? best;
      node = pair.value;
    } else if (isSeq(node) && typeof segment === "number") {
      const item = node.items[segment];
      if (item === undefined) return best;
      best = rangeStart(item) ?? best;
      node = item;
    } else {
      return best;
    }
  }
  return best;
}

function keyMatches(key: unknown, segment: string | number): boolean {
  if (isScalar(key)) return String(key.value) === String(segment);
  return false;
}

function rangeStart(node: unknown): number | undefined {
  if (node !== null && typeof node === "object" && "range" in node) {
    const range = (node as { range?: unknown }).range;
    if (Array.isArray(range) && typeof range[0] === "number") return range[0];
  }
  return undefined;
}
