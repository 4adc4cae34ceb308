import { describe, expect, it } from "vitest";
import { isMethodOverrideName } from "../../src/proxy/canonical.ts";
import { methodOverrideInspector } from "../../src/proxy/method-override-body.ts";
import type { BodyInspector } from "../../src/proxy/method-override-body.ts";

/**
 * What the sidecar's body inspector refuses, read in every way the body can arrive: whole, split
 * at every byte into two chunks, and one byte at a time. The end-to-end proof against real Rack
 * and Symfony is test/security/method-override-body.test.ts.
 */
function inspector(contentType: string | undefined, extra: string[] = []): BodyInspector {
  const made = methodOverrideInspector("POST", [...(contentType === undefined ? [] : ["Content-Type", contentType]), ...extra]);
  if (made === undefined || "refused" in made) throw new Error(`expected an inspector, got ${JSON.stringify(made)}`);
  return made;
}

function verdicts(contentType: string | undefined, body: string): (string | undefined)[] {
  const bytes = Buffer.from(body, "latin1");
  const splits: Buffer[][] = [[bytes], [...bytes].map((b) => Buffer.from([b]))];
  for (let at = 1; at < bytes.length; at++) splits.push([bytes.subarray(0, at), bytes.subarray(at)]);
  return splits.map((chunks) => {
    const reader = inspector(contentType);
    for (const chunk of chunks) {
      const problem = reader.push(chunk);
      if (problem !== undefined) return problem;
    }
    return reader.end();
  });
}

const refusedEveryWay = (contentType: string | undefined, body: string) => {
  const all = verdicts(contentType, body);
  expect(all.filter((v) => v === undefined).length, `${JSON.stringify(body)} got through in some split`).toBe(0);
  expect(all[0]).toMatch(/_method field in the body/);
};
const acceptedEveryWay = (contentType: string | undefined, body: string) => {
  expect(verdicts(contentType, body).filter((v) => v !== undefined), JSON.stringify(body)).toEqual([]);
};

const FORM = "application/x-www-form-urlencoded";

describe("isMethodOverrideName", () => {
  it("reads names as Rack, Spring and PHP register them (PHP: main/php_variables.c php_register_variable_ex)", () => {
    for (const name of ["_method", "_METHOD", ".method", " method", " _method", "   _method", "_method\0junk", "_method[]", "_method[x]", "[method"]) expect(isMethodOverrideName(name), JSON.stringify(name)).toBe(true);
    // Rack keys these as `_method` (Rack::QueryParser#normalize_params: leading '[' / ']' dropped, the key ends at '[' or ']').
    for (const name of ["[_method", "_method]", "[]_method", "]]_method]]", "_method]x"]) expect(isMethodOverrideName(name), JSON.stringify(name)).toBe(true);
    for (const name of ["method", "payment_method", "_methods", "_method_", "x_method", "_metho", "\0_method", "user[_method]", "order[_method_id]"]) expect(isMethodOverrideName(name), JSON.stringify(name)).toBe(false);
  });
});

describe("form bodies (application/x-www-form-urlencoded, and a POST without Content-Type)", () => {
  it("refuses a _method field however it is written, wherever the chunks split", () => {
    for (const body of [
      "_method=DELETE",
      "a=1&_method=DELETE",
      "a=1&_method=DELETE&b=2",
      "a=1;_method=DELETE",
      "%5Fmethod=DELETE",
      "%5f%6D%65%74%68%6f%64=DELETE",
      "+++_method=DELETE",
      "%20_method=DELETE",
      ".method=DELETE",
      "_method%00ignored=DELETE",
      "_method[]=DELETE",
      "_method%5B%5D=DELETE",
      "a=1&_method",
      "a=1&_method&b",
      "x=a%26b&_method=PUT",
      "_method]=DELETE",
      "[_method=DELETE",
      "]]_method]]=DELETE",
      "_method%5D=DELETE",
      "[[[[[[[[[[_method=DELETE",
      "+++[[[_method=DELETE",
    ]) {
      refusedEveryWay(FORM, body);
      refusedEveryWay(undefined, body);
    }
  });

  it("lets other fields through, _method as a value included", () => {
    for (const body of ["payment_method=card", "method=x", "_methods=1", "x=_method", "x=_method&y=%5Fmethod", "a=b=_method", "%ZZ_method=1", "_metho=d", "", "&&&", "_method_=1", "\x00\xff%=&"]) {
      acceptedEveryWay(FORM, body);
    }
  });

  it("is chosen by Content-Type as Rack, PHP and Spring choose (case, parameters, an empty value)", () => {
    for (const type of ["Application/X-WWW-Form-Urlencoded", `${FORM}; charset=UTF-8`, `${FORM};charset="iso-8859-1"`, "", "  "]) {
      const reader = inspector(type);
      expect(reader.push(Buffer.from("_method=DELETE")), type).toBeDefined();
    }
  });

  it("refuses a form in a charset where _method would not be ASCII; reads those where it is", () => {
    for (const charset of ["UTF-16", "utf-7", "ISO-2022-JP", "IBM037", "UTF-32LE"]) {
      expect(methodOverrideInspector("POST", ["Content-Type", `${FORM}; charset=${charset}`]), charset).toEqual({ refused: expect.stringMatching(new RegExp(`charset ${charset.toLowerCase()}`)) });
    }
    for (const charset of ["UTF-8", "Shift_JIS", "EUC-JP", "GBK", "Big5", "EUC-KR", "KOI8-R", "ISO_8859-1", "windows-1252"]) {
      const reader = methodOverrideInspector("POST", ["Content-Type", `${FORM}; charset=${charset}`]) as BodyInspector;
      expect(reader.push(Buffer.from("_method=DELETE")), charset).toBeDefined();
    }
    expect(methodOverrideInspector("POST", ["Content-Type", FORM, "content-type", "text/plain"])).toEqual({ refused: expect.stringMatching(/more than one Content-Type/) });
  });

  it("does not read a compressed body: none of the frameworks that honour _method inflates a request body", () => {
    expect(methodOverrideInspector("POST", ["Content-Type", FORM, "Content-Encoding", "gzip"])).toBeUndefined();
    expect(methodOverrideInspector("POST", ["Content-Type", "application/json", "Content-Encoding", "br"])).toBeUndefined();
    expect(methodOverrideInspector("POST", ["Content-Type", FORM, "Content-Encoding", "identity"])).toBeDefined();
  });

  it("reads nothing but POST, and no body no framework reads _method from", () => {
    for (const method of ["PUT", "PATCH", "GET", "DELETE"]) expect(methodOverrideInspector(method, ["Content-Type", FORM])).toBeUndefined();
    for (const type of ["text/plain", "application/octet-stream", "application/grpc", "image/png"]) expect(methodOverrideInspector("POST", ["Content-Type", type])).toBeUndefined();
    // A compressed body that no such framework parses is nobody's concern here.
    expect(methodOverrideInspector("POST", ["Content-Type", "application/octet-stream", "Content-Encoding", "gzip"])).toBeUndefined();
  });
});

describe("multipart bodies", () => {
  const part = (disposition: string, content: string, boundary = "XyZ") => `--${boundary}\r\nContent-Disposition: ${disposition}\r\n\r\n${content}\r\n`;
  const type = "multipart/form-data; boundary=XyZ";

  it("refuses a part named _method in every way a parser reads a name", () => {
    for (const disposition of ['form-data; name="_method"', "form-data; name=_method", 'form-data;name="_method"', "form-data; NAME = \"_method\"", 'form-data; name="\\_method"', 'form-data; name*=UTF-8\'\'%5Fmethod', 'form-data; name=".method"', 'form-data; name="_method[]"', 'form-data; filename="a; name=_method"']) {
      refusedEveryWay(type, `${part('form-data; name="a"', "1")}${part(disposition, "DELETE")}--XyZ--\r\n`);
    }
    // A quoted boundary, a multipart type other than form-data (Rack and Spring parse any multipart/*).
    refusedEveryWay('multipart/mixed; boundary="a b"', `${part('form-data; name="_method"', "PUT", "a b")}--a b--`);
    // Every parser's boundary starts with what is read up to the first '"', '\\', ';', ',' or space:
    // Rack stops at '"' (B), PHP keeps it (B"x), an RFC 2045 parser unescapes a quoted one (B"x).
    for (const type of ['multipart/form-data; boundary=B"x', 'multipart/form-data; boundary="B\\"x"', "multipart/form-data; boundary=B x", "multipart/form-data; boundary =B"]) {
      refusedEveryWay(type, `${part('form-data; name="_method"', "PUT", "B")}--B--`);
      refusedEveryWay(type, `${part('form-data; name="_method"', "PUT", 'B"x')}--B"x--`);
    }
    // Chrome's and Firefox's boundaries.
    refusedEveryWay("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW", `${part('form-data; name="_method"', "PUT", "----WebKitFormBoundary7MA4YWxkTrZu0gW")}`);
    // RFC 2047 encoded words, which Tomcat's parser decodes in every parameter.
    refusedEveryWay(type, `${part('form-data; name="=?UTF-8?Q?=5Fmethod?="', "PUT")}--XyZ--`);
    refusedEveryWay(type, `${part(`form-data; name="=?utf-8?b?${Buffer.from("_method").toString("base64")}?="`, "PUT")}--XyZ--`);
    // The only boundary parameter, in upper case (RFC 2045 allows it; Rack and PHP read it).
    refusedEveryWay("multipart/form-data; BOUNDARY=XyZ", `${part('form-data; name="_method"', "PUT")}--XyZ--`);
    // Found by review (stop 36): heads Rack or PHP read a `_method` name in.
    for (const head of [
      'Content-Disposition: form-data; name="[_method"',
      "Content-ID: _method",
      "Content-Disposition: form-data\n\n; name=_method",
      'X-Foo: name="\r\nContent-Disposition: form-data; name="_method"',
      'Content-Disposition: form-data; name="a; name=_method',
      "Content-Disposition: form-data; name='_method'",
      'Content-Disposition: form-data; na\r\nme="_method"',
      'Content-Disposition: form-data; name="_met\r\nhod"',
      "Content-Disposition: form-data;\r\n name=_method",
    ]) {
      refusedEveryWay(type, `--XyZ\r\n${head}\r\n\r\nDELETE\r\n--XyZ--\r\n`);
    }
    // A `--XyZ` inside content is no delimiter to Rack or PHP; it must not hide the real part after it.
    refusedEveryWay(type, `${part('form-data; name="a"', 'x--XyZ name="')}--XyZ\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n`);
    // PHP parses on after the close delimiter.
    refusedEveryWay(type, `${part('form-data; name="a"', "1")}--XyZ--\r\n--XyZ\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n`);
    // Bare LF line ends, which lenient parsers accept.
    refusedEveryWay(type, '--XyZ\nContent-Disposition: form-data; name="_method"\n\nPUT\n--XyZ--');
  });

  it("does not read part contents, file names, a preamble or an epilogue", () => {
    const html = '<form><input type="hidden" name="_method" value="patch"></form>\r\n\r\nname="_method"';
    acceptedEveryWay(type, `${part('form-data; name="template"; filename="edit.html"', html)}${part('form-data; name="payment_method"; filename="payment_method.csv"', "a,b")}--XyZ--\r\n`);
    acceptedEveryWay(type, `preamble name=_method\r\n${part('form-data; name="a"', "1")}--XyZ--\r\n\r\nepilogue name=_method`);
    acceptedEveryWay(type, `${part('form-data; name="user[payment_method]"', "card")}${part('form-data; name="order[_method_id]"', "1")}--XyZ--\r\n`);
  });

  it("refuses a multipart type without exactly one boundary, and a part whose headers do not end", () => {
    expect(methodOverrideInspector("POST", ["Content-Type", "multipart/form-data"])).toEqual({ refused: expect.stringMatching(/exactly one boundary/) });
    // Where parsers would read different boundaries (a part delimited by one of them could hide from the other).
    for (const type of ["multipart/form-data; boundary=a; boundary=b", "multipart/form-data; boundary=a; xboundary=b", "multipart/form-data; BOUNDARY=a; xboundary; y=b", "multipart/form-data; boundaryjunk=b", "multipart/form-data; boundary= b", 'multipart/form-data; boundary=""', "multipart/form-data; boundary=xxboundary=b", "multipart/form-data; BOUNDARY=a; boundary=b"]) {
      expect(methodOverrideInspector("POST", ["Content-Type", type]), type).toEqual({ refused: expect.stringMatching(/exactly one boundary/) });
    }
    const reader = inspector(type);
    expect(reader.push(Buffer.from(`--XyZ\r\nX-Pad: ${"a".repeat(20_000)}`))).toMatch(/exceeds 16 KiB/);
    const dripped = inspector(type);
    expect(dripped.push(Buffer.from("--XyZ\r\nX-Pad: "))).toBeUndefined();
    let problem: string | undefined;
    for (let i = 0; i < 40 && problem === undefined; i++) problem = dripped.push(Buffer.from("a".repeat(1000)));
    expect(problem).toMatch(/exceeds 16 KiB/);
  });
});

describe("JSON bodies (Laravel reads _method from them: Illuminate\\Http\\Request::createFromBase)", () => {
  it("refuses a member named _method, escaped or not, with the ':' however far", () => {
    for (const body of ['{"_method":"DELETE"}', '{"a":1,"_method" : "DELETE"}', '{"\\u005fmethod":"DELETE"}', '{"\\u005F\\u006D\\u0065\\u0074\\u0068\\u006F\\u0064":"PUT"}', `{"_method"${" ".repeat(100)}\n:"PUT"}`, '{"a":{"_method":"PUT"}}']) {
      refusedEveryWay("application/json", body);
    }
    refusedEveryWay("application/vnd.api+json; charset=utf-8", '{"_method":"PATCH"}');
  });

  it("lets other members and _method as a value through", () => {
    for (const body of ['{"payment_method":"card"}', '{"a":"_method"}', '{"a":["_method", "x"]}', '{"a":"\\"_method\\":1"}', '{"a":"_method"   }', '{"_methods":1}']) acceptedEveryWay("application/json", body);
  });
});
