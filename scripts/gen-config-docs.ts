/**
 * Writes docs/configuration.md from the zod schemas of every config file, so the reference
 * cannot drift from the code: each field's path, type, default and `.describe()` text.
 *
 *   node --import tsx scripts/gen-config-docs.ts          # rewrite docs/configuration.md
 *   node --import tsx scripts/gen-config-docs.ts --check  # exit 1 when it is out of date
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as z from "zod";

interface SchemaSource {
  /** Module path from the repository root. */
  readonly module: string;
  readonly exportName: string;
  readonly title: string;
  readonly intro: string;
}

/** Config files in the order the guide presents them. A module that does not exist yet is skipped. */
export const CONFIG_SCHEMAS: readonly SchemaSource[] = [
  {
    module: "src/config/ca.ts",
    exportName: "caConfigSchema",
    title: "CA: `meshward ca serve --config ca.yaml`",
    intro: "Flags given to `meshward ca serve` override the file. Unknown fields are refused.",
  },
  {
    module: "src/config/sidecar.ts",
    exportName: "sidecarConfigSchema",
    title: "Sidecar: `meshward sidecar --config sidecar.yaml`",
    intro: "Every field is also a flag of `meshward sidecar` (see `--help`); flags override the file. Unknown fields are refused.",
  },
];

const ROOT = new URL("../", import.meta.url);
export const OUTPUT = fileURLToPath(new URL("docs/configuration.md", ROOT));

interface Row {
  readonly path: string;
  readonly type: string;
  readonly required: boolean;
  readonly defaultText: string;
  readonly description: string;
}

type AnySchema = z.ZodType & { _zod: { def: Record<string, unknown> & { type: string } }; description?: string };

function def(schema: AnySchema) {
  return schema._zod.def;
}

/** Peels optional/default/nullable wrappers, noting what they say. */
function unwrap(schema: AnySchema): { inner: AnySchema; optional: boolean; defaultValue?: unknown; description?: string } {
  let current = schema;
  let optional = false;
  let defaultValue: unknown;
  let description = schema.description;
  for (;;) {
    const d = def(current);
    if (d.type === "optional" || d.type === "nullable") optional = true;
    else if (d.type === "default" || d.type === "prefault") {
      optional = true;
      if (defaultValue === undefined) defaultValue = d.defaultValue;
    } else break;
    current = d.innerType as AnySchema;
    description ??= current.description;
  }
  return { inner: current, optional, ...(defaultValue !== undefined ? { defaultValue } : {}), ...(description !== undefined ? { description } : {}) };
}

/** A duration field parses "1h" to 3 600 000 ms. */
function isDuration(schema: AnySchema): boolean {
  if (def(schema).type !== "pipe") return false;
  const parsed = schema.safeParse("1h");
  return parsed.success && parsed.data === 3_600_000;
}

function compactDuration(ms: number): string {
  if (ms < 2 * 86_400_000 && ms >= 3_600_000 && ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  const units: [string, number][] = [["y", 365 * 86_400_000], ["d", 86_400_000], ["h", 3_600_000], ["m", 60_000], ["s", 1000]];
  for (const [unit, size] of units) if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  return `${ms}ms`;
}

function typeText(schema: AnySchema): string {
  if (isDuration(schema)) return "duration (`90s`, `15m`, `24h`, `30d`)";
  const json = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as Record<string, unknown>;
  return jsonTypeText(json);
}

function jsonTypeText(json: Record<string, unknown>): string {
  if (Array.isArray(json.enum)) return json.enum.map((v) => `\`${JSON.stringify(v)}\``).join(" | ");
  if (json.const !== undefined) return `\`${JSON.stringify(json.const)}\``;
  const anyOf = (json.anyOf ?? json.oneOf) as Record<string, unknown>[] | undefined;
  if (anyOf) return anyOf.map(jsonTypeText).join(" or ");
  switch (json.type) {
    case "array":
      return `list of ${jsonTypeText((json.items ?? {}) as Record<string, unknown>)}`;
    case "object":
      if (json.additionalProperties && typeof json.additionalProperties === "object" && !json.properties) {
        return `map of name → ${jsonTypeText(json.additionalProperties as Record<string, unknown>)}`;
      }
      if (json.properties) {
        const props = Object.keys(json.properties as object).map((k) => `\`${k}\``).join(", ");
        return `object (${props})`;
      }
      return "object";
    case "integer":
    case "number": {
      const range = json.minimum !== undefined && json.maximum !== undefined ? ` ${json.minimum}–${json.maximum}` : "";
      return `${json.type}${range}`;
    }
    case undefined:
      return "any";
    default:
      return String(json.type);
  }
}

function defaultText(value: unknown, inner: AnySchema): string {
  if (value === undefined) return "";
  if (isDuration(inner) && typeof value === "number") return `\`${compactDuration(value)}\``;
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    return Object.keys(value).length === 0 ? "`{}`" : "see its fields";
  }
  return `\`${JSON.stringify(value)}\``;
}

function collectRows(schema: AnySchema, prefix: string, rows: Row[]): void {
  const shape = (schema as unknown as { shape: Record<string, AnySchema> }).shape;
  for (const [key, field] of Object.entries(shape)) {
    const path = `${prefix}${key}`;
    const { inner, optional, defaultValue, description } = unwrap(field);
    rows.push({ path, type: typeText(inner), required: !optional, defaultText: defaultText(defaultValue, inner), description: description ?? "" });
    const kind = def(inner).type;
    if (kind === "object") collectRows(inner, `${path}.`, rows);
    if (kind === "array") {
      const element = unwrap(def(inner).element as AnySchema).inner;
      if (def(element).type === "object") collectRows(element, `${path}[].`, rows);
    }
    if (kind === "union") {
      for (const option of def(inner).options as AnySchema[]) {
        const unwrapped = unwrap(option).inner;
        if (def(unwrapped).type === "object") collectRows(unwrapped, `${path}.`, rows);
      }
    }
  }
}

function cell(text: string): string {
  return text.replace(/\|/g, "\\|").replace(/\n+/g, " ");
}

/** The whole of docs/configuration.md. */
export async function renderConfigDocs(): Promise<string> {
  const out: string[] = [
    "# Configuration reference",
    "",
    "<!-- Generated by scripts/gen-config-docs.ts from the zod schemas in src/config/. Do not edit by hand:",
    "     run `node --import tsx scripts/gen-config-docs.ts` after changing a schema. -->",
    "",
    "Every meshward config file is YAML, validated when it is loaded; an error names the file, line and",
    "column of the offending field. Durations are written with a unit (`90s`, `15m`, `24h`, `30d`,",
    "`1h30m`); a bare number means seconds. A file (config or access policy) nested more than 100",
    "levels deep is refused before it is parsed, naming the line and column where the limit was passed.",
    "An error shows the rejected value only in part: at most 40 characters of it (with its length), and",
    "nothing of a value that holds a PEM block (`(a PEM block, not shown)`), so a private key pasted into",
    "the wrong field does not end up on the terminal or in the logs.",
    "",
  ];
  for (const source of CONFIG_SCHEMAS) {
    const file = new URL(source.module, ROOT);
    if (!existsSync(file)) continue;
    const module = (await import(file.href)) as Record<string, unknown>;
    const schema = module[source.exportName] as AnySchema | undefined;
    if (schema === undefined) throw new Error(`${source.module} does not export ${source.exportName}`);
    const rows: Row[] = [];
    collectRows(schema, "", rows);
    out.push(`## ${source.title}`, "", `Schema: \`${source.exportName}\` in \`${source.module}\`. ${source.intro}`, "");
    out.push("| field | type | required | default | description |", "| --- | --- | --- | --- | --- |");
    for (const row of rows) {
      out.push(`| \`${row.path}\` | ${cell(row.type)} | ${row.required ? "yes" : "no"} | ${cell(row.defaultText)} | ${cell(row.description)} |`);
    }
    out.push("");
  }
  return out.join("\n");
}

async function main(args: readonly string[]): Promise<number> {
  const text = await renderConfigDocs();
  if (args.includes("--check")) {
    const current = existsSync(OUTPUT) ? readFileSync(OUTPUT, "utf8") : "";
    if (current === text) return 0;
    process.stderr.write("docs/configuration.md is out of date: run `node --import tsx scripts/gen-config-docs.ts`\n");
    return 1;
  }
  writeFileSync(OUTPUT, text);
  process.stdout.write(`wrote ${OUTPUT}\n`);
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2));
}
