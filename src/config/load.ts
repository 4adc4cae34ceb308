import { isMap, isSeq, LineCounter, parseDocument, type Node as YamlNode } from "yaml";
import type * as z from "zod";
import { MeshwardError, withoutPemBlocks } from "../errors.ts";
import { INPUT_LIMITS, readInputText } from "../util/read-input.ts";
import { excessiveNestingMessage } from "../util/yaml-depth.ts";

export interface SourcePosition {
  readonly file: string;
  readonly line: number;
  readonly column: number;
}

/**
 * Parses YAML text and validates it with a zod schema. Every error names file:line:column
 * of the offending field (or of the nearest parent that exists) and what is expected.
 */
export function parseYamlConfig<S extends z.ZodType>(text: string, schema: S, file: string): z.infer<S> {
  const tooDeep = excessiveNestingMessage(text, file);
  if (tooDeep !== undefined) throw new MeshwardError("E_CONFIG_INVALID", tooDeep);
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const pos = lineCounter.linePos(first.pos[0]);
    throw new MeshwardError("E_CONFIG_INVALID", `${file}:${pos.line}:${pos.col}: ${first.message.split("\n")[0]}`);
  }
  const data: unknown = doc.toJS() ?? {};
  const result = schema.safeParse(data);
  if (result.success) return result.data;
  const messages = result.error.issues.slice(0, 5).map((issue) => {
    const path = issue.path.map((p) => (typeof p === "symbol" ? p.toString() : p));
    // An unknown key is shown where it is written, not at the mapping holding it.
    const unknownKey = issue.code === "unrecognized_keys" ? issue.keys[0] : undefined;
    const node = (unknownKey === undefined ? undefined : keyNodeIn(nodeAt(doc.contents, path), unknownKey)) ?? nodeAt(doc.contents, path);
    const offset = node?.range?.[0] ?? 0;
    const pos = lineCounter.linePos(offset);
    const field = path.length > 0 ? path.join(".") : "(document)";
    // Never a pasted key, whatever the message (a library's included): the net under shownValue.
    return `${file}:${pos.line}:${pos.col}: ${field}: ${withoutPemBlocks(issue.message)}`;
  });
  throw new MeshwardError("E_CONFIG_INVALID", messages.join("\n"), { details: { file } });
}

export function loadYamlConfig<S extends z.ZodType>(file: string, schema: S): z.infer<S> {
  let text: string;
  try {
    text = readInputText(file, { what: "config file", maxBytes: INPUT_LIMITS.config });
  } catch (error) {
    if (error instanceof MeshwardError) throw error;
    throw new MeshwardError("E_CONFIG_MISSING", `cannot read config file ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {
      cause: error,
    });
  }
  return parseYamlConfig(text, schema, file);
}

/** The node of `key` itself (not its value) in a YAML mapping, for pointing at an unknown key. */
export function keyNodeIn(mapping: unknown, key: string): YamlNode | undefined {
  if (!isMap(mapping)) return undefined;
  const pair = mapping.items.find((item) => (item.key as { value?: unknown } | null)?.value === key);
  return (pair?.key ?? undefined) as YamlNode | undefined;
}

/** The deepest node that exists along `path` (so a missing field points at its parent). */
function nodeAt(root: unknown, path: readonly (string | number)[]): YamlNode | undefined {
  let node = root as YamlNode | undefined;
  for (const key of path) {
    let next: unknown;
    if (isMap(node)) {
      const pair = node.items.find((item) => (item.key as { value?: unknown } | null)?.value === key);
      next = pair?.value ?? pair?.key;
    } else if (isSeq(node) && typeof key === "number") {
      next = node.items[key];
    }
    if (next === undefined || next === null) break;
    node = next as YamlNode;
  }
  return node;
}
