/** One RFC 6902 operation; the injector only needs add, replace and remove. */
export type JsonPatchOperation =
  | { readonly op: "add" | "replace"; readonly path: string; readonly value: unknown }
  | { readonly op: "remove"; readonly path: string };

/** RFC 6901: "~" → "~0", "/" → "~1" (annotation keys such as meshward.io/injected hold "/"). */
export function pointerSegment(key: string | number): string {
  return String(key).replace(/~/g, "~0").replace(/\//g, "~1");
}

/**
 * The JSON Patch that turns `before` into `after`: objects are compared key by key, arrays
 * are replaced whole when they differ (so no index shifts between operations). Applied by
 * the API server (evanphx/json-patch) or any RFC 6902 library, it gives `after` exactly.
 */
export function diffJson(before: unknown, after: unknown, path = ""): JsonPatchOperation[] {
  if (JSON.stringify(before) === JSON.stringify(after)) return [];
  if (isObject(before) && isObject(after)) {
    const ops: JsonPatchOperation[] = [];
    for (const key of Object.keys(before)) if (!Object.hasOwn(after, key)) ops.push({ op: "remove", path: `${path}/${pointerSegment(key)}` });
    for (const [key, value] of Object.entries(after)) {
      const child = `${path}/${pointerSegment(key)}`;
      if (Object.hasOwn(before, key)) ops.push(...diffJson(before[key], value, child));
      else ops.push({ op: "add", path: child, value });
    }
    return ops;
  }
  return [{ op: "replace", path, value: after }];
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}
