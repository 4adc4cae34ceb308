import { describe, expect, it } from "vitest";
import { authorityProblem, canonicalH2Request, canonicalPath, h2RequestHeadBytes, canonicalTarget, contentTypeProblem, isGrpcRequest, isRefusal, isRpcOverHttp, isTargetOverrideField, methodProblem, requestFieldsProblem, withoutUnderscoreFields } from "../../src/proxy/canonical.ts";
import { requestHeadBytes } from "../../src/proxy/http1/wire.ts";
import type { MessageHead } from "../../src/proxy/http1/message-parser.ts";
import type { CanonicalTarget, TargetRefusal, UnderscoreAction } from "../../src/proxy/canonical.ts";

/**
 * The one canonical request target (src/proxy/canonical.ts): RFC 3986 §6 normalisation and
 * the refusals modelled on Envoy's HTTP connection manager defaults
 * (envoyproxy/envoy api/envoy/extensions/filters/network/http_connection_manager/v3/
 * http_connection_manager.proto: normalize_path, merge_slashes,
 * path_with_escaped_slashes_action).
 */
const target = (raw: string, method = "GET", escaped: "reject" | "unescape" | "keep" = "reject"): CanonicalTarget | TargetRefusal => canonicalTarget(method, raw, escaped);
const path = (raw: string, escaped: "reject" | "unescape" | "keep" = "reject"): string => {
  const result = canonicalPath(raw, escaped);
  if (typeof result !== "string") throw new Error(`refused: ${result.refused}`);
  return result;
};
const refused = (raw: string, method = "GET", escaped: "reject" | "unescape" | "keep" = "reject"): string => {
  const result = target(raw, method, escaped);
  if (!isRefusal(result)) throw new Error(`accepted as ${result.target}`);
  return result.refused;
};

describe("canonical paths (RFC 3986 §6)", () => {
  it("leaves a plain path alone, trailing slash included", () => {
    for (const plain of ["/", "/items", "/items/1", "/items/", "/a-b_c~d/e.f/..g/x:y@z/!$&'()*+,="]) expect(path(plain)).toBe(plain);
  });

  it("removes dot segments, never above the root, and merges empty segments", () => {
    expect(path("/items/../admin")).toBe("/admin");
    expect(path("/items/./1")).toBe("/items/1");
    expect(path("/../../etc/passwd")).toBe("/etc/passwd");
    expect(path("/items//1///2")).toBe("/items/1/2");
    expect(path("/items/1/..")).toBe("/items/");
    expect(path("/items/1/.")).toBe("/items/1/");
    expect(path("//")).toBe("/");
  });

  it("decodes escaped unreserved characters (dots included, before dot segments are removed) and upper-cases the other escapes", () => {
    expect(path("/items/%2e%2e/admin")).toBe("/admin");
    expect(path("/items/%2E/1")).toBe("/items/1");
    expect(path("/%69tems/%7e%41")).toBe("/items/~A");
    expect(path("/items/%c3%a9")).toBe("/items/%C3%A9");
    expect(path("/items/a%20b")).toBe("/items/a%20b");
  });

  it("refuses escaped slashes and backslashes by default, unescapes or keeps them when told to", () => {
    expect(refused("/items/..%2fadmin/secret.txt")).toMatch(/escaped slash/);
    expect(refused("/items/..%2Fadmin")).toMatch(/escaped slash/);
    expect(refused("/items/..%5cadmin")).toMatch(/escaped backslash/);
    expect(target("/items/..%2fadmin/x", "GET", "unescape")).toMatchObject({ path: "/admin/x", target: "/admin/x" });
    expect(target("/items/a%5cb", "GET", "unescape")).toMatchObject({ path: "/items/a/b" });
    expect(target("/items/a%2fb", "GET", "keep")).toMatchObject({ path: "/items/a%2Fb" });
  });

  it("refuses what servers read differently: backslashes, dot segments with parameters, control characters, bad escapes", () => {
    expect(refused("/items/1\\..\\..\\admin")).toMatch(/backslash/);
    expect(refused("/items/..;/admin")).toMatch(/';' parameters/);
    expect(refused("/items/.;x/admin")).toMatch(/';' parameters/);
    expect(refused("/items/%2e%2e;/admin")).toMatch(/';' parameters/);
    expect(refused("/items/%00")).toMatch(/control/);
    expect(refused("/items/%0d%0aX: y")).toMatch(/control/);
    expect(refused("/items/\u0001")).toMatch(/control/);
    expect(refused("/items/%zz")).toMatch(/percent-encoding/);
    expect(refused("/items/%4")).toMatch(/percent-encoding/);
    expect(refused("/items/é")).toMatch(/non-ASCII/);
    for (const bad of ["/items/a b", '/items/"', "/items/<", "/items/{x}", "/items/|", "/items/^", "/items/`", "/items#frag"]) expect(isRefusal(target(bad))).toBe(true);
  });

  it("refuses escaped bytes ≥ 0x80 that are not well-formed UTF-8 (RFC 3629): lenient decoders read overlong forms as '.' or '/'", () => {
    for (const bad of [
      "/a/%C0%AE%C0%AE/admin", // overlong '.' '.' (Tomcat before CVE-2008-2938 routed it as '..')
      "/a/%c0%ae%c0%ae/admin",
      "/a/..%C0%AFadmin", // overlong '/'
      "/a/%C1%9C", // overlong '\\'
      "/a/%E0%80%AE", // 3-byte overlong '.'
      "/a/%E0%9F%BF", // 3-byte overlong (below U+0800)
      "/a/%F0%80%80%AF", // 4-byte overlong '/'
      "/a/%F0%8F%BF%BF", // 4-byte overlong (below U+10000)
      "/a/%ED%A0%80", // a surrogate (U+D800)
      "/a/%ED%BF%BF", // a surrogate (U+DFFF)
      "/a/%F4%90%80%80", // above U+10FFFF
      "/a/%F5%80%80%80",
      "/a/%FF",
      "/a/%80", // a lone continuation byte
      "/a/%C3%A9%A9", // a continuation byte after a complete sequence
      "/a/%C3", // truncated at the path's end
      "/a/%C3/b", // truncated at a segment's end
      "/a/%E2%82", // truncated
      "/a/%C3x", // interrupted by a character
      "/a/%C3%41", // interrupted by an ASCII escape
      "/a/%F0%9F%98", // truncated 4-byte sequence
    ]) {
      expect(refused(bad), bad).toMatch(/not well-formed UTF-8/);
      expect(refused(bad, "GET", "keep"), bad).toMatch(/not well-formed UTF-8/);
    }
    // Well-formed UTF-8 passes, escaped and upper-cased: the edges of RFC 3629's table included.
    expect(path("/items/%c3%a9")).toBe("/items/%C3%A9");
    expect(path("/a/%C2%80%DF%BF")).toBe("/a/%C2%80%DF%BF");
    expect(path("/a/%E0%A0%80%ED%9F%BF%EE%80%80%EF%BF%BF")).toBe("/a/%E0%A0%80%ED%9F%BF%EE%80%80%EF%BF%BF");
    expect(path("/a/%F0%90%80%80%F4%8F%BF%BF")).toBe("/a/%F0%90%80%80%F4%8F%BF%BF");
    expect(path("/a/x%E2%82%ACy/%F0%9F%98%80")).toBe("/a/x%E2%82%ACy/%F0%9F%98%80");
    // The same through an HTTP/2 :path.
    expect(canonicalH2Request({ ":method": "GET", ":path": "/a/%C0%AE%C0%AE/admin", ":authority": "x" }, "reject")).toMatchObject({ status: 400, refused: expect.stringMatching(/not well-formed UTF-8/) });
  });

  it("refuses ';' anywhere in the path: Tomcat, Jetty and Spring route '/admin;x/secret' as '/admin/secret' (found against Tomcat 9.0.70)", () => {
    for (const raw of ["/items;v=1/1", "/items/1;jsessionid=x", "/admin;/secret", "/admin;x/secret", "/a/b;"]) expect(refused(raw)).toMatch(/';' in the path/);
    // Escaped, it is a plain character of the segment to every server: kept escaped, never decoded into a parameter.
    expect(target("/items/a%3bb")).toMatchObject({ path: "/items/a%3Bb", target: "/items/a%3Bb" });
    // The query is not the path.
    expect(target("/items/1?a=1;b=2")).toMatchObject({ path: "/items/1", target: "/items/1?a=1;b=2" });
  });

  it("decodes escaped ':', '@' and sub-delims (every common server does before routing), so the policy judges the path the app routes", () => {
    expect(path("/api/users/42%3Adelete")).toBe("/api/users/42:delete");
    expect(path("/api/users/42%3adelete")).toBe("/api/users/42:delete");
    expect(path("/admin%40internal/x")).toBe("/admin@internal/x");
    expect(path("/a/%21%24%26%27%28%29%2A%2B%2C%3D")).toBe("/a/!$&'()*+,=");
    // Still escaped: what is not a path character, and what would change the path's structure.
    expect(path("/a/%3F%23%25%20%22%3c")).toBe("/a/%3F%23%25%20%22%3C");
  });
});

describe("canonical request targets (RFC 9112 §3.2)", () => {
  it("keeps the query as received, after the canonical path, and refuses control characters and '#' in it", () => {
    expect(target("/items/../items/1?a=%2F&b=..\\x")).toEqual({ target: "/items/1?a=%2F&b=..\\x", path: "/items/1", authority: undefined });
    expect(target("/items?")).toMatchObject({ target: "/items?", path: "/items" });
    expect(refused("/items?a=\u0000")).toMatch(/control/);
    expect(refused("/items?a#b")).toMatch(/'#'/);
  });

  it("refuses a _method query parameter (Rails, Laravel, Symfony, Spring run it as the method) in any spelling PHP reads as _method, and nothing else", () => {
    for (const query of ["_method=DELETE", "a=1&_method=PUT", "_method", "%5Fmethod=DELETE", "%5fMETHOD=x", ".method=x", "+method=x", "%20method=x", "[method=x", "a=1;_method=x"]) {
      expect(refused(`/items/1?${query}`, "POST"), query).toMatch(/_method query parameter/);
    }
    for (const query of ["q=_method", "methods=1", "_method_x=1", "x_method=1", "a=%ZZ", "method=DELETE"]) {
      expect(target(`/items/1?${query}`, "POST"), query).toMatchObject({ target: `/items/1?${query}` });
    }
  });

  it("refuses a _method query parameter whose name a lenient UTF-8 decoder reads as _method (overlong forms)", () => {
    for (const query of ["%C1%9Fmethod=DELETE", "%c1%9fmethod=DELETE", "%E0%81%9Fmethod=PUT", "%F0%80%81%9Fmethod=PUT", "%C1%9F%C1%AD%C1%A5thod=DELETE", "%C0%AEmethod=x", "%C0%A0method=x", "%C1%9B_method=x"]) {
      expect(refused(`/items/1?${query}`, "POST"), query).toMatch(/_method query parameter/);
    }
    // Well-formed UTF-8 and overlong forms elsewhere in the query are the app's business.
    for (const query of ["q=%C1%9Fmethod", "%C3%9Fmethod=x", "a=%C0%AE%C0%AE", "%C0%AE%C0%AE=1"]) {
      expect(target(`/items/1?${query}`, "POST"), query).toMatchObject({ target: `/items/1?${query}` });
    }
  });

  it("refuses method-override fields in any case, and only those", () => {
    for (const name of ["X-HTTP-Method-Override", "x-http-method", "X-Method-Override"]) expect(requestFieldsProblem(["Host", "a", name, "DELETE"], "allow"), name).toMatch(/send the method itself/);
    expect(requestFieldsProblem(["Host", "a", "X-HTTP-Methods", "DELETE", "X-Method", "DELETE", "Transfer-Encoding", "chunked"], "allow")).toBeUndefined();
  });

  it("refuses method-override fields spelt with any token character for '-' (lighttpd's CGI/FastCGI environment reads x+http+method+override as HTTP_X_HTTP_METHOD_OVERRIDE)", () => {
    for (const c of "!#$%&'*+.^_`|~") {
      for (const name of [`X${c}HTTP${c}Method${c}Override`, `x${c}http${c}method`, `X${c}Method${c}Override`]) expect(requestFieldsProblem(["Host", "a", name, "DELETE"], "allow"), name).toMatch(/send the method itself/);
    }
    expect(requestFieldsProblem(["Host", "a", "X+HTTP+Methods", "DELETE", "X+Method", "DELETE", "x+http+method+overrides", "DELETE"], "allow")).toBeUndefined();
  });

  it("turns absolute-form into origin-form and reports its authority", () => {
    expect(target("http://x/admin/x")).toEqual({ target: "/admin/x", path: "/admin/x", authority: "x" });
    expect(target("HTTPS://Inventory.shop:8443")).toEqual({ target: "/", path: "/", authority: "Inventory.shop:8443" });
    expect(target("http://x?q=1")).toEqual({ target: "/?q=1", path: "/", authority: "x" });
    expect(refused("http://user@x/")).toMatch(/user information/);
    expect(refused("http:///x")).toMatch(/needs a host/);
    expect(refused("ftp://x/")).toMatch(/neither origin-form/);
    expect(refused("x:80")).toMatch(/neither origin-form/);
  });

  it("takes '*' only for OPTIONS", () => {
    expect(target("*", "OPTIONS")).toEqual({ target: "*", path: "*", authority: undefined });
    expect(refused("*", "GET")).toMatch(/only for OPTIONS/);
  });

  it("takes only upper-case method tokens", () => {
    expect(methodProblem("GET")).toBeUndefined();
    expect(methodProblem("M-SEARCH")).toBeUndefined();
    expect(methodProblem("get")).toMatch(/upper-case/);
    expect(methodProblem("GET /x")).toMatch(/upper-case/);
    expect(methodProblem("")).toMatch(/upper-case/);
  });
});

describe("HTTP/2 requests", () => {
  const h2 = (headers: Record<string, string | string[] | undefined>) => canonicalH2Request({ ":method": "GET", ":path": "/items/1", ":scheme": "https", ":authority": "orders", ...headers }, "reject");

  it("is gRPC only for POST with content-type application/grpc* spelt in lower case, else HTTP whose verb rules apply", () => {
    expect(isGrpcRequest("POST", "application/grpc")).toBe(true);
    expect(isGrpcRequest("POST", "application/grpc+proto")).toBe(true);
    expect(isGrpcRequest("POST", "application/grpc;charset=utf-8")).toBe(true);
    expect(isGrpcRequest("POST", "application/grpc+PROTO")).toBe(true);
    expect(isGrpcRequest("POST", "Application/GRPC; charset=utf-8")).toBe(false);
    for (const method of ["GET", "DELETE", "PUT", "PATCH"]) expect(isGrpcRequest(method, "application/grpc")).toBe(false);
    expect(isGrpcRequest("POST", "application/grpc-web")).toBe(false);
    expect(isGrpcRequest("POST", "application/grpcx")).toBe(false);
    expect(h2({ ":method": "DELETE", "content-type": "application/grpc" })).toMatchObject({ grpc: false, method: "DELETE" });
    expect(h2({ ":method": "POST", "content-type": "application/grpc" })).toMatchObject({ grpc: true, rpcOverHttp: false });
  });

  // grpc-go compares case-sensitively (internal/grpcutil ContentSubtype), grpc-dotnet and connect-go do not.
  it("refuses application/grpc in another letter case, whatever the method", () => {
    for (const type of ["Application/grpc", "APPLICATION/GRPC+proto", "application/gRPC;x=1", "application/GRPC"]) {
      for (const method of ["POST", "GET"]) expect(h2({ ":method": method, "content-type": type }), `${method} ${type}`).toMatchObject({ status: 400, refused: expect.stringMatching(/letter case/) });
      expect(contentTypeProblem(["Content-Type", type]), type).toMatch(/letter case/);
    }
    for (const type of ["application/grpc", "application/grpc+json", "Application/grpc-web", "APPLICATION/JSON", "text/plain"]) expect(contentTypeProblem(["content-type", type]), type).toBeUndefined();
    expect(contentTypeProblem(["content-type", "application/grpc", "Content-Type", "Application/grpc"])).toMatch(/letter case/);
  });

  it("marks gRPC-Web and Connect calls, judged by the gRPC rules and the HTTP rules", () => {
    const rpc = (fields: string[], raw = "/shop.Admin/Reset") => {
      const target = canonicalTarget("POST", raw, "reject");
      if (isRefusal(target)) throw new Error(target.refused);
      return isRpcOverHttp(fields, target);
    };
    for (const type of ["application/grpc-web", "application/grpc-web+proto", "application/grpc-web-text", "Application/GRPC-WEB-TEXT+proto", "application/connect+json", "APPLICATION/CONNECT+PROTO", "application/grpc", "application/grpcx"]) {
      expect(rpc(["Content-Type", type]), type).toBe(true);
    }
    expect(rpc(["content-type", "application/json", "Connect-Protocol-Version", "1"])).toBe(true);
    expect(rpc(["connect-protocol-version", "1"])).toBe(true);
    expect(rpc([], "/shop.Admin/Reset?connect=v1&encoding=json&message=%7B%7D")).toBe(true);
    expect(rpc([], "/shop.Admin/Reset?encoding=json&%63onnect=v1")).toBe(true);
    expect(rpc(["Upgrade", "websocket", "Sec-WebSocket-Protocol", "grpc-websockets"])).toBe(true);
    expect(rpc(["sec-websocket-protocol", "chat, GRPC-WEBSOCKETS"])).toBe(true);
    // Plain HTTP: JSON, forms, a query value or another parameter named like it, another subprotocol.
    for (const fields of [["content-type", "application/json"], ["content-type", "application/x-www-form-urlencoded"], ["content-type", "application/connect"], ["sec-websocket-protocol", "grpc-websockets-v2"], ["x-connect-protocol-version", "1"]]) {
      expect(rpc(fields), fields.join(": ")).toBe(false);
    }
    expect(rpc([], "/shop.Admin/Reset?connect=%76%31")).toBe(true);
    for (const target of ["/a?q=connect", "/a?connected=1", "/a?x_connect=v1", "/connect?a=1", "/login?connect=github", "/a?connect", "/a?connect=v2"]) expect(rpc([], target), target).toBe(false);
    expect(h2({ ":method": "POST", "content-type": "application/grpc-web+proto" })).toMatchObject({ grpc: false, rpcOverHttp: true });
    expect(h2({ ":method": "DELETE", "content-type": "application/grpc" })).toMatchObject({ grpc: false, rpcOverHttp: true });
    expect(h2({ ":method": "POST", "content-type": "application/json" })).toMatchObject({ grpc: false, rpcOverHttp: false });
  });

  it("judges and forwards the canonical :path, and refuses what HTTP/1 would refuse", () => {
    expect(h2({ ":path": "/items/%2e%2e/admin" })).toMatchObject({ target: { path: "/admin" } });
    expect(h2({ ":path": "/items/..%2fadmin" })).toMatchObject({ status: 400 });
    expect(h2({ ":path": "/items/1\\..\\..\\admin" })).toMatchObject({ status: 400 });
    expect(h2({ ":path": "http://x/admin" })).toMatchObject({ status: 400, refused: expect.stringMatching(/origin-form/) });
    expect(h2({ ":method": "get" })).toMatchObject({ status: 400 });
    expect(h2({ ":method": "CONNECT" })).toMatchObject({ status: 405 });
    expect(h2({ ":path": undefined })).toMatchObject({ status: 400 });
    expect(h2({ host: "admin" })).toMatchObject({ status: 400, refused: expect.stringMatching(/:authority/) });
    expect(h2({ "content-length": "1, 2" })).toMatchObject({ status: 400 });
    expect(h2({ "x-http-method-override": "DELETE" })).toMatchObject({ status: 400, refused: expect.stringMatching(/x-http-method-override/) });
    expect(h2({ ":path": "/items/1?_method=DELETE" })).toMatchObject({ status: 400, refused: expect.stringMatching(/_method/) });
  });

  it("keeps the regular fields as pairs for an HTTP/1.1 upstream, Host left to :authority", () => {
    const request = h2({ host: "orders", "content-length": "3", "x-a": "1", "set-cookie": ["a", "b"] });
    expect(request).toMatchObject({ authority: "orders", contentLength: 3, rawHeaders: ["content-length", "3", "x-a", "1", "set-cookie", "a", "set-cookie", "b"] });
  });
});

describe("Host and :authority values (RFC 9110 §7.2, RFC 3986 §3.2)", () => {
  it("accepts host[:port], IP literals and the empty value", () => {
    for (const ok of ["", "app.shop", "app.shop:8080", "127.0.0.1:3500", "[::1]", "[::1]:8080", "my_app.ns.svc", "xn--bcher-kva.example", "a%41b"]) expect(authorityProblem(ok), ok).toBeUndefined();
  });

  it("refuses userinfo, paths, queries, fragments, spaces, backslashes, lists and bad ports", () => {
    for (const bad of ["admin@app.shop", "app.shop/admin?", "app.shop/admin#", "app.shop?x", "app.shop admin", "app.shop\\admin", "a, b", "a,b", "app.shop:80x", "app.shop:123456", ":80", "[::1", "[::1]x", "a%4"]) expect(authorityProblem(bad), bad).toBeDefined();
  });

  it("refuses an HTTP/2 :authority or host with userinfo", () => {
    expect(isRefusal(canonicalH2Request({ ":method": "GET", ":path": "/", ":authority": "admin@app" }, "reject"))).toBe(true);
    expect(isRefusal(canonicalH2Request({ ":method": "GET", ":path": "/", host: "app/admin?" }, "reject"))).toBe(true);
    expect(isRefusal(canonicalH2Request({ ":method": "GET", ":path": "/", ":authority": "app:80" }, "reject"))).toBe(false);
  });
});

describe("an HTTP/2 header block counted against limits.maxHeaderBytes (h2RequestHeadBytes)", () => {
  it("counts what an HTTP/1.1 head of the same request counts: request line, Host, each field line, the final CRLF", () => {
    const h1 = "GET /items?id=1 HTTP/1.1\r\nhost: callee:3501\r\naccept: */*\r\nx-pad: aaaa\r\n\r\n";
    expect(requestHeadBytes({ method: "GET", url: "/items?id=1", rawHeaders: ["host", "callee:3501", "accept", "*/*", "x-pad", "aaaa"] } as Partial<MessageHead> as MessageHead)).toBe(h1.length);
    expect(h2RequestHeadBytes([":method", "GET", ":path", "/items?id=1", ":authority", "callee:3501", "accept", "*/*", "x-pad", "aaaa"])).toBe(h1.length);
  });

  it("counts the other pseudo-headers as field lines: they are in the block too", () => {
    const base = h2RequestHeadBytes([":method", "GET", ":path", "/"]);
    expect(h2RequestHeadBytes([":method", "GET", ":path", "/", ":scheme", "x".repeat(1000)])).toBe(base + ":scheme: ".length + 1000 + 2);
  });
});

/** Target-override names in the spellings a CGI-style server reads as one variable. */
const TARGET_FIELDS = ["X-Original-URL", "X-Rewrite-Url", "x_rewrite_url", "X.Original.Url", "x+original+url", "X-Script-Name", "SCRIPT_NAME", "script_name", "Script-Name", "PATH_INFO", "path-info", "REQUEST_URI", "QUERY_STRING", "REQUEST_METHOD", "PATH_TRANSLATED", "REMOTE_ADDR", "REMOTE_USER", "AUTH_TYPE", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "GATEWAY_INTERFACE", "CONTENT_LENGTH", "Content_Type", "content.length", "RAW_URI", "ORIG_PATH_INFO", "UNENCODED_URL"];

describe("target-override fields and '_' in field names (review sidecar-4 HIGH-1/HIGH-2; headersWithUnderscores)", () => {
  it("refuses target-override fields in every spelling whatever headersWithUnderscores says, and leaves ordinary fields alone", () => {
    for (const action of ["reject", "drop", "allow"] as const) {
      for (const name of TARGET_FIELDS) expect(requestFieldsProblem(["Host", "a", name, "/admin"], action), `${action} ${name}`).toMatch(/request's target/);
    }
    for (const name of ["Content-Length", "content-type", "X-Original-Host", "X-Forwarded-Prefix", "X-Forwarded-Host", "X-Rewrite", "Path", "Script", "Server", "X-Request-Id"]) {
      expect(isTargetOverrideField(name), name).toBe(false);
      expect(requestFieldsProblem(["Host", "a", name, "1"], "reject"), name).toBeUndefined();
    }
    // The method-override check still comes first.
    expect(requestFieldsProblem(["X_HTTP_Method_Override", "DELETE"], "allow")).toMatch(/request's method/);
  });

  it("refuses, drops or allows other names holding '_'", () => {
    const fields = ["Host", "a", "X_Trace", "1", "x-b", "2", "accept_language", "en"];
    expect(requestFieldsProblem(fields, "reject")).toMatch(/'_'.*X_Trace.*headersWithUnderscores: reject/);
    expect(requestFieldsProblem(fields, "drop")).toBeUndefined();
    expect(requestFieldsProblem(fields, "allow")).toBeUndefined();
    expect(withoutUnderscoreFields(fields)).toEqual({ fields: ["Host", "a", "x-b", "2"], dropped: ["X_Trace", "accept_language"] });
    expect(withoutUnderscoreFields(["Host", "a", "x-b", "2"])).toBeUndefined();
  });

  it("does the same over HTTP/2, except that gRPC metadata keys keep their '_'", () => {
    const h2 = (headers: Record<string, string>, underscores: UnderscoreAction, method = "GET") => canonicalH2Request({ ":method": method, ":path": "/items/1", ":scheme": "https", ":authority": "orders", ...headers }, "reject", underscores);
    for (const action of ["reject", "drop", "allow"] as const) {
      for (const name of ["x-rewrite-url", "x-original-url", "script_name", "path_info", "x_original_url"]) {
        expect(h2({ [name]: "/admin" }, action), `${action} ${name}`).toMatchObject({ status: 400, refused: expect.stringMatching(/request's target/) });
        expect(h2({ [name]: "/admin", "content-type": "application/grpc" }, action, "POST"), `gRPC ${action} ${name}`).toMatchObject({ status: 400 });
      }
    }
    expect(h2({ x_trace: "1" }, "reject")).toMatchObject({ status: 400, refused: expect.stringMatching(/'_'/) });
    expect(h2({ x_trace: "1", "x-b": "2" }, "drop")).toMatchObject({ dropped: ["x_trace"], rawHeaders: ["x-b", "2"] });
    expect(h2({ x_trace: "1" }, "allow")).toMatchObject({ dropped: [], rawHeaders: ["x_trace", "1"] });
    for (const action of ["reject", "drop"] as const) {
      expect(h2({ x_trace: "1", "content-type": "application/grpc" }, action, "POST"), action).toMatchObject({ grpc: true, dropped: [], rawHeaders: ["x_trace", "1", "content-type", "application/grpc"] });
    }
  });
});
