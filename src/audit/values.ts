/** Reading values: placeholders and substitutions, hosts and loopback (pure, never throws). */

/** `${X}`, `${{X}}`, `$(X)`, `{{ .Values.x }}`, `$X`, `%X%`, `{X}`: filled in by a tool before use. */
const WHOLE_SUBSTITUTION = /^(\$\{\{?[^}]*\}\}?|\$\([^)]*\)|\{\{.*\}\}|\$[A-Za-z_][A-Za-z0-9_]*|%[A-Za-z_][A-Za-z0-9_]*%|\{[A-Za-z_][A-Za-z0-9_.]*\})$/s;
/** A substitution anywhere in the value. */
const SUBSTITUTION = /\$\{\{?[^}]*\}|\$\([A-Za-z_][^)]*\)|\{\{[^}]*\}\}/;
/** Words that alone make a value an example (`example`, `dummy`, `changeme`). */
const PLACEHOLDER_MARKER = new Set(["replace", "replaceme", "changeme", "changeit", "change", "placeholder", "example", "examples", "sample", "dummy", "redacted", "fill", "insert", "enter", "todo", "tbd", "fixme", "fake", "xxx", "xxxx"]);
/** Words a placeholder starts with, whatever follows (`YOUR_REDIS_PASSWORD`, `replace-with-…`). */
const PLACEHOLDER_LEAD = new Set(["your", "replace", "replaceme", "changeme", "change", "insert", "enter", "fill", "put", "todo", "tbd", "fixme"]);
/** Words a placeholder may hold besides its markers (`dummy-password`, `changeme-in-production`). */
const PLACEHOLDER_FILLER = new Set(["me", "it", "with", "your", "my", "own", "the", "a", "an", "in", "here", "this", "to", "before", "use", "real", "actual", "value", "secret", "password", "pass", "passwd", "pwd", "token", "key", "api", "apikey", "access", "private", "client", "account", "user", "username", "name", "id", "string", "connection", "goes", "prod", "production"]);

/**
 * A value that is, as a whole, a placeholder phrase: letters and `-`/`_`/`.`/space separators only
 * (no digit or symbol a real password would carry; camelCase words count as words), and either
 * it starts with a placeholder lead word and says more (`YOUR_API_KEY`, `yourPassword`,
 * `replace-with-your-key`, `CHANGE_ME`), or it starts with `my` and the rest are filler words
 * (`my-secret`, `my_password`), or every word is a marker or filler word with at least one marker
 * (`example`, `dummy`, `dummy-password`, `changeme-in-production`). `my_Pr0d-pass!`, `MyDogRex`,
 * `dummyPass42` and `example-password-123` are not.
 */
function isPlaceholderPhrase(text: string): boolean {
  if (!/^[A-Za-z]+([-_. ][A-Za-z]+)*$/.test(text)) return false;
  const words = text.replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase().split(/[-_. ]/);
  const [first = "", ...rest] = words;
  const filler = (word: string): boolean => PLACEHOLDER_MARKER.has(word) || PLACEHOLDER_FILLER.has(word) || PLACEHOLDER_LEAD.has(word);
  if (PLACEHOLDER_LEAD.has(first) && rest.length > 0) return true;
  if (first === "my" && rest.length > 0 && rest.every(filler)) return true;
  return words.some((word) => PLACEHOLDER_MARKER.has(word)) && words.every(filler);
}

/**
 * A value that is a placeholder filled in later, not a literal secret: empty, `null`, a
 * whole substitution, `<…>`, `[…]`, `***`, `...`, `xxxx`, or a value that is wholly a placeholder
 * phrase (`YOUR_API_KEY`, `REPLACE_SECRET`, `my-secret`, `changeme`, `example`, `dummy`). Whole
 * value only: a real value that merely contains such a word (`my_Pr0d-pass!`, `dummyPass42`,
 * `db.example.com`) is not a placeholder.
 */
export function isPlaceholder(value: string): boolean {
  const text = value.trim();
  if (text === "" || /^(null|nil|none|~|undefined)$/i.test(text)) return true;
  if (WHOLE_SUBSTITUTION.test(text)) return true;
  if (/^<[^>]*>$/.test(text) || /^\[[^\]]*\]$/.test(text) || /^[*.…x_-]+$/i.test(text)) return true;
  return isPlaceholderPhrase(text);
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
  if (/^[a-z][a-z0-9+.-]*:\/\/[^\s]*$/i.test(text) && urlPassword(text) === undefined) return true;
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

/**
 * Hosts named in an address value: a URL, `host:port` lists, `host=` keywords, `tcp(host)`. libpq's
 * `hostaddr` comes first: it is the address dialled, `host` then only names the server for
 * verification (libpq-connect.html); a URL's `?host=`/`?hostaddr=` override its authority likewise.
 */
export function hostsIn(value: string): string[] {
  const text = value.trim();
  if (text === "") return [];
  const keyword = connectionParam(text, "hostaddr") ?? connectionParam(text, "host");
  if (keyword !== undefined) return keyword.split(",").filter((host) => host !== "");
  const tcp = /@(?:tcp|unix)\(([^)]*)\)/i.exec(text);
  if (tcp !== null) return [tcp[1] ?? ""];
  return text.split(/[,\s]+/).filter((part) => part !== "").map((part) => {
    const host = hostOf(part);
    if (host !== "") return host.split(",")[0] ?? host;
    return part.replace(/\/.*$/, "");
  });
}

/**
 * The host (and port) of a `scheme://` URL, without its user info, or "" when it is not a URL.
 * The user info ends at the **last** `@` of the value, also past a `/`, `?` or `#`: URL parsers
 * (WHATWG, Go, Node's legacy parser, so node-postgres, ioredis, mongodb) split a password with an
 * unencoded `@` at the last `@`, and a value whose password holds a `/` must not show any of it
 * either. What this returns is printed in evidence, so it never holds part of a password; a
 * rare `@` in a path or query makes it show less (the part after that `@`), never more.
 */
export function hostOf(value: string): string {
  const match = /^[a-z][a-z0-9+.-]*:\/\/(.*)$/is.exec(value.trim());
  if (match === null) return "";
  const rest = match[1] ?? "";
  return /^[^/?#]*/.exec(rest.slice(rest.lastIndexOf("@") + 1))?.[0] ?? "";
}

/**
 * The user info of a `scheme://` URL as URL parsers read it (up to the last `@` before the first
 * `/`, `?` or `#`), or undefined when there is none.
 */
export function urlUserinfo(value: string): string | undefined {
  const authority = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(value.trim())?.[1] ?? "";
  const at = authority.lastIndexOf("@");
  return at < 0 ? undefined : authority.slice(0, at);
}

/**
 * A URL's password: the user info after its first `:` (`scheme://user:password@`, also
 * `redis://:password@host` with no user name and `postgres://admin@server:pa@ss@host`, Azure's
 * `user@server` user name with a password holding an `@`), or undefined when there is none.
 */
export function urlPassword(value: string): string | undefined {
  const userinfo = urlUserinfo(value);
  if (userinfo === undefined || !userinfo.includes(":")) return undefined;
  const password = userinfo.slice(userinfo.indexOf(":") + 1);
  return /\s/.test(password) || password === "" ? undefined : password;
}

/** Query/keyword parameter of a connection string (URL `?a=b&c=d` or libpq `a=b c=d`). */
export function connectionParam(value: string, name: string): string | undefined {
  const pattern = new RegExp(`(?:^|[?&;\\s])${name}\\s*=\\s*('[^']*'|"[^"]*"|[^\\s&;]*)`, "i");
  const match = pattern.exec(value);
  if (match === null) return undefined;
  return (match[1] ?? "").replace(/^['"]|['"]$/g, "");
}


/** The scheme of a URL value, lower-cased (`pulsar+ssl`, `mongodb+srv`), or "" when it is not a URL. */
export function urlScheme(value: string): string {
  return /^([a-z][a-z0-9+.-]*):\/\//i.exec(value.trim())?.[1]?.toLowerCase() ?? "";
}

/**
 * StackExchange.Redis configuration-string options (docs/Configuration.md, "Configuration
 * Options"), lower-cased: the parser matches them in any case.
 */
const SE_REDIS_OPTIONS = new Set([
  "abortconnect", "allowadmin", "channelprefix", "checkcertificaterevocation", "connectretry", "connecttimeout", "configchannel",
  "configcheckseconds", "topologyrefreshseconds", "defaultdatabase", "keepalive", "tcpkeepalive", "name", "password", "sentinelpassword", "user",
  "sentineluser", "proxy", "resolvedns", "servicename", "ssl", "sslhost", "sslprotocols", "synctimeout", "asynctimeout", "tiebreaker",
  "version", "tunnel", "setlib", "protocol", "highintegrity", "defaults", "responsetimeout", "writebuffer",
]);
/** Options only a StackExchange.Redis string has (`name`, `version`, `proxy` alone say nothing). */
const SE_REDIS_DISTINCT = new Set(["abortconnect", "allowadmin", "checkcertificaterevocation", "connectretry", "connecttimeout", "defaultdatabase",
  "keepalive", "password", "sentinelpassword", "resolvedns", "servicename", "ssl", "sslhost", "sslprotocols", "synctimeout", "asynctimeout", "user"]);
/** A server endpoint: `host`, `host:port`, `[v6]:port`. */
const SE_REDIS_ENDPOINT = /^([A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?$/;

export interface StackExchangeRedisString {
  endpoints: string[];
  /** Options by lower-cased key: the key as written and its value. */
  options: Map<string, { key: string; value: string }>;
}

/**
 * A StackExchange.Redis configuration string (.NET's Redis client, the form the Azure portal gives
 * for Azure Cache for Redis: `name.redis.cache.windows.net:6380,password=KEY,ssl=True,abortConnect=False`),
 * or undefined. StackExchange.Redis docs/Configuration.md: "Tokens in the configuration string are
 * comma-separated; any without an `=` sign are assumed to be redis server endpoints". Read only
 * when every token is an endpoint or a known option (or a `$COMMAND=` map), with at least one
 * endpoint and one option only this client has, so a broker list or a tag list is not one.
 */
export function stackExchangeRedis(value: string): StackExchangeRedisString | undefined {
  const text = value.trim();
  if (!text.includes(",") || !text.includes("=") || text.includes("://") || text.includes(";")) return undefined;
  const endpoints: string[] = [];
  const options = new Map<string, { key: string; value: string }>();
  for (const raw of text.split(",")) {
    const token = raw.trim();
    if (token === "") continue;
    const equals = token.indexOf("=");
    if (equals < 0) {
      if (!SE_REDIS_ENDPOINT.test(token)) return undefined;
      endpoints.push(token);
      continue;
    }
    const key = token.slice(0, equals).trim();
    if (key.startsWith("$")) continue;
    if (!SE_REDIS_OPTIONS.has(key.toLowerCase())) return undefined;
    options.set(key.toLowerCase(), { key, value: token.slice(equals + 1).trim() });
  }
  if (endpoints.length === 0 || ![...options.keys()].some((key) => SE_REDIS_DISTINCT.has(key))) return undefined;
  return { endpoints, options };
}
