/**
 * A cheap, linear pre-check of how deeply a YAML or JSON text nests, run BEFORE the text is
 * handed to a parser. The `yaml` package (and code walking its output) recurses once per
 * level: 100k levels of `[` or of indented `a:` blocks exhaust the native stack and kill the
 * process (SIGABRT or an uncatchable RangeError). Real configuration nests a few dozen levels
 * at most, so anything deeper than {@link MAX_NESTING_DEPTH} is refused before parsing.
 *
 * The measure is an upper-bound estimate, never a parse: block levels are counted from
 * indentation (plus one per `- ` / `? ` indicator opening a nested node on the same line) and
 * flow levels from `[` / `{` outside quoted strings and comments. Block scalar content (`|`,
 * `>`) is skipped, and `[` inside a plain scalar (`pattern: ^[a-z]+$`) does not count.
 */
export const MAX_NESTING_DEPTH = 100;

export interface NestingTooDeep {
  /** The depth reached when the scan stopped (MAX + 1 or more). */
  depth: number;
  /** 1-based line and column where the limit was passed. */
  line: number;
  column: number;
}

/** Where `text` first nests deeper than `limit` levels, or undefined when it stays within it. */
export function findExcessiveNesting(text: string, limit = MAX_NESTING_DEPTH): NestingTooDeep | undefined {
  const lines = text.split(/\r\n|\r|\n/);
  /** Columns of the open block levels (strictly increasing). */
  const block: number[] = [];
  let flow = 0;
  let quote: '"' | "'" | undefined;
  /** Indentation of the line that opened a block scalar; its more indented lines are content. */
  let blockScalarIndent: number | undefined;
  for (let lineIndex = 0; lineIndex < lines.length; lineIndex += 1) {
    const line = lines[lineIndex] ?? "";
    let col = 0;
    while (col < line.length && (line[col] === " " || line[col] === "\t")) col += 1;
    const blank = col >= line.length || line[col] === "#";
    if (blockScalarIndent !== undefined) {
      if (blank || col > blockScalarIndent) continue;
      blockScalarIndent = undefined;
    }
    if (quote === undefined && flow === 0) {
      if (blank) continue;
      if (line.startsWith("---", col) || line.startsWith("...", col)) {
        if (col === 0) block.length = 0;
      }
      // Close the block levels this line is not inside of, then open one at its column.
      while (block.length > 0 && (block[block.length - 1] as number) >= col) block.pop();
      block.push(col);
      // `- - - x` and `? ? x`: each indicator opens one more level on the same line.
      while ((line[col] === "-" || line[col] === "?" || line[col] === ":") && (col + 1 >= line.length || line[col + 1] === " " || line[col + 1] === "\t")) {
        col += 1;
        while (col < line.length && (line[col] === " " || line[col] === "\t")) col += 1;
        if (col >= line.length || line[col] === "#") break;
        block.push(col);
      }
      if (block.length + flow > limit) return { depth: block.length + flow, line: lineIndex + 1, column: col + 1 };
    }
    /** Whether a `[` or `{` here would start a flow collection (not sit inside a plain scalar). */
    let valueStart = quote === undefined;
    for (let i = col; i < line.length; i += 1) {
      const char = line[i];
      if (quote !== undefined) {
        if (quote === '"' && char === "\\") i += 1;
        else if (char === quote) {
          if (quote === "'" && line[i + 1] === "'") i += 1;
          else quote = undefined;
        }
        continue;
      }
      if (char === " " || char === "\t") continue;
      if (char === "#" && (i === 0 || line[i - 1] === " " || line[i - 1] === "\t")) break;
      if (char === '"' || char === "'") {
        if (valueStart || flow > 0) quote = char;
        valueStart = false;
        continue;
      }
      if ((char === "[" || char === "{") && (valueStart || flow > 0)) {
        flow += 1;
        if (block.length + flow > limit) return { depth: block.length + flow, line: lineIndex + 1, column: i + 1 };
        valueStart = true;
        continue;
      }
      if ((char === "]" || char === "}") && flow > 0) {
        flow -= 1;
        valueStart = false;
        continue;
      }
      if (flow > 0) {
        valueStart = char === "," || char === ":";
        continue;
      }
      // Block context: after `key: ` or `- ` a value starts.
      if ((char === ":" || char === "-" || char === "?") && (i + 1 >= line.length || line[i + 1] === " " || line[i + 1] === "\t")) {
        valueStart = true;
        continue;
      }
      if ((char === "|" || char === ">") && valueStart && /^[|>][-+0-9]*\s*(#.*)?$/.test(line.slice(i))) {
        blockScalarIndent = block.length > 0 ? (block[block.length - 1] as number) : 0;
        break;
      }
      valueStart = false;
    }
  }
  return undefined;
}

/** "file:line:col: nested more than … levels deep" when `text` is too deep to parse safely, else undefined. */
export function excessiveNestingMessage(text: string, file: string): string | undefined {
  const tooDeep = findExcessiveNesting(text);
  if (tooDeep === undefined) return undefined;
  return `${file}:${tooDeep.line}:${tooDeep.column}: nested more than ${MAX_NESTING_DEPTH} levels deep; refused before parsing (no configuration nests like this)`;
}
