/**
 * The attack classes of issue 14, as the attacker (holding a valid `orders` certificate) sends
 * them. Each case says what the sidecar must do:
 *   - "refused": answered 400/403/405/501 by the sidecar itself, and nothing reaches the app;
 *   - "allowed": a legitimate request, answered 200 by the app;
 *   - "either":  refused as above, or forwarded, and then the app's view obeys the invariants
 *                (only allowed requests, each framed once, only the sidecar's XFCC).
 * Upstream behaviour each case follows is named per case and in test/security/README.md.
 */
import type { OutgoingHttpHeaders } from "node:http2";
import { brotliCompressSync, deflateSync, gzipSync } from "node:zlib";
import type { AppRecord } from "./apps.ts";
import { FORMS_PATH, GRPC_METHOD } from "./mesh.ts";
import type { H2Request } from "./mesh.ts";

export type Expect = "refused" | "allowed" | "either";
export type Transport = "h1-in" | "h1-out" | "h2-in" | "h2-out";

/** The attacker's forged identity: it must never appear in anything sent toward an app. */
export const FORGED = "spiffe://mesh.test/ns/shop/admin-forged";
export const FORGED_XFCC = `By=spiffe://mesh.test/ns/shop/evil;URI=${FORGED}`;
/** A complete second request carried as a body (H2→H1 smuggling, RFC 9112 §6.3 framing). */
export const SMUGGLED = "GET /admin/secret HTTP/1.1\r\nHost: app\r\nx-forwarded-client-cert: By=smuggled;URI=spiffe://mesh.test/ns/shop/smuggled\r\n\r\n";

export interface Case {
  readonly id: string;
  /** The issue's attack class (README lists them). */
  readonly cls: string;
  readonly expect: Expect;
  /** Raw HTTP/1.1 bytes; `route` is the routing header line the outbound port needs ("" inbound). */
  readonly h1?: (route: string) => string | Buffer;
  /** Answers to wait for on the HTTP/1.1 connection (default 1). */
  readonly h1Answers?: number;
  readonly h2?: H2Request;
  /** The attacker's identity is in headers or trailers: no byte of it may reach the app. */
  readonly identity?: boolean;
  /** Records of legitimate requests pipelined behind the attack (not the attack itself). */
  readonly legit?: (r: AppRecord) => boolean;
  /** Bytes that must never be written on the app's socket (a refused attack when `legit` requests share it; what a forwarded request must not carry). */
  readonly tapMustNotMatch?: RegExp;
  /** A legitimate HTTP/2 GET sent after the attack on a new connection; it must reach the app intact. */
  readonly followUp?: string;
  /** Only in this direction (the outbound port's routing header means nothing inbound). */
  readonly direction?: "inbound" | "outbound";
  /** Apps this case says nothing about (why: in the case's comment). */
  readonly skipApps?: readonly string[];
  /** An allowed case: the route the app must see (default /items/1). */
  readonly allowedRoute?: string;
  /** Only for the h2c app (gRPC goes to the app over h2c). */
  readonly grpc?: boolean;
}

const HOST = "Host: app.shop\r\n";

/** Target-override fields as [id, target, field line]: the target the policy allows, the field that would move the app elsewhere. */
const TARGET_OVERRIDES: readonly (readonly [string, string, string])[] = [
  ["script-name", "/items/x/admin/delete-all", "SCRIPT_NAME: /items/x"],
  ["script-name-lower", "/items/admin/delete-all", "script_name: /items"],
  ["path-info", "/items/1", "PATH_INFO: /admin/delete-all"],
  ["x-rewrite-url", "/items/1", "X-Rewrite-Url: /admin/delete-all"],
  ["x-rewrite-url-underscores", "/items/1", "X_Rewrite_Url: /admin/delete-all"],
  ["x-original-url", "/items/1", "X-Original-URL: /admin/delete-all"],
  ["x-original-url-dots", "/items/1", "X.Original.URL: /admin/delete-all"],
];
const get = (target: string, extra = "") => (route: string) => `GET ${target} HTTP/1.1\r\n${HOST}${route}${extra}\r\n`;

/**
 * Request targets that common servers read differently. Envoy's defaults are the model
 * (envoyproxy/envoy api/envoy/extensions/filters/network/http_connection_manager/v3/
 * http_connection_manager.proto: normalize_path, merge_slashes, path_with_escaped_slashes_action;
 * source/common/http/path_utility.cc), RFC 3986 §6 for normalisation.
 */
const PATHS: { id: string; path: string; expect: Expect; cls: string; allowedRoute?: string }[] = [
  { id: "escaped-slash-lower", path: "/items/..%2fadmin/x", expect: "refused", cls: "path: %2F" },
  { id: "escaped-slash-upper", path: "/items/..%2Fadmin/x", expect: "refused", cls: "path: %2F" },
  { id: "escaped-slash-only", path: "/items%2F..%2Fadmin", expect: "refused", cls: "path: %2F" },
  { id: "escaped-backslash-lower", path: "/items/..%5cadmin", expect: "refused", cls: "path: %5C" },
  { id: "escaped-backslash-upper", path: "/items/1/..%5C..%5Cadmin", expect: "refused", cls: "path: %5C" },
  { id: "backslash-dots", path: "/items/1\\..\\..\\admin", expect: "refused", cls: "path: \\" },
  { id: "backslash-single", path: "/items/..\\admin", expect: "refused", cls: "path: \\" },
  { id: "semicolon-dotdot", path: "/items/..;/admin", expect: "refused", cls: "path: ; around dot segments" },
  { id: "semicolon-param-dotdot", path: "/items;x=1/../admin", expect: "refused", cls: "path: ; around dot segments" },
  // Tomcat, Jetty and Spring strip ';' parameters before routing ('/admin;x/secret' is their
  // '/admin/secret'; found against Tomcat 9.0.70), others keep them: refused (issue 20 review).
  { id: "semicolon-param", path: "/items/1;jsessionid=abc", expect: "refused", cls: "path: ; parameters" },
  { id: "semicolon-bare", path: "/items;/1", expect: "refused", cls: "path: ; parameters" },
  { id: "semicolon-escaped", path: "/items/a%3Bb", expect: "either", cls: "path: ; parameters" },
  // Escaped reserved characters: every server decodes '%3A' before routing, so a deny rule on
  // '/items/*:delete' must see '/items/1%3Adelete' as '/items/1:delete' (found against Flask).
  { id: "deny-rule", path: "/items/1:delete", expect: "refused", cls: "policy: deny rule" },
  { id: "deny-rule-escaped-colon", path: "/items/1%3Adelete", expect: "refused", cls: "path: escaped reserved characters" },
  { id: "deny-rule-escaped-colon-lower", path: "/items/1%3adelete", expect: "refused", cls: "path: escaped reserved characters" },
  { id: "deny-rule-escaped-everything", path: "/items/%31%3A%64%65%6C%65%74%65", expect: "refused", cls: "path: escaped reserved characters" },
  { id: "escaped-at", path: "/items/a%40b", expect: "allowed", cls: "path: escaped reserved characters", allowedRoute: "/items/a@b" },
  { id: "encoded-dotdot", path: "/items/%2e%2e/admin", expect: "refused", cls: "path: dot segments (RFC 3986 §6.2.2)" },
  { id: "half-encoded-dotdot", path: "/items/.%2E/admin", expect: "refused", cls: "path: dot segments (RFC 3986 §6.2.2)" },
  { id: "plain-dotdot", path: "/items/../admin", expect: "refused", cls: "path: dot segments (RFC 3986 §6.2.2)" },
  { id: "encoded-nul", path: "/items/1%00", expect: "refused", cls: "path: NUL/control" },
  { id: "encoded-nul-dotdot", path: "/items/1%00/../../admin", expect: "refused", cls: "path: NUL/control" },
  { id: "dot-segment-inside", path: "/items/./1", expect: "either", cls: "path: dot segments (RFC 3986 §6.2.2)" },
  { id: "double-slash", path: "/items//1", expect: "either", cls: "path: merge_slashes" },
  { id: "upper-case", path: "/ITEMS/1", expect: "either", cls: "path: case" },
  { id: "query-dotdot", path: "/items/1?next=../../admin", expect: "either", cls: "path: query" },
  { id: "double-encoded", path: "/items/%252e%252e/admin", expect: "either", cls: "path: double encoding" },
  // Escaped bytes that are not well-formed UTF-8 (RFC 3629 §4): a lenient decoder (Tomcat before
  // CVE-2008-2938, IIS, some Java and .NET ones) reads an overlong form as the ASCII character, so
  // these route to /admin there; the apps here decode them to U+FFFD and stay under /items, and
  // the wire check's lenientRoute shows what such a server would have routed.
  { id: "utf8-overlong-dotdot", path: "/items/%C0%AE%C0%AE/admin", expect: "refused", cls: "path: invalid UTF-8 escapes" },
  { id: "utf8-overlong-dotdot-lower", path: "/items/1/%c0%ae%c0%ae/%c0%ae%c0%ae/admin", expect: "refused", cls: "path: invalid UTF-8 escapes" },
  { id: "utf8-overlong-slash", path: "/items/..%C0%AFadmin", expect: "refused", cls: "path: invalid UTF-8 escapes" },
  { id: "utf8-overlong-3byte", path: "/items/%E0%80%AE%E0%80%AE/admin", expect: "refused", cls: "path: invalid UTF-8 escapes" },
  { id: "utf8-overlong-4byte-slash", path: "/items/..%F0%80%80%AFadmin", expect: "refused", cls: "path: invalid UTF-8 escapes" },
  { id: "utf8-surrogate", path: "/items/%ED%A0%80", expect: "refused", cls: "path: invalid UTF-8 escapes" },
  { id: "utf8-above-max", path: "/items/%F4%90%80%80", expect: "refused", cls: "path: invalid UTF-8 escapes" },
  { id: "utf8-lone-continuation", path: "/items/%80", expect: "refused", cls: "path: invalid UTF-8 escapes" },
  { id: "utf8-truncated", path: "/items/%E2%82/1", expect: "refused", cls: "path: invalid UTF-8 escapes" },
  { id: "utf8-well-formed", path: "/items/%C3%A9%E2%82%AC%F0%9F%98%80", expect: "either", cls: "path: invalid UTF-8 escapes" },
  // A `_method` name a lenient decoder reads from overlong forms (%C1%9F is its '_').
  { id: "method-param-overlong", path: "/items/1?%C1%9Fmethod=DELETE", expect: "refused", cls: "method override" },
  // Method override: Rails (Rack::MethodOverride), Laravel, Symfony and Spring's
  // HiddenHttpMethodFilter run a POST with `_method=DELETE` as DELETE (PHP reads `.method`, `%5Fmethod`
  // and ` method` as `_method`); the policy judged the request's own method, so these are refused.
  { id: "method-param", path: "/items/1?_method=DELETE", expect: "refused", cls: "method override" },
  { id: "method-param-escaped", path: "/items/1?a=1&%5Fmethod=DELETE", expect: "refused", cls: "method override" },
  { id: "method-param-php-dot", path: "/items/1?.method=DELETE", expect: "refused", cls: "method override" },
  { id: "method-param-upper", path: "/items/1?_METHOD=DELETE", expect: "refused", cls: "method override" },
  // ';' as a query separator: Go's net/http before 1.17 (url.ParseQuery), Go services wrapped in
  // http.AllowQuerySemicolons (which Go ships for them), and Rack 2 read `_method=DELETE` here.
  { id: "method-param-semicolon", path: "/items/1?a=1;_method=DELETE", expect: "refused", cls: "method override" },
  { id: "method-param-value-only", path: "/items/1?q=_method", expect: "allowed", cls: "method override" },
  // Policy matching (Dapr accessControl, dapr/dapr pkg/acl: operations normalised, "**" = any
  // number of segments, HTTP paths matched case-insensitively): a sibling prefix and a segment
  // that only starts with ".." are other paths; a trailing slash and the bare prefix stay inside.
  { id: "policy-sibling-prefix", path: "/itemsx/1", expect: "refused", cls: "policy matching" },
  { id: "policy-dots-in-segment", path: "/items../admin", expect: "refused", cls: "policy matching" },
  { id: "policy-upper-dotdot", path: "/ITEMS/../admin", expect: "refused", cls: "policy matching" },
  { id: "policy-trailing-slash", path: "/items/1/", expect: "either", cls: "policy matching" },
  { id: "policy-bare-prefix", path: "/items", expect: "either", cls: "policy matching" },
  { id: "policy-dotdot-to-prefix", path: "/items/1/..", expect: "either", cls: "policy matching" },
];

const h2Get = (path: string, extra: Partial<H2Request> = {}): H2Request => ({ method: "GET", path, ...extra });
/** A request whose header block is written field by field as given (what node:http2 would refuse to send). */
const rawH2 = (fields: [string, string][], body?: string): H2Request => ({ method: "GET", path: "/", rawFields: fields, ...(body === undefined ? {} : { body }) });
const pseudo = (path = "/items/1", method = "GET", authority = "app.shop"): [string, string][] => [[":method", method], [":scheme", "https"], [":authority", authority], [":path", path]];
const grpcHeaders: OutgoingHttpHeaders = { "content-type": "application/grpc", te: "trailers" };
/** One gRPC length-prefixed message (not compressed, 3 bytes). */
const GRPC_FRAME = Buffer.from([0, 0, 0, 0, 3, 0x0a, 0x01, 0x31]);

/** Cases sent as raw HTTP/1.1 bytes (inbound over mTLS, outbound in plaintext). */
/**
 * `_method` in a POST body the app reads as other bytes than those sent (review of the sidecar,
 * 2026-12-07, HIGH-1 and MEDIUM-2), to FORMS_PATH, where the policy allows POST only. Express's
 * body parsers inflate gzip, deflate and br (expressjs/body-parser lib/read.js contentstream) and
 * express.json() decodes any `utf-*` charset, a UTF-16/32 BOM included (lib/types/json.js
 * isValidCharset, iconv-lite), before method-override reads `_method`: the app runs DELETE. The
 * sidecar refuses such a body (400 E_AMBIGUOUS_REQUEST) where it reads one for `_method`.
 */
const FORM_TYPE = "application/x-www-form-urlencoded";
const JSON_TYPE = "application/json";
const OVERRIDE_FORM = "_method=DELETE";
const OVERRIDE_JSON = '{"_method":"DELETE"}';
const OVERRIDE_MULTIPART = '--B\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--B--\r\n';
const utf16le = (text: string) => Buffer.from(text, "utf16le");
const utf16be = (text: string) => Buffer.from(text, "utf16le").swap16();
const utf32le = (text: string) => {
  const out = Buffer.alloc(text.length * 4);
  for (let i = 0; i < text.length; i++) out.writeUInt32LE(text.charCodeAt(i), i * 4);
  return out;
};
const BODY_BYPASSES: { id: string; fields: [string, string][]; body: Buffer; h2?: boolean }[] = [
  { id: "gzip-form", fields: [["Content-Type", FORM_TYPE], ["Content-Encoding", "gzip"]], body: gzipSync(OVERRIDE_FORM), h2: true },
  { id: "deflate-form", fields: [["Content-Type", FORM_TYPE], ["Content-Encoding", "deflate"]], body: deflateSync(OVERRIDE_FORM) },
  { id: "br-form", fields: [["Content-Type", FORM_TYPE], ["Content-Encoding", "br"]], body: brotliCompressSync(OVERRIDE_FORM), h2: true },
  { id: "gzip-no-type", fields: [["Content-Encoding", "gzip"]], body: gzipSync(OVERRIDE_FORM) },
  { id: "gzip-json", fields: [["Content-Type", JSON_TYPE], ["Content-Encoding", "gzip"]], body: gzipSync(OVERRIDE_JSON) },
  { id: "deflate-json", fields: [["Content-Type", JSON_TYPE], ["Content-Encoding", "deflate"]], body: deflateSync(OVERRIDE_JSON), h2: true },
  { id: "stacked-codings", fields: [["Content-Type", FORM_TYPE], ["Content-Encoding", "deflate, gzip"]], body: gzipSync(deflateSync(OVERRIDE_FORM)) },
  { id: "identity-then-gzip", fields: [["Content-Type", FORM_TYPE], ["Content-Encoding", "identity"], ["Content-Encoding", "gzip"]], body: gzipSync(OVERRIDE_FORM) },
  { id: "unknown-coding", fields: [["Content-Type", FORM_TYPE], ["Content-Encoding", "zstd"]], body: gzipSync(OVERRIDE_FORM) },
  { id: "gzip-multipart", fields: [["Content-Type", "multipart/form-data; boundary=B"], ["Content-Encoding", "gzip"]], body: gzipSync(OVERRIDE_MULTIPART), h2: true },
  { id: "json-utf16le", fields: [["Content-Type", `${JSON_TYPE}; charset=utf-16le`]], body: utf16le(OVERRIDE_JSON), h2: true },
  { id: "json-utf16-bom", fields: [["Content-Type", `${JSON_TYPE}; charset=utf-16`]], body: Buffer.concat([Buffer.from([0xfe, 0xff]), utf16be(OVERRIDE_JSON)]) },
  { id: "json-utf16-no-bom", fields: [["Content-Type", `${JSON_TYPE}; charset=UTF-16`]], body: utf16be(OVERRIDE_JSON) },
  { id: "json-utf32le", fields: [["Content-Type", `${JSON_TYPE}; charset=utf-32le`]], body: utf32le(OVERRIDE_JSON) },
  // content-type (which body-parser uses) keeps the last of two charset parameters.
  { id: "json-charset-twice", fields: [["Content-Type", `${JSON_TYPE}; charset=utf-8; charset=utf-16le`]], body: utf16le(OVERRIDE_JSON), h2: true },
  // No charset: a BOM (iconv-lite, Jackson) or the NULs (RFC 4627 §3 detection) say UTF-16.
  { id: "json-bom-no-charset", fields: [["Content-Type", JSON_TYPE]], body: Buffer.concat([Buffer.from([0xff, 0xfe]), utf16le(OVERRIDE_JSON)]), h2: true },
  { id: "json-nul-no-charset", fields: [["Content-Type", JSON_TYPE]], body: utf16le(OVERRIDE_JSON) },
  // Form charsets whose bytes for `_method` are not ASCII (refused before this review too: kept as guards).
  { id: "form-utf7", fields: [["Content-Type", `${FORM_TYPE}; charset=utf-7`]], body: Buffer.from("+AF8-method=DELETE") },
  { id: "form-utf16le", fields: [["Content-Type", `${FORM_TYPE}; charset=utf-16le`]], body: utf16le(OVERRIDE_FORM) },
];
const bodyBypassH1 = (b: (typeof BODY_BYPASSES)[number]) => (route: string) =>
  Buffer.concat([Buffer.from(`POST ${FORMS_PATH} HTTP/1.1\r\n${HOST}${route}${b.fields.map(([n, v]) => `${n}: ${v}\r\n`).join("")}Content-Length: ${b.body.length}\r\n\r\n`, "latin1"), b.body]);
const bodyBypassH2 = (b: (typeof BODY_BYPASSES)[number]): H2Request => {
  const headers: OutgoingHttpHeaders = {};
  for (const [n, v] of b.fields) {
    const name = n.toLowerCase();
    const had = headers[name];
    headers[name] = had === undefined ? v : [...(Array.isArray(had) ? had : [String(had)]), v];
  }
  return { method: "POST", path: FORMS_PATH, headers, body: b.body };
};

export const H1_CASES: Case[] = [
  { id: "legit-get", cls: "success", expect: "allowed", h1: get("/items/1") },
  ...PATHS.map((p) => ({ id: `path-${p.id}`, cls: p.cls, expect: p.expect, h1: get(p.path), ...(p.allowedRoute !== undefined ? { allowedRoute: p.allowedRoute } : {}) })),
  // RFC 9112 §3.2.2: absolute-form is converted to origin-form. An authority that differs from
  // Host names two hosts: ambiguous (a server uses the target's, many frameworks Host), refused.
  { id: "absolute-form-admin", cls: "absolute-form", expect: "refused", h1: get("http://x/admin/x") },
  { id: "absolute-form-items-other-host", cls: "absolute-form / Host", expect: "refused", h1: get("http://other.example/items/1") },
  // RFC 9112 §3.2.4: asterisk-form only for OPTIONS.
  { id: "asterisk-get", cls: "asterisk-form", expect: "refused", h1: get("*") },
  { id: "raw-nul", cls: "path: NUL/control", expect: "refused", h1: (route) => Buffer.from(`GET /items/1\0/../../admin HTTP/1.1\r\n${HOST}${route}\r\n`, "latin1") },
  { id: "raw-control", cls: "path: NUL/control", expect: "refused", h1: (route) => Buffer.from(`GET /items/\x01/../../admin HTTP/1.1\r\n${HOST}${route}\r\n`, "latin1") },
  { id: "lower-case-method", cls: "method", expect: "either", h1: (route) => `get /items/1 HTTP/1.1\r\n${HOST}${route}\r\n` },
  { id: "denied-verb", cls: "method", expect: "refused", h1: (route) => `DELETE /items/1 HTTP/1.1\r\n${HOST}${route}\r\n` },
  // Method-override fields (Express method-override, OData's X-HTTP-Method, IBM's X-Method-Override):
  // the app would run DELETE where the policy judged GET.
  { id: "method-override-field", cls: "method override", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}X-HTTP-Method-Override: DELETE\r\n\r\n` },
  { id: "method-override-odata", cls: "method override", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}x-http-method: DELETE\r\n\r\n` },
  { id: "method-override-ibm", cls: "method override", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}X-METHOD-OVERRIDE: DELETE\r\n\r\n` },
  // lighttpd's CGI/FastCGI environment maps every non-alphanumeric name character to '_': Symfony
  // under it reads x+http+method+override as HTTP_X_HTTP_METHOD_OVERRIDE.
  { id: "method-override-plus", cls: "method override", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}x+http+method+override: DELETE\r\n\r\n` },
  { id: "method-override-tilde", cls: "method override", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}X~HTTP~Method: DELETE\r\n\r\n` },
  ...BODY_BYPASSES.map((b): Case => ({ id: `method-body-${b.id}`, cls: "method override: body", expect: "refused", h1: bodyBypassH1(b) })),
  // Target-override fields (review sidecar-4): gunicorn takes a SCRIPT_NAME field (any case) as
  // WSGI's SCRIPT_NAME and cuts it out of PATH_INFO (http/wsgi.py create()): the recording app
  // would route /admin/delete-all, check (a). Yii 1/2, ZF1/Magento 1 and Symfony before
  // CVE-2018-14773 route X-Rewrite-Url / X-Original-URL instead of the target (no PHP app here:
  // the refusal by every app's sidecar is the proof). Refused in every spelling, head and trailers.
  ...TARGET_OVERRIDES.map(([id, target, field]): Case => ({ id: `target-override-${id}`, cls: "target override", expect: "refused", h1: get(target, `${field}\r\n`) })),
  ...TARGET_OVERRIDES.map(([id, target, field]): Case => ({ id: `target-override-${id}-trailer`, cls: "target override: trailers", expect: "refused", h1: (route) => `GET ${target} HTTP/1.1\r\n${HOST}${route}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n${field}\r\n\r\n` })),
  // Any other name with '_' (headersWithUnderscores: reject, the default; Envoy's headers_with_underscores_action).
  { id: "underscore-field", cls: "field name with '_'", expect: "refused", h1: get("/items/1", "X_Pad: 1\r\n") },
  { id: "underscore-field-trailer", cls: "field name with '_'", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx_pad: 1\r\n\r\n` },
  // RFC 9112 §3.2: more than one Host is answered 400.
  { id: "duplicate-host", cls: "duplicate Host", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}Host: admin.shop\r\n${route}\r\n` },
  // RFC 9112 §6.1/§6.3: CL+TE is an attack (refused, kept so); §5.2: obs-fold is refused.
  { id: "cl-te", cls: "CL+TE", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}` },
  { id: "te-cl", cls: "CL+TE", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${SMUGGLED}` },
  { id: "obs-fold", cls: "obs-fold", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}X-Pad: a\r\n x-forwarded-client-cert: ${FORGED_XFCC}\r\n\r\n` },
  // A body with Content-Length must be forwarded framed (or refused), never as a second request.
  { id: "get-body-content-length", cls: "body framing", expect: "either", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}Content-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}` },
  // --- message framing and the request line (issue 14 red team, 2026-12-03) ---------------------------
  // RFC 9112 §6.1: a server that does not understand a transfer coding answers 501; Envoy accepts
  // exactly "chunked" (source/common/http/http1/codec_impl.cc: InvalidTransferEncoding, 501).
  // Forwarded as plain chunked, "gzip, chunked" would reach the app with its coding dropped.
  ...[
    ["te-gzip-chunked", "Transfer-Encoding: gzip, chunked\r\n"],
    ["te-identity-chunked", "Transfer-Encoding: identity, chunked\r\n"],
    ["te-two-lines", "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"],
    ["te-chunked-identity", "Transfer-Encoding: chunked, identity\r\n"],
    ["te-chunked-twice", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"],
    ["te-xchunked", "Transfer-Encoding: xchunked\r\n"],
  ].map(([id, te]) => ({ id: id!, cls: "Transfer-Encoding codings", expect: "refused" as const, h1: (route: string) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}${te}\r\n3\r\nabc\r\n0\r\n\r\n${SMUGGLED}` })),
  // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing (the connection must
  // not carry on); a GET for /admin pipelined behind it must not be read as a request of its own.
  { id: "te-http10-keep-alive", cls: "Transfer-Encoding codings", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.0\r\n${HOST}${route}Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n${SMUGGLED}` },
  // Chunk lines: llhttp (strict) takes hex digits and an extension, nothing else (nodejs/llhttp
  // test/request/transfer-encoding.md); the sidecar re-chunks, so an extension never reaches the app.
  { id: "chunk-extension", cls: "chunk size", expect: "either", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}Transfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\n\r\n` },
  { id: "chunk-leading-zeros", cls: "chunk size", expect: "either", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}Transfer-Encoding: chunked\r\n\r\n0003\r\nabc\r\n0\r\n\r\n` },
  ...[
    ["chunk-0x", "0x3\r\nabc\r\n0\r\n\r\n"],
    ["chunk-negative", "-3\r\nabc\r\n0\r\n\r\n"],
    ["chunk-overflow", "fffffffffffffffff\r\nabc\r\n0\r\n\r\n"],
    ["chunk-space", "3 \r\nabc\r\n0\r\n\r\n"],
    ["chunk-bare-lf", "3\nabc\n0\n\n"],
  ].map(([id, body]) => ({ id: id!, cls: "chunk size", expect: "refused" as const, h1: (route: string) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}Transfer-Encoding: chunked\r\n\r\n${body}${SMUGGLED}` })),
  // RFC 9110 §8.6: Content-Length = 1*DIGIT; llhttp refuses a sign, a list and a duplicate (even equal).
  ...[
    ["cl-plus", "Content-Length: +3\r\n"],
    ["cl-minus", "Content-Length: -3\r\n"],
    ["cl-list", "Content-Length: 3, 3\r\n"],
    ["cl-two-equal", "Content-Length: 3\r\nContent-Length: 3\r\n"],
    ["cl-two-different", "Content-Length: 3\r\nContent-Length: 0\r\n"],
    ["cl-overflow", "Content-Length: 99999999999999999999999\r\n"],
  ].map(([id, cl]) => ({ id: id!, cls: "Content-Length", expect: "refused" as const, h1: (route: string) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}${cl}\r\nabc${SMUGGLED}` })),
  // Forwarded as "Content-Length: 3": the sidecar writes the length it framed the body with.
  { id: "cl-leading-zero", cls: "Content-Length", expect: "either", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}Content-Length: 003\r\n\r\nabc`, tapMustNotMatch: /content-length: 0/i },
  // RFC 9112 §9.6: no request is read after one that closes the connection; the GET pipelined
  // behind `Connection: close` (or an HTTP/1.0 request without keep-alive) must not reach the app.
  { id: "pipelined-after-close", cls: "body framing", expect: "either", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}Connection: close\r\n\r\nGET /admin/x HTTP/1.1\r\n${HOST}${route}\r\n` },
  { id: "pipelined-after-http10", cls: "body framing", expect: "either", h1: (route) => `GET /items/1 HTTP/1.0\r\n${HOST}${route}\r\nGET /admin/x HTTP/1.1\r\n${HOST}${route}\r\n` },
  // HTTP/1.0 keep-alive with a body, then a pipelined request: each framed once.
  { id: "http10-keep-alive-body", cls: "body framing", expect: "either", h1Answers: 2, h1: (route) => `GET /items/1 HTTP/1.0\r\n${HOST}${route}Connection: keep-alive\r\nContent-Length: 3\r\n\r\nabcGET /items/2 HTTP/1.0\r\n${HOST}${route}\r\n` },
  // RFC 9112 §2.2: bare LF and whitespace before the colon are refused (llhttp strict, Envoy).
  { id: "bare-lf", cls: "line endings / field syntax", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\n${HOST.replace("\r\n", "\n")}${route.replace("\r\n", "\n")}\n` },
  { id: "space-before-colon", cls: "line endings / field syntax", expect: "refused", identity: true, h1: get("/items/1", `x-forwarded-client-cert : ${FORGED_XFCC}\r\n`) },
  { id: "obs-text-in-name", cls: "line endings / field syntax", expect: "refused", identity: true, h1: (route) => Buffer.from(`GET /items/1 HTTP/1.1\r\n${HOST}${route}x-forwarded-client-cert\xa0: ${FORGED_XFCC}\r\n\r\n`, "latin1") },
  { id: "nul-in-value", cls: "line endings / field syntax", expect: "refused", h1: (route) => Buffer.from(`GET /items/1 HTTP/1.1\r\n${HOST}${route}x-pad: a\0b\r\n\r\n`, "latin1") },
  { id: "cr-in-value", cls: "line endings / field syntax", expect: "refused", identity: true, h1: get("/items/1", `x-pad: a\rx-forwarded-client-cert: ${FORGED_XFCC}\r\n`) },
  // RFC 9112 §3: request-line = method SP request-target SP HTTP-version; the sidecar writes its own.
  { id: "request-line-two-spaces", cls: "request line", expect: "either", h1: (route) => `GET  /items/1  HTTP/1.1\r\n${HOST}${route}\r\n` },
  { id: "request-line-tabs", cls: "request line", expect: "refused", h1: (route) => `GET\t/admin/x\tHTTP/1.1\r\n${HOST}${route}\r\n` },
  // RFC 9110 §2.5, §15.6.6: only HTTP/1.0 and 1.1 on an HTTP/1 connection (llhttp also parses
  // "HTTP/2.0", whose minor version 0 would otherwise pass for 1.0: no Host needed, 505 instead).
  { id: "version-2.0", cls: "request line", expect: "refused", h1: (route) => `GET /items/1 HTTP/2.0\r\n${HOST}${route}\r\n` },
  { id: "version-2.0-no-host", cls: "request line", expect: "refused", h1: (route) => `GET /items/1 HTTP/2.0\r\n${route}\r\n` },
  { id: "version-1.2", cls: "request line", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.2\r\n${HOST}${route}\r\n` },
  { id: "version-0.9", cls: "request line", expect: "refused", h1: () => `GET /items/1\r\n\r\n` },
  { id: "fragment", cls: "request line", expect: "refused", h1: get("/items/1#/../../admin") },
  { id: "connect", cls: "method", expect: "refused", h1: (route) => `CONNECT app.shop:443 HTTP/1.1\r\n${HOST}${route}\r\n` },
  { id: "method-not-token", cls: "method", expect: "refused", h1: (route) => `G@T /items/1 HTTP/1.1\r\n${HOST}${route}\r\n` },
  { id: "method-head", cls: "method", expect: "refused", h1: (route) => `HEAD /items/1 HTTP/1.1\r\n${HOST}${route}\r\n` },
  { id: "method-propfind", cls: "method", expect: "refused", h1: (route) => `PROPFIND /items/1 HTTP/1.1\r\n${HOST}${route}\r\n` },
  { id: "chunk-extension-huge", cls: "chunk size", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}Transfer-Encoding: chunked\r\n\r\n3;${"a".repeat(20_000)}\r\nabc\r\n0\r\n\r\n` },
  { id: "expect-continue-denied", cls: "Expect: 100-continue", expect: "refused", h1: (route) => `DELETE /items/1 HTTP/1.1\r\n${HOST}${route}Expect: 100-continue\r\nContent-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}` },
  { id: "target-too-long", cls: "limits", expect: "refused", h1: get(`/items/${"a".repeat(70_000)}`) },
  // RFC 9112 §3.2: 400 for a Host with an invalid value; RFC 3986 §3.2: authority = host [":" port]
  // with no userinfo (RFC 9110 §4.2.4) and no path, query or fragment. Envoy checks it
  // (source/common/http/header_validation.cc, authorityIsValid). An app that builds its URL as
  // `http://${host}${url}` would route "app.shop/admin?" + "/items/1" to /admin.
  ...[
    ["host-path", "app.shop/admin?"],
    ["host-fragment", "app.shop/admin#"],
    ["host-userinfo", "admin@app.shop"],
    ["host-space", "app.shop admin"],
    ["host-backslash", "app.shop\\admin"],
    ["host-list", "app.shop, admin.shop"],
    ["host-bad-port", "app.shop:80x"],
  ].map(([id, host]) => ({ id: id!, cls: "Host value", expect: "refused" as const, h1: (route: string) => `GET /items/1 HTTP/1.1\r\nHost: ${host}\r\n${route}\r\n` })),
  { id: "host-ipv6", cls: "Host value", expect: "either", h1: (route) => `GET /items/1 HTTP/1.1\r\nHost: [::1]:8080\r\n${route}\r\n` },
  // A bodiless WebSocket upgrade with a GET for /admin pipelined behind it: unless the app answers
  // 101, those bytes must never reach it (the "failed upgrade" smuggling: a proxy that splices the
  // connection whatever the app answered lets the app read them as a request). Not for uvicorn:
  // its server answers a WebSocket handshake itself (500, no app record), which the harness cannot
  // tell from a desync; the bytes after the head are held back the same way there.
  {
    id: "upgrade-then-pipelined",
    cls: "Upgrade + Content-Length",
    expect: "either",
    skipApps: ["uvicorn"],
    h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nGET /admin/secret HTTP/1.1\r\n${HOST}${route}\r\n`,
  },
  // The outbound routing header twice (Dapr reads the first, r.Header.Get): the sidecar would
  // route by one while the peer's app may read the other; refused. The header name in odd case and
  // its value with spaces around it route; the value's own case counts (app ids are
  // case-sensitive, 18695bb: test/proxy/peer-app-id-case.test.ts).
  { id: "dapr-app-id-twice", cls: "routing header", direction: "outbound", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}dapr-app-id: other\r\n\r\n` },
  { id: "dapr-app-id-twice-first-other", cls: "routing header", direction: "outbound", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}dapr-app-id: other\r\n${route}\r\n` },
  { id: "dapr-app-id-twice-upgrade", cls: "routing header", direction: "outbound", expect: "refused", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}dapr-app-id: other\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n` },
  { id: "dapr-app-id-case-spaces", cls: "routing header", direction: "outbound", expect: "allowed", h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route.replace(/^dapr-app-id: (.*)\r\n$/, (_, id: string) => `DAPR-App-Id:   ${id}  \r\n`)}\r\n` },
  // RFC 9110 §7.6.1: Connection names hop-by-hop fields; a Host it names must still reach the app.
  { id: "connection-names-host", cls: "Connection", expect: "either", h1: get("/items/1", "Connection: host\r\n") },
  // XFCC in every spelling (names normalised for case and any non-alphanumeric as '-': PEP 3333 maps '_' and '-' to HTTP_X_FORWARDED_CLIENT_CERT).
  ...[
    ["xfcc-canonical", "X-Forwarded-Client-Cert"],
    ["xfcc-underscores", "x_forwarded_client_cert"],
    ["xfcc-upper-underscores", "X_FORWARDED_CLIENT_CERT"],
    ["xfcc-mixed", "x-forwarded_client-cert"],
    // lighttpd's CGI/FastCGI environment maps every non-alphanumeric character to '_', PHP '.' too.
    ["xfcc-dots", "X.Forwarded.Client.Cert"],
    ["xfcc-plus", "x+forwarded+client+cert"],
    ["xfcc-other-tchars", "x~forwarded!client*cert"],
  ].map(([id, name]) => ({ id: id!, cls: "XFCC spelling", expect: "either" as const, identity: true, h1: get("/items/1", `${name}: ${FORGED_XFCC}\r\n`) })),
  { id: "xfcc-twice", cls: "XFCC spelling", expect: "either", identity: true, h1: get("/items/1", `x-forwarded-client-cert: ${FORGED_XFCC}\r\nx_forwarded_client_cert: ${FORGED_XFCC}\r\n`) },
  // Dapr's caller attribution (dapr-caller-app-id, dapr-caller-namespace): Dapr's callee sidecar
  // sets them from the verified caller and strips what a caller sent (dapr/dapr
  // pkg/messaging/v1 CallerIDHeader/CallerNamespaceHeader; workflow StripUntrustedCallerIdentity),
  // and apps authorise on them. A forged one must not reach the app, in any spelling.
  ...[
    ["dapr-caller-canonical", "Dapr-Caller-App-Id", "dapr-caller-namespace"],
    ["dapr-caller-underscores", "dapr_caller_app_id", "DAPR_CALLER_NAMESPACE"],
    ["dapr-caller-plus", "dapr+caller+app+id", "Dapr|Caller|Namespace"],
  ].map(([id, app, ns]) => ({ id: id!, cls: "Dapr caller headers", expect: "either" as const, identity: true, h1: get("/items/1", `${app}: ${FORGED}\r\n${ns}: ${FORGED}\r\n`) })),
  { id: "dapr-caller-chunked-trailer", cls: "Dapr caller headers", expect: "either", identity: true, h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\ndapr-caller-app-id: ${FORGED}\r\n\r\n` },
  // Plausible forged values (an app id, a namespace) and the callee header, which Dapr's callee
  // sidecar also replaces with its own app id: check (c) wants exactly the sidecar's values.
  { id: "dapr-caller-plain-values", cls: "Dapr caller headers", expect: "either", identity: true, h1: get("/items/1", `dapr-caller-app-id: admin\r\nDapr-Caller-Namespace: kube-system\r\nDAPR_CALLEE_APP_ID: payments\r\ndapr-callee-app-id: ${FORGED}\r\n`) },
  // RFC 9112 §7.1.2: trailer fields must not carry what the proxy sets.
  {
    id: "xfcc-chunked-trailer",
    cls: "XFCC in trailers",
    expect: "either",
    identity: true,
    h1: (route) => `GET /items/1 HTTP/1.1\r\n${HOST}${route}Transfer-Encoding: chunked\r\nTrailer: x-forwarded-client-cert\r\n\r\n5\r\nhello\r\n0\r\nx-forwarded-client-cert: ${FORGED_XFCC}\r\nx_forwarded_client_cert: ${FORGED_XFCC}\r\n\r\n`,
  },
  // RFC 9113 §3.3/§3.4: HTTP/2 over TLS only by ALPN; a preface on an http/1.1 connection is no request.
  { id: "h2-preface-without-alpn", cls: "HTTP/2 prior knowledge", expect: "refused", h1: () => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" },
  // An Upgrade with a body desyncs the pooled app connection: refused; then a GET pipelined behind
  // it on the same connection and a GET on a new HTTP/2 connection must both reach the app intact.
  {
    id: "upgrade-with-body",
    cls: "Upgrade + Content-Length",
    expect: "refused",
    h1Answers: 1,
    h1: (route) =>
      `GET /items/1 HTTP/1.1\r\n${HOST}${route}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 44\r\n\r\n${"x".repeat(44)}` +
      `GET /items/2 HTTP/1.1\r\n${HOST}${route}\r\n`,
    legit: (r) => r.path === "/items/2" && r.bodyBytes === 0,
    tapMustNotMatch: /^upgrade:/im,
    followUp: "/items/3",
  },
];

/** Cases sent over HTTP/2 (inbound: mTLS + ALPN h2; outbound: prior knowledge). */
export const H2_CASES: Case[] = [
  { id: "legit-get", cls: "success", expect: "allowed", h2: h2Get("/items/1") },
  ...PATHS.map((p) => ({ id: `path-${p.id}`, cls: p.cls, expect: p.expect, h2: h2Get(p.path), ...(p.allowedRoute !== undefined ? { allowedRoute: p.allowedRoute } : {}) })),
  // H2→H1 body smuggling: END_STREAM ends an HTTP/2 body; toward HTTP/1.1 it needs explicit framing.
  // The follow-up takes the same pooled app connection: a server that kept the smuggled bytes
  // buffered (gunicorn's gthread worker does) answers it with the smuggled request's response.
  { id: "smuggle-get-body", cls: "H2→H1 smuggling", expect: "either", h2: h2Get("/items/1", { body: SMUGGLED }), followUp: "/items/3" },
  { id: "smuggle-head-body", cls: "H2→H1 smuggling", expect: "either", h2: { method: "HEAD", path: "/items/1", body: SMUGGLED } },
  { id: "smuggle-delete-body", cls: "H2→H1 smuggling", expect: "refused", h2: { method: "DELETE", path: "/items/1", body: SMUGGLED } },
  { id: "smuggle-options-body", cls: "H2→H1 smuggling", expect: "refused", h2: { method: "OPTIONS", path: "/items/1", body: SMUGGLED } },
  // gRPC rules only for HTTP/2 + POST + application/grpc*: anything else is HTTP, verb rules apply.
  { id: "grpc-type-delete", cls: "gRPC content-type verb bypass", expect: "refused", h2: { method: "DELETE", path: "/items/1", headers: grpcHeaders } },
  { id: "grpc-type-put", cls: "gRPC content-type verb bypass", expect: "refused", h2: { method: "PUT", path: "/items/1", headers: grpcHeaders, body: "x" } },
  { id: "grpc-type-post", cls: "gRPC content-type verb bypass", expect: "refused", h2: { method: "POST", path: "/items/1", headers: { ...grpcHeaders, "content-type": "application/grpc+proto" }, body: "x" } },
  // RFC 9113 §8.3.1: :path is origin-form (or * for OPTIONS).
  { id: "asterisk-get", cls: "asterisk-form", expect: "refused", h2: h2Get("*") },
  { id: "absolute-path", cls: "absolute-form", expect: "refused", h2: h2Get("http://x/admin/x") },
  // RFC 9113 §8.3.1: a Host that differs from :authority; the app must see one Host.
  { id: "authority-host-mismatch", cls: "duplicate Host", expect: "either", h2: h2Get("/items/1", { headers: { host: "admin.shop" } }) },
  // RFC 9113 §8.1.1: content-length that disagrees with the DATA is malformed; forwarded as is,
  // the rest of the body is a second request at the app.
  { id: "content-length-mismatch", cls: "H2→H1 smuggling", expect: "either", h2: h2Get("/items/1", { headers: { "content-length": "2" }, body: `ab${SMUGGLED}` }) },
  // RFC 9113 §8.3.1: :authority MUST NOT include userinfo (nghttp2_check_authority lets '@' through).
  { id: "authority-userinfo", cls: "Host value", expect: "refused", h2: h2Get("/items/1", { headers: { ":authority": "admin@app.shop" } }) },
  { id: "authority-host-userinfo", cls: "Host value", expect: "refused", h2: h2Get("/items/1", { headers: { ":authority": "admin@app.shop", host: "admin@app.shop" } }) },
  { id: "method-head", cls: "method", expect: "refused", h2: { method: "HEAD", path: "/items/1" } },
  { id: "method-override-field", cls: "method override", expect: "refused", h2: h2Get("/items/1", { headers: { "x-http-method-override": "DELETE" } }) },
  { id: "method-override-odata", cls: "method override", expect: "refused", h2: h2Get("/items/1", { headers: { "x-http-method": "DELETE" } }) },
  { id: "method-override-plus", cls: "method override", expect: "refused", h2: h2Get("/items/1", { headers: { "x+http+method+override": "DELETE" } }) },
  ...BODY_BYPASSES.filter((b) => b.h2).map((b): Case => ({ id: `method-body-${b.id}`, cls: "method override: body", expect: "refused", h2: bodyBypassH2(b) })),
  ...TARGET_OVERRIDES.map(([id, target, field]): Case => {
    const colon = field.indexOf(": ");
    return { id: `target-override-${id}`, cls: "target override", expect: "refused", h2: h2Get(target, { headers: { [field.slice(0, colon).toLowerCase()]: field.slice(colon + 2) } }) };
  }),
  { id: "underscore-field", cls: "field name with '_'", expect: "refused", h2: h2Get("/items/1", { headers: { x_pad: "1" } }) },
  // HTTP/2 request trailers are not passed on (h2→h1 bridge; h2→h2 drops them): whatever they name, the app routes the target.
  { id: "target-override-h2-trailers", cls: "target override: trailers", expect: "either", h2: h2Get("/items/x/admin/delete-all", { body: "hello", trailers: { script_name: "/items/x", "x-rewrite-url": "/admin/delete-all", x_original_url: "/admin/delete-all" } }) },
  // Identity headers spelt with other token characters (lighttpd reads each as '_').
  { id: "xfcc-plus", cls: "XFCC spelling", expect: "either", identity: true, h2: h2Get("/items/1", { headers: { "x+forwarded+client+cert": FORGED_XFCC, "dapr~caller~app~id": FORGED } }) },
  // Two dapr-app-id fields (node:http2 joins them with ", "): refused, not routed.
  { id: "dapr-app-id-twice", cls: "routing header", direction: "outbound", expect: "refused", h2: rawH2([...pseudo(), ["dapr-app-id", "other"]]) },
  // RFC 9113 §8.2.2: connection-specific fields make a request malformed (te only as "trailers");
  // §8.2: names are lower-case; §8.3: pseudo-headers once each, before regular fields, no unknown
  // ones, :path non-empty; §8.5: CONNECT; RFC 8441 §3: :protocol only when the server enabled it
  // (node:http2 does not). nghttp2 resets such a stream (PROTOCOL_ERROR) before the sidecar sees it.
  ...(
    [
      ["h2-connection", [...pseudo(), ["connection", "x-forwarded-client-cert"]]],
      ["h2-keep-alive", [...pseudo(), ["keep-alive", "timeout=5"]]],
      ["h2-proxy-connection", [...pseudo(), ["proxy-connection", "keep-alive"]]],
      ["h2-transfer-encoding", [...pseudo(), ["transfer-encoding", "chunked"]], `3\r\nabc\r\n0\r\n\r\n${SMUGGLED}`],
      ["h2-upgrade", [...pseudo(), ["upgrade", "websocket"]]],
      ["h2-te-gzip", [...pseudo(), ["te", "gzip"]]],
      ["h2-te-trailers-gzip", [...pseudo(), ["te", "trailers, gzip"]]],
      ["h2-upper-case-name", [...pseudo(), ["X-Forwarded-Client-Cert", FORGED_XFCC]]],
      ["h2-path-empty", pseudo("")],
      ["h2-path-relative", pseudo("admin/x")],
      ["h2-path-twice", [...pseudo(), [":path", "/admin/x"]]],
      ["h2-method-twice", [...pseudo(), [":method", "DELETE"]]],
      ["h2-path-missing", [[":method", "GET"], [":scheme", "https"], [":authority", "app.shop"]]],
      ["h2-scheme-missing", [[":method", "GET"], [":authority", "app.shop"], [":path", "/items/1"]]],
      ["h2-pseudo-after-regular", [[":method", "GET"], [":scheme", "https"], [":authority", "app.shop"], ["x-a", "1"], [":path", "/admin/x"]]],
      ["h2-pseudo-unknown", [...pseudo(), [":foo", "bar"]]],
      ["h2-extended-connect", [[":method", "CONNECT"], [":protocol", "websocket"], [":scheme", "https"], [":authority", "app.shop"], [":path", "/items/1"]]],
      ["h2-authority-path", pseudo("/items/1", "GET", "app.shop/admin?")],
      ["h2-two-hosts", [[":method", "GET"], [":scheme", "https"], [":path", "/items/1"], ["host", "app.shop"], ["host", "admin.shop"]]],
      ["h2-host-path-no-authority", [[":method", "GET"], [":scheme", "https"], [":path", "/items/1"], ["host", "app.shop/admin?"]]],
      ["h2-content-length-no-data", [...pseudo(), ["content-length", String(SMUGGLED.length)]]],
      ["h2-content-length-twice", [...pseudo(), ["content-length", "3"], ["content-length", "3"]], `abc`],
      ["h2-content-length-list", [...pseudo(), ["content-length", "3, 3"]], `abc`],
      ["h2-method-space", pseudo("/items/1", "GET ")],
      ["h2-path-space", pseudo("/items/1 HTTP/1.1\r\nx: y")],
    ] as [string, [string, string][], string?][]
  ).map(([id, fields, body]) => ({ id, cls: "HTTP/2 malformed requests", expect: "refused" as const, identity: id === "h2-upper-case-name", h2: rawH2(fields, body) })),
  // Sidecar refusals of header blocks nghttp2 passes: CONNECT (405), a lower-case method, '#'.
  { id: "h2-connect", cls: "method", expect: "refused", h2: rawH2([[":method", "CONNECT"], [":authority", "app.shop:443"]]) },
  { id: "h2-method-lower-case", cls: "method", expect: "refused", h2: rawH2(pseudo("/items/1", "get")) },
  { id: "h2-path-fragment", cls: "request line", expect: "refused", h2: rawH2(pseudo("/items/1#/../../admin")) },
  // RFC 9113 §8.2.1: CR, LF, NUL in a value, and names that are not tokens, make a request
  // malformed; nghttp2 drops such a field (no on_invalid_header callback in node:http2): the app
  // must get the request without it, never a header line split at the CR LF.
  ...(
    [
      ["h2-value-crlf", [...pseudo(), ["x-pad", `a\r\nx-forwarded-client-cert: ${FORGED_XFCC}`]]],
      ["h2-value-lf", [...pseudo(), ["x-pad", `a\nx-forwarded-client-cert: ${FORGED_XFCC}`]]],
      ["h2-value-nul", [...pseudo(), ["x-pad", `a\0${FORGED_XFCC}`]]],
      ["h2-name-crlf", [...pseudo(), [`x-pad\r\nx-forwarded-client-cert`, FORGED_XFCC]]],
      ["h2-name-space", [...pseudo(), ["x-forwarded-client-cert ", FORGED_XFCC]]],
      ["h2-name-colon", [...pseudo(), ["x-forwarded-client-cert:x", FORGED_XFCC]]],
      ["h2-name-empty", [...pseudo(), ["", FORGED_XFCC]]],
      ["h2-value-spaces", [...pseudo(), ["x-pad", " a "]]],
      ["h2-host-path-with-authority", [...pseudo(), ["host", "app.shop/admin?"]]],
      ["h2-cookie-crumbs", [...pseudo(), ["cookie", "a=1"], ["cookie", "b=2"]]],
      ["h2-xfcc-twice", [...pseudo(), ["x-forwarded-client-cert", FORGED_XFCC], ["x_forwarded_client_cert", FORGED_XFCC]]],
    ] as [string, [string, string][]][]
  ).map(([id, fields]) => ({ id, cls: "HTTP/2 field syntax", expect: "either" as const, identity: true, h2: rawH2(fields) })),
  { id: "dapr-caller-headers", cls: "Dapr caller headers", expect: "either", identity: true, h2: h2Get("/items/1", { headers: { "dapr-caller-app-id": FORGED, dapr_caller_namespace: FORGED, "dapr-callee-app-id": FORGED } }) },
  { id: "dapr-caller-plain-values", cls: "Dapr caller headers", expect: "either", identity: true, h2: h2Get("/items/1", { headers: { "dapr-caller-app-id": ["admin", "orders"], "dapr-caller-namespace": "kube-system", dapr_callee_app_id: "payments" } }) },
  { id: "xfcc-header", cls: "XFCC spelling", expect: "either", identity: true, h2: h2Get("/items/1", { headers: { "x-forwarded-client-cert": FORGED_XFCC } }) },
  { id: "xfcc-underscores", cls: "XFCC spelling", expect: "either", identity: true, h2: h2Get("/items/1", { headers: { x_forwarded_client_cert: FORGED_XFCC } }) },
  { id: "xfcc-trailers", cls: "XFCC in trailers", expect: "either", identity: true, h2: h2Get("/items/1", { body: "hello", trailers: { "x-forwarded-client-cert": FORGED_XFCC, x_forwarded_client_cert: FORGED_XFCC } }) },
];

/** Cases for the h2c app: the sidecar forwards gRPC to it over HTTP/2. */
export const GRPC_CASES: Case[] = ([
  ...H2_CASES.filter((c) => c.id.startsWith("grpc-type-")),
  /*
   * An allowed gRPC call (POST, application/grpc, the method the policy allows) carrying forged
   * identity headers: check (c) on a gRPC request — the app must read exactly the sidecar's XFCC
   * and dapr-caller-app-id / dapr-caller-namespace / dapr-callee-app-id, as Dapr's callee sidecar
   * sets them on gRPC metadata (dapr/dapr pkg/messaging/grpc_proxy.go setLocalIdentityMetadata).
   * The body is one gRPC message frame (PROTOCOL-HTTP2.md: 1-byte flag, 4-byte length, message).
   */
  {
    id: "grpc-allowed-forged-identity",
    cls: "Dapr caller headers",
    expect: "allowed",
    identity: true,
    allowedRoute: GRPC_METHOD,
    h2: {
      method: "POST",
      path: GRPC_METHOD,
      headers: {
        ...grpcHeaders,
        "x-forwarded-client-cert": FORGED_XFCC,
        "x_forwarded_client_cert": FORGED_XFCC,
        "dapr-caller-app-id": FORGED,
        "dapr_caller_namespace": FORGED,
        "dapr-callee-app-id": FORGED,
      },
      body: GRPC_FRAME,
    },
  },
  { id: "grpc-allowed-plain-values", cls: "Dapr caller headers", expect: "allowed", allowedRoute: GRPC_METHOD, h2: { method: "POST", path: GRPC_METHOD, headers: { ...grpcHeaders, "dapr-caller-app-id": "admin", "dapr-caller-namespace": "kube-system", "dapr-callee-app-id": "payments" }, body: GRPC_FRAME } },
  // The allow is for that one method: another method of the same service, and the same method over HTTP, stay denied.
  { id: "grpc-other-method", cls: "policy matching", expect: "refused", h2: { method: "POST", path: "/shop.Items/Delete", headers: grpcHeaders, body: GRPC_FRAME } },
  { id: "grpc-method-as-http", cls: "policy matching", expect: "refused", h2: { method: "POST", path: GRPC_METHOD, headers: { "content-type": "application/json" }, body: "{}" } },
  // gRPC only in the one spelling every gRPC client sends: grpc-go compares it case-sensitively
  // (internal/grpcutil ContentSubtype) and would run an HTTP handler for the allowed gRPC method's path.
  { id: "grpc-type-case", cls: "gRPC content-type case", expect: "refused", h2: { method: "POST", path: GRPC_METHOD, headers: { ...grpcHeaders, "content-type": "Application/grpc" }, body: GRPC_FRAME } },
  // Target-override fields are refused on gRPC calls too; other metadata keys with '_' (gRPC
  // allows them, and no gRPC server reads metadata as CGI variables) reach the app.
  { id: "grpc-target-override", cls: "target override", expect: "refused", h2: { method: "POST", path: GRPC_METHOD, headers: { ...grpcHeaders, "x-rewrite-url": "/admin/delete-all", script_name: "/shop.Items" }, body: GRPC_FRAME } },
  { id: "grpc-underscore-metadata", cls: "field name with '_'", expect: "allowed", allowedRoute: GRPC_METHOD, h2: { method: "POST", path: GRPC_METHOD, headers: { ...grpcHeaders, x_request_id: "1" }, body: GRPC_FRAME } },
] satisfies Case[]).map((c): Case => ({ ...c, grpc: true }));
