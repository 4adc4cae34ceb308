import type { ComponentMetadataItem, DaprComponent, ResourceKind, Rule } from "../types.ts";
import { hostsIn, isLoopbackHost, isPlaceholder, stackExchangeRedis } from "../values.ts";

export { connectionParam, hasSubstitution, hostOf, hostsIn, isLoopbackHost, isNotSecretValue, isPlaceholder, urlScheme } from "../values.ts";

/** Keeps each rule typed by the resources it checks while the registry holds them all. */
export function defineRule<K extends ResourceKind>(rule: Rule<K>): Rule {
  return rule as unknown as Rule;
}

/**
 * The metadata item of one of `names` as daprd reads it (review audit finding 3): daprd turns
 * `spec.metadata` into a map in order, `properties[c.Name] = val` (dapr/dapr
 * pkg/runtime/meta/meta.go, convertItemsToProps), so of two entries of one name the last wins;
 * components-contrib's DecodeMetadata (mapstructure) then takes the key spelled as the field's
 * tag before a case variant. So, for the first of `names` present (aliases are read in order): the
 * last entry of that name spelled exactly as given, else the last that matches without regard to case.
 */
export function metadataItem(component: DaprComponent, ...names: string[]): ComponentMetadataItem | undefined {
  const wanted = names.map((name) => name.toLowerCase());
  // Of several names (aliases: connectionString, url, dsn), the first one present, as before.
  const first = component.metadata.find((item) => wanted.includes(item.name.toLowerCase()));
  if (first === undefined) return undefined;
  const same = component.metadata.filter((item) => item.name.toLowerCase() === first.name.toLowerCase());
  const exact = same.filter((item) => names.includes(item.name));
  return exact[exact.length - 1] ?? same[same.length - 1];
}

export function componentFamily(component: DaprComponent): string {
  return component.type.split(".").slice(1).join(".").toLowerCase();
}

export function typePath(): (string | number)[] {
  return ["spec", "type"];
}

/** Names of settings that hold a secret (password, token, key material, credentials). */
const SENSITIVE_NAME = /(pass(word|wd|phrase)?$|passwd|pwd$|secret|token|api.?key|access.?key|account.?key|master.?key|private.?key|signing.?key|credential|sas.?key|auth.?key|client.?key|^authorization$)/i;
/**
 * …except names that point at where a secret lives or describe it rather than hold it:
 * files, references, identifiers, endpoints (`oidcTokenEndpoint`, `token_uri`), audiences
 * and scopes, public certificates (`oidcTokenCAPEM`, `caCert`), and settings about a secret
 * (`SESSION_SECRET_ROTATION: daily`, `TOKEN_TIMEOUT`, `PASSWORD_POLICY`, `SECRET_PROVIDER`).
 */
const NOT_A_SECRET = /(file|path|ref|name|header|ttl|type|enabled|version|prefix|store|id|url|uri|endpoint|audiences?|scopes?|namespace|length|expir|refresh.?interval|secondary|ca.?pem|ca|ca.?cert(ificate)?|root.?ca|cert(ificate)?|public.?key|issuer|mode|algorithm|format|rotation|interval|period|max.?age|timeout|duration|lifetime|count|size|policy|provider|backend|strategy|dir|directory|location)$/i;

export function isSensitiveName(name: string): boolean {
  return SENSITIVE_NAME.test(name) && !NOT_A_SECRET.test(name);
}

const ADDRESS_NAME = /(host|hosts|endpoint|endpoints|url|uri|addr|address|brokers|servers?|connection.?string|dsn|nodes|baseurl)$/i;

/**
 * True when every address a component names is on loopback (and it names at least one):
 * its traffic never leaves the machine, so transport findings are low. Addresses from
 * secrets are unknown, so they make it false.
 */
export function isLoopbackComponent(component: { metadata: readonly ComponentMetadataItem[] }): boolean {
  const addresses = component.metadata.filter((item) => ADDRESS_NAME.test(item.name));
  if (addresses.length === 0 || addresses.some((item) => !item.hasInlineValue || isPlaceholder(item.value))) return false;
  const hosts = addresses.flatMap((item) => hostsIn(item.value));
  return hosts.length > 0 && hosts.every(isLoopbackHost);
}

/** Shows what a secret looks like without showing it. */
export function redactSecret(value: string): string {
  return `<redacted, ${value.length} characters>`;
}

/**
 * Query parameters of a URL that hold no secret: TLS and auth settings, names, timeouts, an Azure
 * SAS's version and scope fields. Every other parameter's value is hidden (`auth_token`,
 * `api_key`, `sig`, `authMechanismProperties=AWS_SESSION_TOKEN:…`: review audit finding 7).
 */
const PLAIN_QUERY_KEY = /^(user|username|uid|sslmode|ssl|tls|usessl|use_ssl|encrypt|trustservercertificate|tlsinsecure|tlsallowinvalidcertificates|tlsallowinvalidhostnames|tlsdisableocspendpointcheck|insecure|sslrootcert|sslcert|authsource|authmechanism|replicaset|retrywrites|w|readpreference|directconnection|loadbalanced|connect_timeout|connecttimeoutms|sockettimeoutms|servertimeoutms|timeout|dbname|database|db|schema|charset|application_name|appname|heartbeat|vhost|channel_max|frame_max|sv|sp|sr|spr|se|st|ss|srt|srs|skoid|sktid|skt|ske|sks|skv)$/i;

/** `text` with the value of every query parameter past `from` hidden but for PLAIN_QUERY_KEY, and any fragment hidden. */
function redactQuery(text: string, from: number): string {
  const question = text.indexOf("?", from);
  const hashAt = text.indexOf("#", question < 0 ? from : question);
  const queryEnd = hashAt < 0 ? text.length : hashAt;
  let out = text.slice(0, question < 0 ? queryEnd : question);
  if (question >= 0) {
    const pairs = text.slice(question + 1, queryEnd).split("&").map((pair) => {
      const equals = pair.indexOf("=");
      if (equals < 0) return pair;
      const key = pair.slice(0, equals);
      let name = key;
      try {
        name = decodeURIComponent(key);
      } catch {
        // Shown as written; judged as written.
      }
      return PLAIN_QUERY_KEY.test(name.trim()) ? pair : `${key}=****`;
    });
    out += `?${pairs.join("&")}`;
  }
  return hashAt < 0 ? out : `${out}#****`;
}

/**
 * Removes the password part of `scheme://user:password@host`, `user:password@tcp(host)` and
 * `password=...` / `pwd=...` pairs, so that no character of it is printed. The user info ends at
 * the last `@` (as URL parsers read a password with an unencoded `@`; past a `/` too, so a
 * password the parsers cannot read is hidden as well); user info without a `:` (a token as the
 * user name) is hidden whole. A keyword value ends where its connection-string syntax ends it:
 * a quoted value at its closing quote (`\'` and `''` escapes included), an unquoted one at `;` in a
 * `;`-separated string (ADO.NET, where spaces belong to the value), at `,` in a StackExchange.Redis
 * string (which is split at commas before anything else, so a password never holds one) and else at
 * a space or `&`.
 */
export function redactConnectionString(value: string): string {
  let text = value;
  const start = text.indexOf("//");
  const at = text.lastIndexOf("@");
  if (start >= 0 && at > start) {
    const userinfo = text.slice(start + 2, at);
    const colon = userinfo.indexOf(":");
    text = `${text.slice(0, start + 2)}${colon < 0 ? "" : `${userinfo.slice(0, colon)}:`}****${text.slice(at)}`;
  }
  if (start >= 0) text = redactQuery(text, start + 2);
  else if (/@(?:tcp|unix)\(/.test(text)) text = redactQuery(text, 0);
  text = text.replace(/^([^:/@\s()]+):.*@(?=(tcp|unix)\()/s, "$1:****@");
  const semicolons = text.includes(";");
  const unquoted = semicolons ? "[^;]*" : stackExchangeRedis(text) !== undefined ? "[^,]*" : "[^\\s;&]*";
  const keyword = new RegExp(`((?:password|pwd|sharedaccesskey|accountkey|sharedaccesssignature)\\s*=\\s*)('(?:[^'\\\\]|\\\\.|'')*'|"(?:[^"\\\\]|\\\\.|"")*"|${unquoted})`, "gi");
  return text.replace(keyword, "$1****");
}
