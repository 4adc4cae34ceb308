/** Tolerant accessors: audited YAML can have any shape, so nothing here ever throws. */

export type Dict = Record<string, unknown>;

export function isDict(value: unknown): value is Dict {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

export function asDict(value: unknown): Dict {
  return isDict(value) ? value : {};
}

export function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/** A scalar rendered as a string; objects and lists give "" (they are not a setting's value). */
export function asText(value: unknown): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") return String(value);
  return "";
}

export function get(value: unknown, ...path: string[]): unknown {
  let current = value;
  for (const key of path) {
    if (!isDict(current)) return undefined;
    current = current[key];
  }
  return current;
}

/** `true`, "true", "True", "yes", "1", "on" → true. */
export function isTruthy(value: unknown): boolean {
  return /^(true|yes|y|on|1)$/i.test(asText(value).trim());
}

export function isFalsy(value: unknown): boolean {
  return /^(false|no|n|off|0)$/i.test(asText(value).trim());
}

/** Lower-case and drop `-`, `_` and `.`, so `app-id`, `appId` and `APP_ID` read the same. */
export function normaliseKey(key: string): string {
  return key.toLowerCase().replace(/[-_.]/g, "");
}

/** Looks a key up in a record regardless of its spelling style; returns the real key too. */
export function lookup(record: Dict, ...names: string[]): { key: string; value: unknown } | undefined {
  const wanted = new Set(names.map(normaliseKey));
  for (const [key, value] of Object.entries(record)) {
    if (wanted.has(normaliseKey(key))) return { key, value };
  }
  return undefined;
}

/**
 * Parses Go-style durations ("24h", "1h30m", "90s", "15m0s") and bare numbers (seconds) to
 * seconds. Returns undefined for anything it cannot read, so rules stay quiet on nonsense.
 */
export function durationSeconds(value: unknown): number | undefined {
  if (typeof value === "number" && Number.isFinite(value)) return value;
  const text = asText(value).trim();
  if (text === "") return undefined;
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const units: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };
  let total = 0;
  let rest = text;
  const part = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)/;
  while (rest.length > 0) {
    const match = part.exec(rest);
    if (match === null) return undefined;
    total += Number(match[1]) * (units[match[2] ?? "s"] ?? 1);
    rest = rest.slice(match[0].length);
  }
  return total;
}
