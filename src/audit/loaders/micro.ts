import { asArray, asText, isDict, normaliseKey } from "../shape.ts";
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
    const key = microKey(prefix);
    if (key !== "") settings.set(key, { value: asText(value), path });
  };
  visit(source.data, "", []);
  return { kind: "micro-settings", source, settings };
}

function microKey(name: string): string {
  const key = normaliseKey(name);
  return key.startsWith("micro") ? key.slice("micro".length) : key;
}

/** One environment variable as a deployment file gives it, with the path to its line. */
export interface EnvPair {
  name: string;
  value: string;
  path: NodePath;
}

/**
 * micro settings given as environment variables of a container (docker-compose
 * `environment:`, Kubernetes `env:`): only the `MICRO_*` variables count. Undefined when
 * the container sets none.
 */
export function loadMicroEnv(source: SourceDocument, pairs: readonly EnvPair[]): MicroSettings | undefined {
  const settings = new Map<string, { value: string; path: NodePath }>();
  for (const pair of pairs) {
    if (!/^MICRO_/i.test(pair.name)) continue;
    settings.set(microKey(pair.name), { value: pair.value, path: pair.path });
  }
  return settings.size === 0 ? undefined : { kind: "micro-settings", source, settings };
}

/**
 * docker-compose `environment:` as a map (`KEY: value`) or a list (`- KEY=value`). `KEY:` (null)
 * and `- KEY` pass the host's variable through: no inline value.
 */
export function composeEnvironment(environment: unknown, base: NodePath): (EnvPair & { hasInlineValue: boolean })[] {
  if (isDict(environment)) {
    return Object.entries(environment).map(([name, value]) => ({ name, value: asText(value), path: [...base, name], hasInlineValue: value !== null && value !== undefined && !isDict(value) }));
  }
  return asArray(environment).map((entry, index) => {
    const text = asText(entry);
    const eq = text.indexOf("=");
    return { name: eq < 0 ? text : text.slice(0, eq), value: eq < 0 ? "" : text.slice(eq + 1), path: [...base, index], hasInlineValue: eq >= 0 };
  });
}

/** An env file counts as micro settings when it sets at least one `MICRO_*` variable. */
export function looksLikeMicroEnv(data: unknown): boolean {
  return isDict(data) && Object.keys(data).some((key) => /^MICRO_/i.test(key));
}

export function isMicroYamlName(file: string): boolean {
  return /(^|[\\/])micro(\.[\w-]+)?\.ya?ml$/i.test(file);
}
