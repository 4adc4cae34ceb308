import { describe, expect, it } from "vitest";
import type { MessageHead } from "../../src/proxy/http1/llhttp.ts";
import { declaredFraming, downstreamResponseHead, lastChunk, requestFramingProblem, requestHeadBytes, requestHost, upstreamRequestHead } from "../../src/proxy/http1/wire.ts";

/**
 * The heads the relay writes, byte for byte (the relay tests send real traffic through them;
 * these pin down each field rule, including the shortcut that leaves names no hop-by-hop rule
 * can match unexamined).
 */
const request = (rawHeaders: string[], extra: Partial<MessageHead> = {}): MessageHead => ({ method: "GET", url: "/x", status: 0, statusMessage: "", httpMajor: 1, httpMinor: 1, rawHeaders, upgrade: false, keepAlive: true, ...extra });
const response = (rawHeaders: string[], status = 200): MessageHead => ({ method: "", url: "", status, statusMessage: "OK", httpMajor: 1, httpMinor: 1, rawHeaders, upgrade: false, keepAlive: true });
const forward = (head: MessageHead) => upstreamRequestHead(head.method, head.url, head.rawHeaders, declaredFraming(head.rawHeaders), "x-added: 1\r\n", undefined);

describe("HTTP/1.1 heads on the wire", () => {
  it("drops every hop-by-hop field whatever its case and keeps the rest as received", () => {
    const head = request(["Host", "a", "Connection", "keep-alive", "Keep-Alive", "timeout=5", "PROXY-CONNECTION", "x", "Upgrade-Insecure", "1", "Trailer", "x", "Upgrade", "h2c", "te", "gzip", "Http2-Settings", "AAA", "X-Tenant10", "t", "X-Abcde", "7", "Accept", "*/*"]);
    expect(forward(head)).toBe("GET /x HTTP/1.1\r\nHost: a\r\nUpgrade-Insecure: 1\r\nX-Tenant10: t\r\nX-Abcde: 7\r\nAccept: */*\r\nx-added: 1\r\n\r\n");
  });

  it("keeps TE only as `te: trailers` (gRPC needs it)", () => {
    expect(forward(request(["Host", "a", "TE", "Trailers, deflate"]))).toBe("GET /x HTTP/1.1\r\nHost: a\r\nte: trailers\r\nx-added: 1\r\n\r\n");
  });

  it("drops the fields Connection names, of any length and case, with or without keep-alive beside them", () => {
    for (const connection of ["keep-alive, X-Secret-Hop", "X-SECRET-HOP", "close, x-secret-hop"]) {
      const head = request(["Host", "a", "Connection", connection, "x-secret-hop", "1", "X-Keep", "yes"]);
      expect(forward(head)).toBe("GET /x HTTP/1.1\r\nHost: a\r\nX-Keep: yes\r\nx-added: 1\r\n\r\n");
    }
    // Two Connection lines are one list.
    expect(forward(request(["Host", "a", "Connection", "keep-alive", "Connection", "X-Two", "x-two", "2"]))).toBe("GET /x HTTP/1.1\r\nHost: a\r\nx-added: 1\r\n\r\n");
  });

  // Dapr's callee sidecar replaces all three with its own values (dapr/dapr pkg/messaging/grpc_proxy.go setLocalIdentityMetadata).
  it("drops Dapr's caller and callee headers in any spelling, in headers and trailers (a caller's own would be forged)", () => {
    expect(forward(request(["Host", "a", "Dapr-Caller-App-Id", "admin", "dapr_caller_namespace", "kube-system", "dapr-callee-app-id", "b", "DAPR_CALLEE_APP_ID", "c", "dapr-caller-app", "kept"]))).toBe("GET /x HTTP/1.1\r\nHost: a\r\ndapr-caller-app: kept\r\nx-added: 1\r\n\r\n");
    expect(lastChunk(["DAPR_CALLER_APP_ID", "admin", "Dapr-Callee-App-Id", "b", "x-t", "1"])).toBe("0\r\nx-t: 1\r\n\r\n");
  });

  it("writes Content-Length without leading zeros (the length the body was framed with)", () => {
    expect(forward(request(["Host", "a", "Content-Length", "003"], { method: "POST" }))).toBe("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nx-added: 1\r\n\r\n");
    expect(forward(request(["Host", "a", "Content-Length", "0"], { method: "POST" }))).toBe("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nx-added: 1\r\n\r\n");
  });

  it("keeps the Host it was judged with even when Connection names it (RFC 9112 §3.2)", () => {
    expect(forward(request(["Host", "a", "Connection", "host, x-hop", "x-hop", "1"]))).toBe("GET /x HTTP/1.1\r\nHost: a\r\nx-added: 1\r\n\r\n");
  });

  it("refuses HTTP versions other than 1.0/1.1 (505), codings other than chunked (501) and Transfer-Encoding in HTTP/1.0 (400)", () => {
    expect(requestFramingProblem(request(["Host", "a"]))).toBeUndefined();
    expect(requestFramingProblem(request(["Host", "a", "Transfer-Encoding", "Chunked"]))).toBeUndefined();
    expect(requestFramingProblem(request(["Host", "a", "Content-Length", "3"], { httpMinor: 0 }))).toBeUndefined();
    expect(requestFramingProblem(request(["Host", "a"], { httpMajor: 2, httpMinor: 0 }))?.status).toBe(505);
    expect(requestFramingProblem(request([], { httpMajor: 0, httpMinor: 9 }))?.status).toBe(505);
    for (const codings of [["gzip, chunked"], ["identity, chunked"], ["gzip", "chunked"], ["chunked", "chunked"]]) {
      const fields = codings.flatMap((value) => ["Transfer-Encoding", value]);
      expect(requestFramingProblem(request(["Host", "a", ...fields]))?.status, codings.join(" | ")).toBe(501);
    }
    expect(requestFramingProblem(request(["Host", "a", "Transfer-Encoding", "chunked"], { httpMinor: 0 }))?.status).toBe(400);
  });

  it("drops a caller's X-Forwarded-Client-Cert in any case, and keeps Content-Length only for a body framed by it", () => {
    const post = request(["Host", "a", "X-FORWARDED-CLIENT-CERT", "By=forged", "Content-Length", "3"], { method: "POST" });
    expect(forward(post)).toBe("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nx-added: 1\r\n\r\n");
    const chunked = request(["Host", "a", "Transfer-Encoding", "chunked"], { method: "POST" });
    expect(forward(chunked)).toBe("POST /x HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\nx-added: 1\r\n\r\n");
  });

  it("writes a response head without the upstream's connection fields, keeping its length", () => {
    const head = response(["Content-Type", "text/plain", "Content-Length", "13", "Date", "Mon, 23 Nov 2026 16:00:00 GMT", "Connection", "keep-alive", "Keep-Alive", "timeout=60"]);
    const out = downstreamResponseHead(head, "GET", { httpMinor: 1, keepAlive: true });
    expect(out).toEqual({ text: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nDate: Mon, 23 Nov 2026 16:00:00 GMT\r\n\r\n", framing: "length", close: false });
    const listed = downstreamResponseHead(response(["Connection", "keep-alive, X-Internal", "X-Internal", "1", "Content-Length", "0"]), "GET", { httpMinor: 1, keepAlive: true });
    expect(listed.text).toBe("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  });

  it("drops an identity header in every spelling: case, '_' and '.' for '-' (PEP 3333 reads '_' as HTTP_X_FORWARDED_CLIENT_CERT, PHP '.' too)", () => {
    const head = request(["Host", "a", "x_forwarded_client_cert", "By=forged", "X_Forwarded-Client_CERT", "By=forged", "X.Forwarded.Client.Cert", "By=forged", "dapr.caller.app-id", "forged", "x-forwarded-client-certs", "kept"]);
    expect(forward(head)).toBe("GET /x HTTP/1.1\r\nHost: a\r\nx-forwarded-client-certs: kept\r\nx-added: 1\r\n\r\n");
  });

  it("drops an identity header spelled with any other token character for '-' (lighttpd's CGI/FastCGI environment maps every non-alphanumeric to '_')", () => {
    // RFC 9110 §5.6.2 tchar: ! # $ % & ' * + - . ^ _ ` | ~ besides letters and digits.
    const forged = [..."!#$%&'*+.^_`|~"].flatMap((c) => [`x${c}forwarded${c}client${c}cert`, "By=forged", `dapr${c}caller${c}app${c}id`, "forged"]);
    const head = request(["Host", "a", ...forged, "x+forwarded+client+certs", "kept", "dapr+caller+app+idx", "kept"]);
    expect(forward(head)).toBe("GET /x HTTP/1.1\r\nHost: a\r\nx+forwarded+client+certs: kept\r\ndapr+caller+app+idx: kept\r\nx-added: 1\r\n\r\n");
  });

  it("gives a bodiless POST, PUT or PATCH content-length: 0 (lighttpd answers 411 without), and no other bodiless method a length", () => {
    for (const method of ["POST", "PUT", "PATCH"]) expect(upstreamRequestHead(method, "/x", ["Host", "a"], "none", "", undefined)).toBe(`${method} /x HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n`);
    for (const method of ["GET", "HEAD", "DELETE", "OPTIONS"]) expect(upstreamRequestHead(method, "/x", ["Host", "a"], "none", "", undefined)).toBe(`${method} /x HTTP/1.1\r\nHost: a\r\n\r\n`);
    expect(upstreamRequestHead("POST", "/x", ["Host", "a", "Content-Length", "3"], "length", "", undefined)).toBe("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n");
  });

  it("writes the canonical target it is given and replaces Host when told to (absolute-form, HTTP/1.0, HTTP/2 :authority)", () => {
    const head = request(["Host", "a", "Accept", "*/*"], { url: "http://a/items/../admin" });
    expect(upstreamRequestHead("GET", "/admin", head.rawHeaders, "none", "", "a")).toBe("GET /admin HTTP/1.1\r\nhost: a\r\nAccept: */*\r\n\r\n");
  });

  it("passes on trailers except identity, framing and routing fields", () => {
    expect(lastChunk(["X-Checksum", "abc", "X-Forwarded-Client-Cert", "By=forged", "x_forwarded_client_cert", "By=forged", "Content-Length", "9", "Host", "admin", "Transfer-Encoding", "chunked"])).toBe("0\r\nX-Checksum: abc\r\n\r\n");
  });

  it("counts a request head's bytes on the wire, so that many empty fields cannot pass a byte limit", () => {
    const empty = Array.from({ length: 10_000 }, () => ["X", ""]).flat();
    // Each field counts as it is forwarded ("X: \r\n"): more than llhttp's names-and-values count, at least the wire's.
    expect(requestHeadBytes(request(empty))).toBe("GET /x HTTP/1.1\r\n".length + 10_000 * "X: \r\n".length + 2);
    expect(requestHeadBytes(request(["Host", "a"]))).toBe("GET /x HTTP/1.1\r\nHost: a\r\n\r\n".length);
  });

  it("takes exactly one Host, which an absolute-form target must agree with", () => {
    expect(requestHost(["Host", "a"], 1, undefined)).toEqual({ host: "a" });
    expect(requestHost(["Host", "a", "host", "b"], 1, undefined)).toEqual({ problem: expect.stringMatching(/more than one Host/) });
    expect(requestHost([], 1, undefined)).toEqual({ problem: expect.stringMatching(/without Host/) });
    expect(requestHost([], 0, undefined)).toEqual({ host: undefined });
    expect(requestHost(["Host", "A:80"], 1, "a:80")).toEqual({ host: "A:80" });
    expect(requestHost(["Host", "orders"], 1, "admin")).toEqual({ problem: expect.stringMatching(/differs from Host/) });
  });
});
