import type { ComponentMetadataItem, DaprComponent, ResourceKind, Rule } from "../types.ts";

/** Keeps each rule typed by the resources it checks while the registry holds them all. */
export function defineRule<K extends ResourceKind>(rule: Rule<K>): Rule {
  return rule as unknown as Rule;
}

export function metadataItem(component: DaprComponent, ...names: string[]): ComponentMetadataItem | undefined {
  const wanted = names.map((name) => name.toLowerCase());
  return component.metadata.find((item) => wanted.includes(item.name.toLowerCase()));
}

export function componentFamily(component: DaprComponent): string {
  return component.type.split(".").slice(1).join(".").toLowerCase();
}

export function typePath(): (string | number)[] {
  return ["spec", "type"];
}

/** Names of settings that hold a secret (password, token, key material, credentials). */
const SENSITIVE_NAME = /(pass(word|wd|phrase)?$|passwd|pwd$|secret|token|api.?key|access.?key|account.?key|master.?key|private.?key|signing.?key|credential|sas.?key|auth.?key|client.?key)/i;
/** …except names that point at where a secret lives or describe it rather than hold it. */
const NOT_A_SECRET = /(file|path|ref|name|header|ttl|type|enabled|version|prefix|store|id|url|length|expir|refresh.?interval|secondary)$/i;

export function isSensitiveName(name: string): boolean {
  return SENSITIVE_NAME.test(name) && !NOT_A_SECRET.test(name);
}

/** A value that is a placeholder filled in later, not a literal secret. */
export function isPlaceholder(value: string): boolean {
  const text = value.trim();
  return text === "" || /^\$\{[^}]*\}$/.test(text) || /^\$\([^)]*\)$/.test(text) || /^\{\{.*\}\}$/.test(text) || /^<[^>]*>$/.test(text);
}

/** Shows what a secret looks like without showing it. */
export function redactSecret(value: string): string {
  return `<redacted, ${value.length} characters>`;
}

/** Removes the password part of `scheme://user:password@host` and `password=...` pairs. */
export function redactConnectionString(value: string): string {
  return value
    .replace(/(\/\/[^:/@\s]*):[^@/\s]*@/g, "$1:****@")
    .replace(/^([^:/@\s()]+):[^@\s/]*@(?=(tcp|unix)\()/, "$1:****@")
    .replace(/((?:password|pwd)\s*=\s*)('[^']*'|"[^"]*"|[^\s;&]*)/gi, "$1****");
}

export function hostOf(value: string): string {
  const match = /^[a-z][a-z0-9+.-]*:\/\/(?:[^@/]*@)?([^/?#]*)/i.exec(value.trim());
  return match?.[1] ?? "";
}

/** Query/keyword parameter of a connection string (URL `?a=b&c=d` or libpq `a=b c=d`). */
export function connectionParam(value: string, name: string): string | undefined {
  const pattern = new RegExp(`(?:^|[?&;\\s])${name}\\s*=\\s*('[^']*'|"[^"]*"|[^\\s&;]*)`, "i");
  const match = pattern.exec(value);
  if (match === null) return undefined;
  return (match[1] ?? "").replace(/^['"]|['"]$/g, "");
}
