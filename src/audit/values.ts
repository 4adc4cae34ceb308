/** Reading values: placeholders and substitutions, hosts and loopback (pure, never throws). */

/** `${X}`, `${{X}}`, `$(X)`, `{{ .Values.x }}`, `$X`, `%X%`, `{X}`: filled in by a tool before use. */
const WHOLE_SUBSTITUTION = /^(\$\{\{?[^}]*\}\}?|\$\([^)]*\)|\{\{.*\}\}|\$[A-Za-z_][A-Za-z0-9_]*|%[A-Za-z_][A-Za-z0-9_]*%|\{[A-Za-z_][A-Za-z0-9_.]*\})$/s;
/** A substitution anywhere in the value. */
const SUBSTITUTION = /\$\{\{?[^}]*\}|\$\([A-Za-z_][^)]*\)|\{\{[^}]*\}\}/;
/** Words that mark an example value rather than a real one. */
const PLACEHOLDER_WORD = /(replace|change[-_ ]?me|placeholder|example|dummy|redacted|fill[-_ ]?in|insert[-_ ]?your|^(your|my)[-_ ]|^your[A-Z_])/i;

/**
 * A value that is a placeholder filled in later, not a literal secret: empty, `null`, a
 * whole substitution, `<…>`, `[…]`, `***`, `...`, `xxxx`, or a value with a placeholder word
 * (`YOUR_API_KEY`, `REPLACE_SECRET`, `my-secret`, `changeme`).
 */
export function isPlaceholder(value: string): boolean {
  const text = value.trim();
  if (text === "" || /^(null|nil|none|~|undefined)$/i.test(text)) return true;
  if (WHOLE_SUBSTITUTION.test(text)) return true;
  if (/^<[^>]*>$/.test(text) || /^\[[^\]]*\]$/.test(text) || /^[*.…x_-]+$/i.test(text)) return true;
  return PLACEHOLDER_WORD.test(text);
}

/** A value that contains a substitution anywhere (`Bearer ${TOKEN}`, `host=${{PGHOST}}`). */
export function hasSubstitution(value: string): boolean {
  return SUBSTITUTION.test(value);
}

/**
 * A value that is not a secret whatever the name says: a URL without credentials, a file
 * path, a public certificate.
 */
export function isNotSecretValue(value: string): boolean {
  const text = value.trim();
  if (/^[a-z][a-z0-9+.-]*:\/\/[^\s]*$/i.test(text) && !URL_PASSWORD.test(text)) return true;
  if (/^(\.{0,2}\/|~\/|[A-Za-z]:\\)[^\s]*$/.test(text) || /^[\w./-]+\.(pem|key|crt|cer|der|p12|pfx|jks|json|txt|ya?ml)$/i.test(text)) return true;
  return /^-----BEGIN (CERTIFICATE|PUBLIC KEY)-----/.test(text);
}

/** Loopback destinations: `localhost` (and `*.localhost`), 127.0.0.0/8, ::1. */
export function isLoopbackHost(host: string): boolean {
  const text = host.trim().toLowerCase();
  // `[::1]:8080`, `::1` (IPv6, several colons) or `name:port`.
  const bare = text.startsWith("[") ? text.slice(1, text.indexOf("]") < 0 ? undefined : text.indexOf("]"))
    : (text.match(/:/g) ?? []).length > 1 ? text : text.replace(/:\d*$/, "");
  return bare === "localhost" || bare.endsWith(".localhost") || /^127(\.\d{1,3}){3}$/.test(bare) || bare === "::1";
}

/** Hosts named in an address value: a URL, `host:port` lists, `host=` keywords, `tcp(host)`. */
export function hostsIn(value: string): string[] {
  const text = value.trim();
  if (text === "") return [];
  const keyword = connectionParam(text, "host");
  if (keyword !== undefined) return keyword.split(",").filter((host) => host !== "");
  const tcp = /@(?:tcp|unix)\(([^)]*)\)/i.exec(text);
  if (tcp !== null) return [tcp[1] ?? ""];
  return text.split(/[,\s]+/).filter((part) => part !== "").map((part) => {
    const host = hostOf(part);
    if (host !== "") return host.split(",")[0] ?? host;
    return part.replace(/\/.*$/, "");
  });
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

/**
 * A URL's password (group 1) in `scheme://user:password@`, also `redis://:password@host` with no
 * user name: the one pattern the secret rules and isNotSecretValue read URLs with.
 */
export const URL_PASSWORD = /^[a-z][a-z0-9+.-]*:\/\/[^/@:\s]*:([^/@\s]+)@/i;

/** The scheme of a URL value, lower-cased (`pulsar+ssl`, `mongodb+srv`), or "" when it is not a URL. */
export function urlScheme(value: string): string {
  return /^([a-z][a-z0-9+.-]*):\/\//i.exec(value.trim())?.[1]?.toLowerCase() ?? "";
}
