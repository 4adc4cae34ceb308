import { cgiFieldName, hasLength, lengthTable } from "./headers.ts";

/**
 * The one canonical form of a request target: what the access policy judges and exactly what
 * the app is sent. HTTP/1.1 and HTTP/2, inbound and outbound, all go through `canonicalTarget`.
 *
 * The path is normalised per RFC 3986 §6 (percent-encodings of unreserved characters decoded,
 * and those of the other characters a path may carry as they are, `:`, `@` and the sub-delims but
 * `;`, because every common server decodes them before routing: a policy denying `/a/*:delete`
 * must see `/a/1%3Adelete` as the app will; other escapes upper-cased, dot segments removed,
 * empty segments merged) and the target is
 * turned into origin-form (RFC 9112 §3.2). Whatever common servers read in different ways is
 * refused instead of guessed at, as Envoy's HTTP connection manager does by default
 * (`path_with_escaped_slashes_action`, `normalize_path`, `merge_slashes`, and its refusal of
 * backslashes and control characters):
 *   - `%2F` and `%5C` (escaped slashes: some servers split on them after decoding, some do not);
 *   - a raw backslash (WHATWG URL and IIS read it as `/`);
 *   - `;` in the path: Tomcat, Jetty and Spring strip `;` parameters from each segment before
 *     routing (`/admin;x/secret` is their `/admin/secret`; `..;` their `..`), other servers keep
 *     them. `%3B` stays escaped: every server reads it as a plain character of the segment;
 *   - NUL and other control characters, raw or escaped; characters RFC 3986 does not allow in
 *     a path (space, `"`, `<`, `>`, `^`, `` ` ``, `{`, `|`, `}`, non-ASCII); `#`; malformed `%`;
 *   - escaped bytes ≥ 0x80 that are not well-formed UTF-8 (RFC 3629 §4): overlong forms
 *     (`%C0%AE` for `.`, `%C0%AF` and `%E0%80%AF` for `/`), surrogates (`%ED%A0%80`), code points
 *     above U+10FFFF, stray continuation bytes, truncated sequences. Lenient decoders (Tomcat
 *     before CVE-2008-2938, IIS's %u/overlong handling, some Java and .NET ones) read overlong
 *     forms as the ASCII character, so `/a/%C0%AE%C0%AE/admin` would route as `/admin`;
 *     well-formed UTF-8 escapes are kept as they are (upper-cased);
 *   - `*` for any method but OPTIONS; a target in authority-form; userinfo in absolute-form.
 */

export type EscapedSlashAction = "reject" | "unescape" | "keep";

export interface CanonicalTarget {
  /** The origin-form target sent to the app: the canonical path, then `?query` as received. */
  readonly target: string;
  /** The canonical path without the query: the operation the policy judges. */
  readonly path: string;
  /** The authority of an absolute-form target ("host[:port]"), which must agree with Host. */
  readonly authority: string | undefined;
}

/** A refusal: why the target is ambiguous or malformed (a sentence for the 400 answer). */
export interface TargetRefusal {
  readonly refused: string;
}

// RFC 3986 pchar (unreserved / sub-delims / ":" / "@") plus "/", as a table over ASCII.
const PATH_CHAR = new Uint8Array(128);
for (const c of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/") PATH_CHAR[c.charCodeAt(0)] = 1;
// Escapes decoded into the canonical path: pchar but "/" (an escaped slash is decided apart) and
// ";" (a parameter delimiter to Java servers when raw, so it stays escaped).
const DECODED = new Uint8Array(128);
for (const c of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,=:@") DECODED[c.charCodeAt(0)] = 1;

const SLASH = 47;
const DOT = 46;
const PERCENT = 37;
const SEMICOLON = 59;

/**
 * True when `path` (no query) is already canonical: only plain path characters, no `%`, no `;`,
 * no empty segment and no `.`/`..` segment. Most real paths are; they cost one scan.
 */
function isPlainCanonical(path: string): boolean {
  const n = path.length;
  if (n === 0 || path.charCodeAt(0) !== SLASH) return false;
  let previous = SLASH;
  for (let i = 1; i < n; i++) {
    const c = path.charCodeAt(i);
    if (c >= 128 || PATH_CHAR[c] === 0 || c === PERCENT || c === SEMICOLON) return false;
    if (c === SLASH && previous === SLASH) return false;
    if (previous === SLASH && c === DOT) {
      const next = i + 1 < n ? path.charCodeAt(i + 1) : SLASH;
      if (next === SLASH || (next === DOT && (i + 2 >= n || path.charCodeAt(i + 2) === SLASH))) return false;
    }
    previous = c;
  }
  return true;
}

const HEX = /^[0-9A-Fa-f]{2}$/;

const INVALID_UTF8 =
  "percent-escaped bytes that are not well-formed UTF-8 (RFC 3629: an overlong form such as %C0%AE for '.', a surrogate, a code point above U+10FFFF, a stray or missing continuation byte), which some servers decode to '.' or '/'";

/**
 * The bytes a continuation at this point of a UTF-8 sequence may take (RFC 3629 §4: the first
 * continuation after E0, ED, F0 and F4 is narrower, which excludes overlong forms, surrogates and
 * code points above U+10FFFF), as [low, high]; `lead` is the sequence's first byte.
 */
function continuationRange(lead: number, first: boolean): [number, number] {
  if (!first) return [0x80, 0xbf];
  if (lead === 0xe0) return [0xa0, 0xbf];
  if (lead === 0xed) return [0x80, 0x9f];
  if (lead === 0xf0) return [0x90, 0xbf];
  if (lead === 0xf4) return [0x80, 0x8f];
  return [0x80, 0xbf];
}

/** Continuation bytes a UTF-8 lead byte needs (RFC 3629 §4), or -1 for a byte no sequence starts with (80–C1, F5–FF). */
function continuationsAfter(lead: number): number {
  if (lead >= 0xc2 && lead <= 0xdf) return 1;
  if (lead >= 0xe0 && lead <= 0xef) return 2;
  if (lead >= 0xf0 && lead <= 0xf4) return 3;
  return -1;
}

/** One segment with its escapes decided; a refusal string when it cannot be made canonical. */
function canonicalSegment(segment: string, escapedSlashes: EscapedSlashAction): string | TargetRefusal {
  let out = "";
  // A UTF-8 sequence being read from escapes: its lead byte and the continuations still wanted.
  // Escaped bytes ≥ 0x80 must be well-formed UTF-8 (RFC 3629); anything but its next
  // continuation escape while one is wanted (another character, an ASCII escape, the segment's
  // end) leaves it truncated.
  let lead = 0;
  let wanted = 0;
  for (let i = 0; i < segment.length; i++) {
    const c = segment.charCodeAt(i);
    if (c !== PERCENT) {
      if (wanted > 0) return { refused: INVALID_UTF8 };
      if (c >= 128 || PATH_CHAR[c] === 0) return { refused: refusedCharacter(c) };
      out += segment[i];
      continue;
    }
    const hex = segment.slice(i + 1, i + 3);
    if (!HEX.test(hex)) return { refused: "a '%' that does not start a percent-encoding (RFC 3986 §2.1)" };
    i += 2;
    const byte = Number.parseInt(hex, 16);
    if (wanted > 0) {
      const all = continuationsAfter(lead);
      const [low, high] = continuationRange(lead, wanted === all);
      if (byte < low || byte > high) return { refused: INVALID_UTF8 };
      wanted--;
      out += `%${hex.toUpperCase()}`;
      continue;
    }
    if (byte >= 0x80) {
      wanted = continuationsAfter(byte);
      if (wanted < 0) return { refused: INVALID_UTF8 };
      lead = byte;
      out += `%${hex.toUpperCase()}`;
      continue;
    }
    if (byte < 0x20 || byte === 0x7f) return { refused: "an escaped control character (such as %00)" };
    if (byte === SLASH || byte === 0x5c) {
      if (escapedSlashes === "reject") return { refused: `an escaped ${byte === SLASH ? "slash (%2F)" : "backslash (%5C)"}, which servers decode differently (escapedSlashes: reject)` };
      // "unescape" was applied before splitting; only "keep" gets here.
      out += `%${hex.toUpperCase()}`;
      continue;
    }
    if (DECODED[byte] === 1) out += String.fromCharCode(byte);
    else out += `%${hex.toUpperCase()}`;
  }
  if (wanted > 0) return { refused: INVALID_UTF8 };
  return out;
}

function refusedCharacter(c: number): string {
  if (c < 0x20 || c === 0x7f) return "a control character";
  if (c === 0x5c) return "a backslash, which some servers read as '/'";
  if (c === 0x23) return "a '#' (fragments are never sent to a server)";
  if (c >= 128) return "a non-ASCII character (it must be percent-encoded)";
  return `the character ${JSON.stringify(String.fromCharCode(c))}, which RFC 3986 does not allow in a path`;
}

/** Why a segment with a raw `;` is refused (undefined without one). */
function semicolonProblem(segment: string): string | undefined {
  const semicolon = segment.indexOf(";");
  if (semicolon === -1) return undefined;
  const name = segment.slice(0, semicolon);
  if (name === "." || name === "..") return "a dot segment with ';' parameters (such as '..;'), which Java servers resolve after stripping the parameter";
  return "a ';' in the path: Tomcat, Jetty and Spring strip ';' parameters from a segment before routing ('/admin;x/secret' is their '/admin/secret'), other servers keep them; send a ';' that belongs to a name as %3B";
}

/** The canonical form of a path (starting with "/", no query), or why it is refused. */
export function canonicalPath(path: string, escapedSlashes: EscapedSlashAction): string | TargetRefusal {
  if (isPlainCanonical(path)) return path;
  let source = path;
  if (escapedSlashes === "unescape") source = source.replace(/%(2f|5c)/gi, "/");
  const parts = source.split("/");
  const out: string[] = [];
  // RFC 3986 §5.2.4: a path ending in a dot segment or "/" keeps a trailing slash.
  let trailingSlash = false;
  for (let i = 1; i < parts.length; i++) {
    const decoded = canonicalSegment(parts[i]!, escapedSlashes);
    if (typeof decoded !== "string") return decoded;
    const semicolon = semicolonProblem(decoded);
    if (semicolon !== undefined) return { refused: semicolon };
    const last = i === parts.length - 1;
    if (decoded === "" || decoded === ".") {
      if (last) trailingSlash = true;
      continue;
    }
    if (decoded === "..") {
      out.pop();
      if (last) trailingSlash = true;
      continue;
    }
    out.push(decoded);
  }
  if (out.length === 0) return "/";
  return `/${out.join("/")}${trailingSlash ? "/" : ""}`;
}

/** The query as received, when every character of it is visible ASCII and not '#'. */
function queryProblem(query: string): string | undefined {
  for (let i = 0; i < query.length; i++) {
    const c = query.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) return `${refusedCharacter(c)} in the query`;
    if (c === 0x23) return "a '#' (fragments are never sent to a server)";
  }
  return methodParameterProblem(query);
}

/**
 * A `_method` parameter in the query: Rails, Laravel, Symfony and Spring's HiddenHttpMethodFilter
 * read it (on POST) as the request's method, so the app would do what the policy did not judge.
 * The name is compared decoded byte by byte ('+' as space, an escape that is not one kept as it
 * is: PHP's urldecode), so a NUL cuts it whatever follows.
 */
function methodParameterProblem(query: string): string | undefined {
  if (!/method|%/i.test(query)) return undefined;
  for (const pair of query.split(/[&;]/)) {
    const eq = pair.indexOf("=");
    const name = urlDecodedBytes((eq < 0 ? pair : pair.slice(0, eq)).replace(/\+/g, " "));
    if (isMethodOverrideName(name)) {
      return "a _method query parameter, which frameworks read as the request's method: send the method itself";
    }
  }
  return undefined;
}

/** %XX escapes decoded to the bytes they stand for (one char each); anything else kept as it is. */
export function urlDecodedBytes(text: string): string {
  return text.includes("%") ? text.replace(/%([0-9a-f]{2})/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))) : text;
}

/**
 * Whether a decoded parameter name is read as `_method` by some framework. As received; as PHP
 * registers it (leading spaces dropped, cut at a NUL, ' ' and '.' read as '_', main/php_variables.c);
 * as Rack keys it (leading '[' and ']' dropped, the key ends at the next '[' or ']': `[_method`,
 * `_method]`, `_method[]`, Rack::QueryParser#normalize_params). A '[' is read as '_' too and case
 * is ignored: wider than any one framework, never narrower.
 */
export function isMethodOverrideName(name: string): boolean {
  if (readAsName(name)) return true;
  // Lenient UTF-8 decoders (Tomcat before CVE-2008-2938, some Java and .NET ones) read an overlong
  // form as the ASCII character it encodes: `%C1%9Fmethod` is their `_method`.
  const folded = overlongAsciiFolded(name);
  return folded !== name && readAsName(folded);
}

function readAsName(name: string): boolean {
  const nul = name.indexOf("\0");
  const cut = nul < 0 ? name : name.slice(0, nul);
  if (cut.length < 7) return false;
  return namedMethod(cut) || namedMethod(cut.replace(/^ +/, "")) || namedMethod(cut.replace(/^[ [\]]+/, ""));
}

/**
 * `bytes` (one char per byte, as urlDecodedBytes gives them) with every overlong UTF-8 form of an
 * ASCII character (2, 3 or 4 bytes: C0/C1 xx, E0 80–81 xx, F0 80 80–81 xx) replaced by that
 * character, as a decoder that does not check for overlong forms reads it.
 */
export function overlongAsciiFolded(bytes: string): string {
  if (!/[\xc0\xc1\xe0\xf0]/.test(bytes)) return bytes;
  return bytes.replace(/[\xc0\xc1][\x80-\xbf]|\xe0[\x80\x81][\x80-\xbf]|\xf0\x80[\x80\x81][\x80-\xbf]/g, (seq) => String.fromCharCode(((seq.charCodeAt(seq.length - 2) & 0x01) << 6) | (seq.charCodeAt(seq.length - 1) & 0x3f)));
}

function namedMethod(name: string): boolean {
  if (name.length < 7 || (name.length > 7 && name.charCodeAt(7) !== 0x5b && name.charCodeAt(7) !== 0x5d)) return false;
  return name.slice(0, 7).replace(/[ .[]/g, "_").toLowerCase() === "_method";
}

/**
 * Fields that make frameworks (Express method-override, OData, Google APIs, Symfony, Rack apps)
 * run another method than the request's, compared with every character but a letter or a digit
 * read as '-' (cgiFieldName): CGI-style servers give `X_HTTP_METHOD_OVERRIDE` and
 * `X-HTTP-Method-Override` the same variable, PHP reads '.' in a name as '_', and lighttpd's CGI
 * and FastCGI environment any non-alphanumeric character (`x+http+method+override`).
 */
const METHOD_OVERRIDE_FIELDS: ReadonlySet<string> = new Set(["x-http-method-override", "x-http-method", "x-method-override"]);

function isOverrideField(name: string): boolean {
  const n = name.length;
  return (n === 22 || n === 13 || n === 17) && METHOD_OVERRIDE_FIELDS.has(cgiFieldName(name.toLowerCase()));
}

const overrideFieldRefusal = (name: string): string => `a ${name.toLowerCase()} field, which frameworks read as the request's method: send the method itself`;

/**
 * Fields that servers and frameworks read as the request's target, or as the part of it the app
 * routes on, instead of the request line the policy judged; compared like METHOD_OVERRIDE_FIELDS
 * (cgiFieldName: `X_Rewrite_Url`, `x.original.url` and `X-Original-URL` are one name to PHP
 * under CGI/FastCGI). Each is read by a common server or framework:
 *   - `X-Original-URL`, `X-Rewrite-URL`: Yii 2 (yii\web\Request::resolveRequestUri), Yii 1.1
 *     (CHttpRequest::getRequestUri), Zend Framework 1 / Magento 1 (Zend_Controller_Request_Http::
 *     setRequestUri), Symfony HttpFoundation and zend-http/zend-diactoros before CVE-2018-14773
 *     (IIS's URL Rewrite module sets X-Original-URL): the app routes the field's path;
 *   - `X-Script-Name`: the "ReverseProxied" WSGI middleware Flask's snippets spread (HTTP_X_SCRIPT_NAME
 *     becomes SCRIPT_NAME and is cut from the front of PATH_INFO: `/items/admin` + `/items` routes
 *     `/admin`);
 *   - the CGI/WSGI meta-variables themselves (RFC 3875 §4.1, PEP 3333, and those servers add:
 *     REQUEST_URI, RAW_URI, SCRIPT_FILENAME, DOCUMENT_ROOT, DOCUMENT_URI, ORIG_PATH_INFO, PHP_SELF,
 *     REDIRECT_URL, UNENCODED_URL, REMOTE_PORT, HTTPS): gunicorn takes a `SCRIPT_NAME` field (any
 *     case) as the WSGI SCRIPT_NAME and cuts it out of PATH_INFO wherever it occurs (gunicorn
 *     http/wsgi.py create(); 22+ keep `SCRIPT_NAME` and `PATH_INFO` in their default
 *     forwarder_headers, to be set only by the front-end proxy, which the sidecar is), so
 *     `GET /items/x/admin` + `SCRIPT_NAME: /items/x` routes `/admin`; a CGI bridge that copies
 *     fields into its environment without the `HTTP_` prefix would let any of them replace the
 *     server's own.
 * `Content-Length` and `Content-Type` are refused only when spelt otherwise than with '-'
 * (CONTENT_LENGTH and CONTENT_TYPE are meta-variables too; gunicorn 20 gives `Content_Length`
 * its own HTTP_CONTENT_LENGTH, other bridges may not).
 * Checked and left out: X-Forwarded-Prefix (Werkzeug ProxyFix x_prefix, Spring's
 * ForwardedHeaderFilter, ASP.NET Core's ForwardedHeaders.XForwardedPrefix set SCRIPT_NAME, the
 * context path or PathBase for the URLs the app builds; the path the app routes on stays the
 * request's), X-Forwarded-Host/-Proto/-Port (the URLs the app builds, not its route), X-Original-URI
 * and X-Forwarded-Uri (what nginx's auth_request and Traefik's ForwardAuth tell an authorisation
 * service, not a path any framework routes on).
 */
const TARGET_OVERRIDE_FIELDS: ReadonlySet<string> = new Set([
  "x-original-url",
  "x-rewrite-url",
  "x-script-name",
  "auth-type",
  "gateway-interface",
  "path-info",
  "path-translated",
  "query-string",
  "remote-addr",
  "remote-host",
  "remote-ident",
  "remote-port",
  "remote-user",
  "request-method",
  "request-uri",
  "raw-uri",
  "script-name",
  "script-filename",
  "server-name",
  "server-port",
  "server-protocol",
  "server-software",
  "document-root",
  "document-uri",
  "orig-path-info",
  "php-self",
  "redirect-url",
  "unencoded-url",
  "https",
]);
const CONTENT_FIELDS: ReadonlySet<string> = new Set(["content-length", "content-type"]);
const TARGET_OVERRIDE_LENGTHS = lengthTable([...TARGET_OVERRIDE_FIELDS, ...CONTENT_FIELDS].map((name) => name.length));

/** Whether a field name (as received) is a target-override field in any spelling (TARGET_OVERRIDE_FIELDS). */
export function isTargetOverrideField(name: string): boolean {
  if (!hasLength(TARGET_OVERRIDE_LENGTHS, name.length)) return false;
  const lower = name.toLowerCase();
  const cgi = cgiFieldName(lower);
  return TARGET_OVERRIDE_FIELDS.has(cgi) || (CONTENT_FIELDS.has(cgi) && cgi !== lower);
}

const targetFieldRefusal = (name: string): string => `a ${name.toLowerCase()} field, which servers or frameworks read as the request's target or as the path the app routes on: send the target itself`;

/**
 * What the sidecar does with a request field whose name holds '_' (Envoy's
 * headers_with_underscores_action): `reject` (400, the default), `drop` (removed before
 * forwarding, counted and logged), `allow` (forwarded). CGI and WSGI servers read '_' and '-' as
 * one character (`X_Forwarded_For` is HTTP_X_FORWARDED_FOR), and some read such a name as a
 * server variable (gunicorn: SCRIPT_NAME); nginx (underscores_in_headers off) and gunicorn ≥ 22
 * drop them. The fields of TARGET_OVERRIDE_FIELDS and METHOD_OVERRIDE_FIELDS are refused whatever
 * this says.
 */
export type UnderscoreAction = "reject" | "drop" | "allow";

const underscoreRefusal = (name: string): string =>
  `a field name with '_' (${JSON.stringify(name.slice(0, 64))}): CGI and WSGI servers read it as its '-' spelling, some as a server variable (gunicorn: SCRIPT_NAME); spell it with '-' (headersWithUnderscores: reject)`;

/**
 * Why a request's fields (name/value pairs, names as received; a head or a trailer section) are
 * refused: a method-override or target-override field in any spelling, or with `reject` a name
 * holding '_'; undefined when none is.
 */
export function requestFieldsProblem(rawHeaders: readonly string[], underscores: UnderscoreAction): string | undefined {
  let underscore: string | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (isOverrideField(name)) return overrideFieldRefusal(name);
    if (isTargetOverrideField(name)) return targetFieldRefusal(name);
    if (underscore === undefined && underscores === "reject" && name.includes("_")) underscore = name;
  }
  return underscore === undefined ? undefined : underscoreRefusal(underscore);
}

/** The fields without those whose name holds '_' (headersWithUnderscores: drop) and the names dropped; undefined when there are none. */
export function withoutUnderscoreFields(rawHeaders: readonly string[]): { readonly fields: string[]; readonly dropped: string[] } | undefined {
  let fields: string[] | undefined;
  const dropped: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.includes("_")) {
      fields ??= rawHeaders.slice(0, i);
      dropped.push(name);
    } else if (fields !== undefined) {
      fields.push(name, rawHeaders[i + 1]!);
    }
  }
  return fields === undefined ? undefined : { fields, dropped };
}

const ABSOLUTE = /^(https?):\/\/([^/?#]*)(.*)$/is;

/**
 * The canonical target of a request (RFC 9112 §3.2 forms; `method` as received, already a valid
 * token), or a refusal. Absolute-form becomes origin-form and reports its authority.
 */
export function canonicalTarget(method: string, raw: string, escapedSlashes: EscapedSlashAction): CanonicalTarget | TargetRefusal {
  if (raw === "*") {
    if (method !== "OPTIONS") return { refused: "the target '*' is only for OPTIONS (RFC 9112 §3.2.4)" };
    return { target: "*", path: "*", authority: undefined };
  }
  let authority: string | undefined;
  let rest = raw;
  if (raw.charCodeAt(0) !== SLASH) {
    const absolute = ABSOLUTE.exec(raw);
    if (absolute === null) return { refused: "the request target is neither origin-form ('/path') nor absolute-form ('http://host/path')" };
    authority = absolute[2]!;
    if (authority === "" || authority.includes("@")) return { refused: "an absolute-form target needs a host and no user information" };
    const problem = authorityProblem(authority);
    if (problem !== undefined) return { refused: `the absolute-form target's authority is refused: ${problem}` };
    rest = absolute[3]!;
    if (rest === "" || rest.charCodeAt(0) === 0x3f /* ? */) rest = `/${rest}`;
    else if (rest.charCodeAt(0) !== SLASH) return { refused: "the absolute-form target's path does not start with '/'" };
  }
  const question = rest.indexOf("?");
  const rawPath = question === -1 ? rest : rest.slice(0, question);
  const query = question === -1 ? undefined : rest.slice(question + 1);
  if (query !== undefined) {
    const problem = queryProblem(query);
    if (problem !== undefined) return { refused: problem };
  }
  const path = canonicalPath(rawPath, escapedSlashes);
  if (typeof path !== "string") return path;
  const target = query === undefined ? path : `${path}?${query}`;
  return { target: authority === undefined && target === raw ? raw : target, path, authority };
}

// RFC 3986 §3.2.2 reg-name: unreserved / pct-encoded / sub-delims, less "," (a list separator to
// anything that splits field values; WSGI joins two Host fields with it).
const REG_NAME = /^(?:[A-Za-z0-9\-._~!$&'()*+;=]|%[0-9A-Fa-f]{2})*$/;
const IP_LITERAL = /^\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+)\]$/;

/**
 * Why a Host or :authority value is not `host [":" port]` (RFC 9110 §7.2, RFC 3986 §3.2.2/§3.2.3:
 * no userinfo, RFC 9110 §4.2.4 and RFC 9113 §8.3.1; no path, query, fragment, space or list),
 * or undefined. An empty value is valid (RFC 9112 §3.2: a target without authority). Envoy checks
 * the same before routing (source/common/http/header_validation.cc, authorityIsValid); an app that
 * builds its URL as `http://${host}${path}` would otherwise route `Host: x/admin?` to /admin.
 */
export function authorityProblem(value: string): string | undefined {
  if (value === "") return undefined;
  let host = value;
  const colon = value.lastIndexOf(":");
  if (colon !== -1 && colon > value.lastIndexOf("]")) {
    if (!/^\d{0,5}$/.test(value.slice(colon + 1))) return "a Host whose port is not a number";
    host = value.slice(0, colon);
  }
  if (host.startsWith("[") ? IP_LITERAL.test(host) : host !== "" && REG_NAME.test(host)) return undefined;
  if (host.includes("@")) return "a Host or :authority with user information (RFC 9110 §4.2.4)";
  return "a Host or :authority that is not host[:port] (RFC 3986 §3.2)";
}

export function isRefusal<T extends object | string, R extends TargetRefusal>(value: T | R): value is R {
  return typeof value === "object" && "refused" in value;
}

// RFC 9110 §9.1 method token; canonical methods are upper-case (methods are case-sensitive, and
// a policy that upper-cases verbs must not judge "get" as GET while the app reads something else).
const METHOD = /^[A-Z][A-Z0-9!#$%&'*+.^_`|~-]*$/;

/** Why a method (as an HTTP/2 client may send any string) is refused, or undefined. */
export function methodProblem(method: string): string | undefined {
  if (method.length > 32 || !METHOD.test(method)) return `the method ${JSON.stringify(method.slice(0, 32))} is not an upper-case token`;
  return undefined;
}

const GRPC_CONTENT_TYPE = /^application\/grpc([+;]|$)/;
const GRPC_CONTENT_TYPE_ANY_CASE = /^application\/grpc([+;]|$)/i;

/**
 * Whether an HTTP/2 request is gRPC for the policy: POST with content-type `application/grpc`,
 * alone or followed by `+` or `;`, in exactly that spelling (the one every gRPC client sends).
 * grpc-go compares it case-sensitively (internal/grpcutil ContentSubtype, "contentType is assumed
 * to be lowercase already"; the ServeHTTP dispatch it documents, `strings.HasPrefix(ct,
 * "application/grpc")`), so another spelling runs such an app's HTTP handler; contentTypeProblem
 * refuses those. Anything else is HTTP, and the policy's verb rules apply to it.
 */
export function isGrpcRequest(method: string, contentType: unknown): boolean {
  return method === "POST" && typeof contentType === "string" && GRPC_CONTENT_TYPE.test(contentType);
}

/**
 * Why a request's Content-Type (`fields`: name/value pairs) is refused: `application/grpc` in
 * another letter case. Servers read it both ways: grpc-go and grpc-js compare case-sensitively (an
 * app that serves gRPC and HTTP on one port runs its HTTP handler), grpc-dotnet
 * (CommonGrpcProtocolHelpers.IsContentType, OrdinalIgnoreCase) and connect-go (mime.ParseMediaType)
 * ignore case (the gRPC method runs). Judged either way, the app could run what the policy did not judge.
 */
export function contentTypeProblem(fields: readonly string[]): string | undefined {
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!;
    if (name.length !== 12 || name.toLowerCase() !== "content-type") continue;
    const value = fields[i + 1]!;
    if (GRPC_CONTENT_TYPE_ANY_CASE.test(value) && !GRPC_CONTENT_TYPE.test(value)) {
      return `the content type ${JSON.stringify(value.slice(0, 64))}: gRPC servers read application/grpc in another letter case as gRPC or as plain HTTP; send "application/grpc"`;
    }
  }
  return undefined;
}

/**
 * Whether a request that is not gRPC over HTTP/2 (isGrpcRequest) is still a gRPC-style method
 * call for servers that speak gRPC-Web or Connect (connect-go, Envoy's grpc_web filter,
 * grpc-dotnet's UseGrpcWeb, tonic-web): a content type that begins with `application/grpc`
 * (gRPC-Web, its `-text` form, gRPC over HTTP/1.1; grpc-js takes any type with that prefix as
 * gRPC) or `application/connect+` (Connect streaming), in any case; a `Connect-Protocol-Version`
 * field (Connect unary POST); a `connect=v1` query parameter (Connect unary GET; connect-go refuses
 * any other value); a WebSocket upgrade offering the `grpc-websockets` subprotocol (improbable-eng's
 * grpcweb wrapper). Such a request is judged by the policy's gRPC rules and by its HTTP rules: it
 * must pass both. A Connect unary call without these marks (connect-go serves one unless
 * WithRequireConnectProtocolHeader) is plain HTTP here. `fields`: name/value pairs.
 */
export function isRpcOverHttp(fields: readonly string[], target: CanonicalTarget): boolean {
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!;
    if (name.length === 24 && name.toLowerCase() === "connect-protocol-version") return true;
    if (name.length === 12 && name.toLowerCase() === "content-type" && RPC_CONTENT_TYPE.test(fields[i + 1]!)) return true;
    if (name.length === 22 && name.toLowerCase() === "sec-websocket-protocol" && GRPC_WEBSOCKETS.test(fields[i + 1]!)) return true;
  }
  const question = target.target.indexOf("?");
  return question !== -1 && hasQueryParameter(target.target.slice(question + 1), "connect", "v1");
}

const RPC_CONTENT_TYPE = /^\s*application\/(grpc|connect\+)/i;
const GRPC_WEBSOCKETS = /(^|,)\s*grpc-websockets\s*(,|$)/i;

/** Whether a query holds `name=value` (decoded, '+' as space, split on '&' and ';': wider than Go's url.ParseQuery). */
function hasQueryParameter(query: string, name: string, value: string): boolean {
  if (!query.includes(name) && !query.includes("%")) return false;
  const decoded = (text: string) => urlDecodedBytes(text.replace(/\+/g, " "));
  for (const pair of query.split(/[&;]/)) {
    const eq = pair.indexOf("=");
    if (eq !== -1 && decoded(pair.slice(0, eq)) === name && decoded(pair.slice(eq + 1)) === value) return true;
  }
  return false;
}

/** An HTTP/2 request's canonical form: what the policy judges and the upstream receives. */
export interface CanonicalH2Request {
  readonly method: string;
  readonly target: CanonicalTarget;
  /** gRPC for the policy and the forwarding (isGrpcRequest). */
  readonly grpc: boolean;
  /** A gRPC-Web or Connect call (isRpcOverHttp): judged by the gRPC rules and the HTTP rules. */
  readonly rpcOverHttp: boolean;
  /** :authority (or Host), which must agree with each other. */
  readonly authority: string | undefined;
  /** Regular fields as name/value pairs, for an HTTP/1.1 upstream (without those `dropped` names). */
  readonly rawHeaders: readonly string[];
  readonly contentLength: number | undefined;
  /** Field names (lower-case) removed before forwarding (headersWithUnderscores: drop); empty when none. */
  readonly dropped: readonly string[];
}

export interface H2Refusal extends TargetRefusal {
  readonly status: 400 | 405;
}

type H2Headers = Readonly<Record<string, string | string[] | undefined>>;

/**
 * An HTTP/2 request's header block (node:http2's flat `rawHeaders`: name, value, …) counted as the
 * HTTP/1 relay counts a request head (requestHeadBytes), so that `limits.maxHeaderBytes` means
 * the same over both: `:method` and `:path` as the request line (method, space, target,
 * " HTTP/1.1", CRLF), `:authority` as the Host line it becomes, every other field (the other
 * pseudo-headers too) as `name: value` CRLF, and the final CRLF. HTTP/2 only advertises its
 * limit (SETTINGS_MAX_HEADER_LIST_SIZE); neither Node nor nghttp2 refuses a larger block below
 * Node's own limit (between 60 and 120 KiB).
 */
export function h2RequestHeadBytes(rawHeaders: readonly string[]): number {
  let bytes = 12 + 2;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const value = rawHeaders[i + 1]!;
    if (name === ":method" || name === ":path") bytes += value.length;
    else if (name === ":authority") bytes += 4 + value.length + 4;
    else bytes += name.length + value.length + 4;
  }
  return bytes;
}

/**
 * node:http2's own limits on a request's header block for a sidecar server whose
 * limits.maxHeaderBytes is `maxHeaderBytes`, set so that meshward, not node:http2, judges every
 * block up to twice that limit (and answers 431 / grpc-status 8 over it), whatever its fields.
 * node:http2 counts a block by RFC 7541 (each field's name and value plus 32 bytes; the
 * SETTINGS_MAX_HEADER_LIST_SIZE it advertises) and refuses more than `maxHeaderListPairs` fields
 * (128 by default), resetting the stream (RST_STREAM ENHANCE_YOUR_CALM) before the sidecar sees
 * it. RFC 7541 counts a regular field 28 bytes more than h2RequestHeadBytes (a pseudo-header up
 * to 39), and h2RequestHeadBytes counts a regular field at least 5 bytes, so a block it counts B
 * bytes holds at most B / 5 + 4 fields and RFC 7541 counts it at most 6.6 × B + 124: node's
 * limits sit above those for B = 2 × maxHeaderBytes (16 KiB: 212 KiB and 6,562 fields). Past them (thousands of fields, hundreds of
 * KiB) node:http2 still refuses the block itself, so that what it buffers stays bounded (and all
 * of a session's headers by its maxSessionMemory).
 */
export function h2HeaderLimits(maxHeaderBytes: number): { readonly maxHeaderListSize: number; readonly maxHeaderListPairs: number } {
  const judged = 2 * maxHeaderBytes;
  return { maxHeaderListSize: Math.ceil(6.6 * judged) + 1024, maxHeaderListPairs: Math.ceil(judged / 5) + 8 };
}

/**
 * The canonical form of an HTTP/2 request from its header block, or why it is refused.
 * `underscores` applies to every request but gRPC (isGrpcRequest): gRPC allows '_' in metadata
 * keys (PROTOCOL-HTTP2.md, Custom-Metadata) and a gRPC server hands them to the handler as keys,
 * never as CGI variables; the override fields are refused for gRPC too.
 */
export function canonicalH2Request(headers: H2Headers, escapedSlashes: EscapedSlashAction, underscores: UnderscoreAction = "reject"): CanonicalH2Request | H2Refusal {
  const method = headers[":method"];
  const path = headers[":path"];
  if (typeof method !== "string") return { status: 400, refused: "a request without :method" };
  if (method === "CONNECT") return { status: 405, refused: "the sidecar is not a forward proxy: CONNECT is not accepted" };
  const badMethod = methodProblem(method);
  if (badMethod !== undefined) return { status: 400, refused: badMethod };
  if (typeof path !== "string" || path === "") return { status: 400, refused: "a request without :path (RFC 9113 §8.3.1)" };
  if (path.charCodeAt(0) !== SLASH && path !== "*") return { status: 400, refused: ":path must be origin-form or '*' (RFC 9113 §8.3.1)" };
  const target = canonicalTarget(method, path, escapedSlashes);
  if (isRefusal(target)) return { status: 400, refused: `the request target is refused: ${target.refused}` };
  const authority = headers[":authority"];
  const host = headers.host;
  if (Array.isArray(host)) return { status: 400, refused: "more than one Host field" };
  for (const value of [authority, host]) {
    const problem = typeof value === "string" ? authorityProblem(value) : undefined;
    if (problem !== undefined) return { status: 400, refused: problem };
  }
  if (typeof authority === "string" && typeof host === "string" && authority.toLowerCase() !== host.toLowerCase()) {
    return { status: 400, refused: "Host differs from :authority (RFC 9113 §8.3.1)" };
  }
  let contentLength: number | undefined;
  const rawHeaders: string[] = [];
  const grpc = isGrpcRequest(method, headers["content-type"]);
  const underscoreAction = grpc ? "allow" : underscores;
  const dropped: string[] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.charCodeAt(0) === 0x3a /* : */) continue;
    if (isOverrideField(name)) return { status: 400, refused: overrideFieldRefusal(name) };
    if (isTargetOverrideField(name)) return { status: 400, refused: targetFieldRefusal(name) };
    if (underscoreAction !== "allow" && name.includes("_")) {
      if (underscoreAction === "reject") return { status: 400, refused: underscoreRefusal(name) };
      dropped.push(name);
      continue;
    }
    if (name === "content-length") {
      if (typeof value !== "string" || !/^\d{1,15}$/.test(value)) return { status: 400, refused: "a Content-Length that is not one number" };
      contentLength = Number(value);
    }
    if (name === "host") continue;
    if (Array.isArray(value)) for (const each of value) rawHeaders.push(name, each);
    else rawHeaders.push(name, value);
  }
  const contentType = contentTypeProblem(rawHeaders);
  if (contentType !== undefined) return { status: 400, refused: contentType };
  const rpcOverHttp = !grpc && isRpcOverHttp(rawHeaders, target);
  return { method, target, grpc, rpcOverHttp, authority: typeof authority === "string" ? authority : host, rawHeaders, contentLength, dropped };
}
