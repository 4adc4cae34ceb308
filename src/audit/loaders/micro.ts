import { asText, isDict, normaliseKey } from "../shape.ts";
import type { MicroSettings, NodePath, SourceDocument } from "../types.ts";

/**
 * micro/go-micro settings are read in one normalised form: keys lower-cased, `micro_` prefix
 * dropped, and `-`, `_`, `.` removed, so `MICRO_TLS_INSECURE=true`, `tls_insecure: true` and
 * `tls: { insecure: true }` in micro.yaml all become `tlsinsecure`.
 */
export function loadMicroSettings(source: SourceDocument): MicroSettings {
  const settings = new Map<string, { value: string; path: NodePath }>();
  const visit = (value: unknown, prefix: string, path: NodePath): void => {
    if (isDict(value)) {
      for (const [key, child] of Object.entries(value)) visit(child, `${prefix}${key}`, [...path, key]);
      return;
    }
    if (Array.isArray(value)) return;
    let key = normaliseKey(prefix);
    if (key.startsWith("micro")) key = key.slice("micro".length);
    if (key !== "") settings.set(key, { value: asText(value), path });
  };
  visit(source.data, "", []);
  return { kind: "micro-settings", source, settings };
}

/** An env file counts as micro settings when it sets at least one `MICRO_*` variable. */
export function looksLikeMicroEnv(data: unknown): boolean {
  return isDict(data) && Object.keys(data).some((key) => /^MICRO_/i.test(key));
}

export function isMicroYamlName(file: string): boolean {
  return /(^|[\\/])micro(\.[\w-]+)?\.ya?ml$/i.test(file);
}
