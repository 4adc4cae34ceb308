import type { Position, SourceDocument } from "./types.ts";

/**
 * Reads an env-style file (`KEY=value`, optional `export `, quotes, `#` comments) into a
 * document whose data is a flat record; `locate([KEY])` points at the line that sets KEY.
 */
export function parseEnvFile(file: string, text: string): SourceDocument {
  const data: Record<string, string> = {};
  const positions = new Map<string, Position>();
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    const match = /^(\s*)(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)$/.exec(raw);
    if (match === null) return;
    const key = match[2] ?? "";
    data[key] = unquote((match[3] ?? "").trim());
    positions.set(key, { line: index + 1, column: raw.indexOf(key) + 1 });
  });
  return {
    file,
    index: 0,
    data,
    locate: (path) => positions.get(String(path[0])) ?? { line: 1, column: 1 },
  };
}

function unquote(value: string): string {
  if (value.length >= 2 && (value[0] === '"' || value[0] === "'") && value.endsWith(value[0])) {
    return value.slice(1, -1);
  }
  const hash = value.indexOf(" #");
  return hash >= 0 ? value.slice(0, hash).trim() : value;
}
