/**
 * A small JSON Schema (draft-04) validator covering every keyword the SARIF 2.1.0 schema
 * uses: type, properties, additionalProperties, required, items, minItems, uniqueItems, enum,
 * minimum, maximum, pattern, $ref (local), anyOf, oneOf. `format` is not checked.
 */
type Schema = Record<string, unknown>;

export function validateJsonSchema(root: Schema, value: unknown): string[] {
  const errors: string[] = [];
  check(root, root, value, "$", errors);
  return errors;
}

function resolveRef(root: Schema, ref: string): Schema {
  if (!ref.startsWith("#/")) throw new Error(`unsupported $ref ${ref}`);
  let node: unknown = root;
  for (const part of ref.slice(2).split("/")) node = (node as Record<string, unknown>)[part];
  if (node === undefined) throw new Error(`dangling $ref ${ref}`);
  return node as Schema;
}

function typeOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function typeMatches(expected: string, actual: string): boolean {
  return expected === actual || (expected === "number" && actual === "integer");
}

function check(root: Schema, schema: Schema, value: unknown, at: string, errors: string[]): void {
  if (typeof schema["$ref"] === "string") {
    check(root, resolveRef(root, schema["$ref"]), value, at, errors);
    return;
  }
  const actual = typeOf(value);
  const type = schema["type"];
  if (type !== undefined) {
    const types = Array.isArray(type) ? (type as string[]) : [type as string];
    if (!types.some((expected) => typeMatches(expected, actual))) {
      errors.push(`${at}: expected ${types.join("|")}, got ${actual}`);
      return;
    }
  }
  if (Array.isArray(schema["enum"]) && !schema["enum"].some((option) => JSON.stringify(option) === JSON.stringify(value))) {
    errors.push(`${at}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema["enum"])}`);
  }
  if (typeof value === "number") {
    if (typeof schema["minimum"] === "number" && value < schema["minimum"]) errors.push(`${at}: below minimum ${schema["minimum"]}`);
    if (typeof schema["maximum"] === "number" && value > schema["maximum"]) errors.push(`${at}: above maximum ${schema["maximum"]}`);
  }
  if (typeof value === "string" && typeof schema["pattern"] === "string" && !new RegExp(schema["pattern"], "u").test(value)) {
    errors.push(`${at}: does not match ${schema["pattern"]}`);
  }
  if (Array.isArray(value)) {
    if (typeof schema["minItems"] === "number" && value.length < schema["minItems"]) errors.push(`${at}: fewer than ${schema["minItems"]} items`);
    if (schema["uniqueItems"] === true && new Set(value.map((item) => JSON.stringify(item))).size !== value.length) errors.push(`${at}: items not unique`);
    if (schema["items"] !== undefined && typeof schema["items"] === "object") {
      value.forEach((item, index) => check(root, schema["items"] as Schema, item, `${at}[${index}]`, errors));
    }
  }
  if (actual === "object") {
    const record = value as Record<string, unknown>;
    const properties = (schema["properties"] ?? {}) as Record<string, Schema>;
    for (const name of (schema["required"] ?? []) as string[]) {
      if (!(name in record)) errors.push(`${at}: missing required property ${name}`);
    }
    for (const [name, child] of Object.entries(record)) {
      if (properties[name] !== undefined) check(root, properties[name], child, `${at}.${name}`, errors);
      else if (schema["additionalProperties"] === false) errors.push(`${at}: unexpected property ${name}`);
      else if (typeof schema["additionalProperties"] === "object") check(root, schema["additionalProperties"] as Schema, child, `${at}.${name}`, errors);
    }
  }
  for (const keyword of ["anyOf", "oneOf"] as const) {
    const options = schema[keyword];
    if (!Array.isArray(options)) continue;
    const passing = options.filter((option) => {
      const sub: string[] = [];
      check(root, option as Schema, value, at, sub);
      return sub.length === 0;
    }).length;
    if (keyword === "anyOf" ? passing === 0 : passing !== 1) errors.push(`${at}: ${keyword} matched ${passing} schemas`);
  }
}
