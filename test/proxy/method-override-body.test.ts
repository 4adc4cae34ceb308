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
  expect(all[0]).toMatch(/_method field in the body|multipart/);
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
    // Overlong UTF-8 forms (one char per byte), as a decoder that does not check for them reads them.
    for (const name of ["\xc1\x9fmethod", "\xe0\x81\x9fmethod", "\xf0\x80\x81\x9fmethod", "\xc0\xaemethod", "\xc1\x9f\xc1\xad\xc1\xa5thod"]) expect(isMethodOverrideName(name), JSON.stringify(name)).toBe(true);
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
      // Overlong UTF-8 forms (a lenient decoder reads %C1%9F as '_'), escaped or raw, padded with overlong spaces.
      "%C1%9Fmethod=DELETE",
      "%E0%81%9F%C1%AD%C1%A5thod=DELETE",
      "\xc1\x9f\xc1\xad\xc1\xa5\xc1\xb4\xc1\xa8\xc1\xaf\xc1\xa4=DELETE",
      "%C0%A0%C0%A0%C0%A0%C0%A0%C0%A0%C0%A0_method=DELETE",
      "\xf0\x80\x81\x9fmethod=DELETE",
    ]) {
      refusedEveryWay(FORM, body);
      refusedEveryWay(undefined, body);
    }
  });

  it("lets other fields through, _method as a value included", () => {
    for (const body of ["payment_method=card", "method=x", "_methods=1", "x=_method", "x=_method&y=%5Fmethod", "a=b=_method", "%ZZ_method=1", "_metho=d", "", "&&&", "_method_=1", "\x00\xff%=&", "%C3%9Fmethod=1", "\xc3\x9fmethod=1", "\xc1\x9fmethodx=1", "\xc0\xc0method=1", "x=\xc1\x9fmethod"]) {
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
    // Found by the fourth review (stop 36): `php -S` gives Content_Type and Content.Type the variable Laravel reads the type from.
    for (const spelling of ["Content_Type", "Content.Type"]) {
      expect(methodOverrideInspector("POST", ["Content-Type", "text/plain", spelling, "application/json"]), spelling).toEqual({ refused: expect.stringMatching(/more than one Content-Type/) });
      const alone = methodOverrideInspector("POST", [spelling, "application/json"]) as BodyInspector;
      expect(alone.push(Buffer.from('{"_method":"DELETE"}')), spelling).toBeDefined();
    }
  });

  it("refuses a form, multipart or JSON body with a Content-Encoding other than identity: Express inflates it before method-override reads _method (review HIGH-1)", () => {
    // expressjs/body-parser lib/read.js contentstream: gzip, deflate and br are inflated
    // (zlib.createGunzip / createInflate / createBrotliDecompress) before the parser runs; Koa's
    // co-body and hapi inflate as well. Any other coding is refused too: the next parser may know it.
    const types = [FORM, undefined, "multipart/form-data; boundary=B", "application/json"];
    for (const type of types) {
      for (const encoding of ["gzip", "deflate", "br", "x-gzip", "compress", "zstd", "GZIP", "identity, gzip", "gzip, identity", "snappy"]) {
        const fields = [...(type === undefined ? [] : ["Content-Type", type]), "Content-Encoding", encoding];
        expect(methodOverrideInspector("POST", fields), `${type} ${encoding}`).toEqual({ refused: expect.stringMatching(/Content-Encoding .*send it uncompressed/) });
      }
      // In a second field, and spelt as CGI servers read it (Content_Encoding), too.
      for (const fields of [["Content-Encoding", "identity", "content-encoding", "gzip"], ["Content_Encoding", "gzip"], ["content.encoding", "deflate"]]) {
        expect(methodOverrideInspector("POST", [...(type === undefined ? [] : ["Content-Type", type]), ...fields]), `${type} ${fields.join(":")}`).toEqual({ refused: expect.stringMatching(/Content-Encoding/) });
      }
      // No coding, identity, or an empty value: the body is read as it comes.
      for (const encoding of ["identity", "IDENTITY", "", " identity , identity "]) {
        const made = methodOverrideInspector("POST", [...(type === undefined ? [] : ["Content-Type", type]), "Content-Encoding", encoding]);
        expect(made !== undefined && !("refused" in made), `${type} ${JSON.stringify(encoding)}`).toBe(true);
      }
    }
    // Bodies no framework reads _method from are not read, compressed or not (nothing changes for them).
    for (const type of ["text/plain", "application/octet-stream", "image/png"]) expect(methodOverrideInspector("POST", ["Content-Type", type, "Content-Encoding", "gzip"])).toBeUndefined();
    expect(methodOverrideInspector("PUT", ["Content-Type", FORM, "Content-Encoding", "gzip"])).toBeUndefined();
  });

  it("checks every charset parameter, not only the first (content-type, which body-parser uses, keeps the last)", () => {
    expect(methodOverrideInspector("POST", ["Content-Type", `${FORM}; charset=utf-8; charset=utf-7`])).toEqual({ refused: expect.stringMatching(/charset utf-7/) });
    expect(methodOverrideInspector("POST", ["Content-Type", "multipart/form-data; boundary=B; charset=utf-16"])).toEqual({ refused: expect.stringMatching(/multipart body in charset utf-16/) });
    const reader = methodOverrideInspector("POST", ["Content-Type", "multipart/form-data; charset=utf-8; boundary=B"]) as BodyInspector;
    expect(reader.push(Buffer.from('--B\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--B--\r\n'))).toBeDefined();
  });

  it("reads nothing but POST, and no body no framework reads _method from", () => {
    for (const method of ["PUT", "PATCH", "GET", "DELETE"]) expect(methodOverrideInspector(method, ["Content-Type", FORM])).toBeUndefined();
    for (const type of ["text/plain", "application/octet-stream", "application/grpc", "image/png"]) expect(methodOverrideInspector("POST", ["Content-Type", type])).toBeUndefined();
  });
});

describe("multipart bodies (read strictly: what parsers would read differently is refused)", () => {
  const part = (disposition: string, content: string, boundary = "XyZ") => `--${boundary}\r\nContent-Disposition: ${disposition}\r\n\r\n${content}\r\n`;
  const type = "multipart/form-data; boundary=XyZ";
  const body = (head: string) => `--XyZ\r\n${head}\r\n\r\nDELETE\r\n--XyZ--\r\n`;

  it("refuses a part named _method in every way a parser reads a name", () => {
    for (const disposition of ['form-data; name="_method"', "form-data; name=_method", 'form-data;name="_method"', 'form-data; name="\\_method"', "form-data; name*=UTF-8''%5Fmethod", 'form-data; name=".method"', 'form-data; name="_method[]"', 'form-data; name="[_method"', 'form-data; name="_method]"']) {
      refusedEveryWay(type, `${part('form-data; name="a"', "1")}${part(disposition, "DELETE")}--XyZ--\r\n`);
    }
    // Rack 2.2 reads the last `; name=` in the field, inside quotes too; and names a part by its Content-ID.
    refusedEveryWay(type, body('Content-Disposition: form-data; name="a"; filename="x; name=_method"'));
    refusedEveryWay(type, body("Content-ID: _method"));
    // multipart/mixed (Rack and Spring parse any multipart/*); a quoted boundary; Chrome's and an upper-case BOUNDARY=.
    refusedEveryWay('multipart/mixed; boundary="a.b"', `${part('form-data; name="_method"', "PUT", "a.b")}--a.b--`);
    refusedEveryWay("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW", part('form-data; name="_method"', "PUT", "----WebKitFormBoundary7MA4YWxkTrZu0gW"));
    refusedEveryWay("multipart/form-data; BOUNDARY=XyZ", `${part('form-data; name="_method"', "PUT")}--XyZ--`);
    // RFC 2047 encoded words, which Tomcat's parser decodes in every parameter.
    refusedEveryWay(type, `${part('form-data; name="=?UTF-8?Q?=5Fmethod?="', "PUT")}--XyZ--`);
    // Overlong UTF-8 forms, escaped in name* or raw in name.
    refusedEveryWay(type, `${part("form-data; name*=UTF-8''%C1%9Fmethod", "PUT")}--XyZ--`);
    refusedEveryWay(type, `${part('form-data; name="\xc1\x9fmethod"', "PUT")}--XyZ--`);
    refusedEveryWay(type, `${part(`form-data; name="=?utf-8?b?${Buffer.from("_method").toString("base64")}?="`, "PUT")}--XyZ--`);
  });

  it("refuses heads and delimiters parsers read differently, the shapes found by review (stop 36) among them", () => {
    for (const head of [
      "Content-Disposition: form-data\n\n; name=_method", // bare LF: Rack ends heads only at CRLF CRLF
      'X-Foo: name="\r\nContent-Disposition: form-data; name="_method"', // a quote open past its line
      "Content-Disposition: form-data; name='_method'", // PHP reads single quotes
      'Content-Disposition: form-data; na\r\nme="_method"', // PHP joins a line without ':' to the one before
      'Content-Disposition: form-data; name="_met\r\nhod"',
      "Content-Disposition: form-data;\r\n name=_method", // folding
      "Content-Disposition: name=_method x; form-data", // PHP cuts a bare value at a space
      'Content-Disposition: name="_method"x', // and a quoted one at its quote
      'Content-Disposition: form-data;\xa0name="\r\nContent-Disposition: form-data; name=_method x; y="', // U+00A0 is \s to JavaScript, not to Ruby
      `X: ${"a".repeat(5117)}Content-Disposition: name="_method"`, // PHP reads head lines in 5 KiB pieces
      'Content-Disposition: form-data--XyZ--; name="_method"', // the boundary inside a head
      'X-Note: --XyZ--\r\nContent-Disposition: form-data; name="_method"',
      'Content-Disposition: form-data; name="a"\r\nContent-Disposition: form-data; name="_method"', // two of them
      "X-Foo:\x00bar", // a control character
      // Found by the third review (stop 36): Rack searches the whole head for `Content-Disposition:` and `Content-ID:`,
      "X-Content-Disposition: form-data; name=_method",
      'X-Foo: Content-Disposition:; name=_method\r\nContent-Disposition: form-data; name="a"',
      "X-Content-ID: _method",
      "Content-Type: text/plain; x=Content-ID:_method",
      // takes the last `; name=`, inside a quoted value too,
      'Content-Disposition: form-data; name="x; name=_method"',
      'Content-Disposition: form-data; name="\\"; name=_method"',
      // and PHP splits at ';' outside '…' as well as "…".
      `Content-Disposition: form-data; a='; name="'; name=_method; b="`,
    ]) {
      refusedEveryWay(type, body(head));
    }
    // An empty head: Rack reads the next lines as the head.
    refusedEveryWay(type, '--XyZ\r\n\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n');
    // A delimiter line with more after the boundary, or not ended by CRLF.
    refusedEveryWay(type, '--XyZ\r\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n');
    refusedEveryWay(type, '--XyZx\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n');
    refusedEveryWay(type, '--XyZ\nContent-Disposition: form-data; name="_method"\n\nPUT\n--XyZ--');
    // A body that starts with its close delimiter (Rack opens a part there), and anything after the close one (PHP parses on).
    refusedEveryWay(type, '--XyZ--\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n');
    refusedEveryWay(type, `${part('form-data; name="a"', "1")}--XyZ--\r\n--XyZ\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n`);
    // The boundary inside a line of content (Rack takes `--XyZ` + CRLF anywhere as a delimiter).
    refusedEveryWay(type, `${part('form-data; name="a"', 'x--XyZ name="')}--XyZ\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n`);
  });

  it("reads what browsers, curl and HTTP libraries send, and not part contents, file names, a preamble or an epilogue", () => {
    const html = '<form><input type="hidden" name="_method" value="patch"></form>\r\n\r\nname="_method"\r\n-- XyZ -XyZ';
    acceptedEveryWay(type, `${part('form-data; name="template"; filename="edit.html"', html)}${part('form-data; name="payment_method"; filename="payment_method.csv"', "a,b")}--XyZ--\r\n`);
    acceptedEveryWay(type, `preamble name=_method\r\n${part('form-data; name="a"', "1")}--XyZ--\r\n\r\nepilogue name=_method`);
    acceptedEveryWay(type, `${part('form-data; name="user[payment_method]"', "card")}${part('form-data; name="order[_method_id]"', "1")}--XyZ--`);
    // Chrome (UTF-8 file name), curl (Content-Type per part), a transport-padded delimiter, RFC 5987 file name.
    // .NET: the file name twice, as an RFC 2047 word and RFC 5987, ~1,100 bytes for 75 CJK characters.
    const cjk = Buffer.from("\u6587".repeat(75), "utf8");
    acceptedEveryWay(type, `--XyZ\r\nContent-Disposition: form-data; name=file; filename="=?utf-8?B?${cjk.toString("base64")}?="; filename*=utf-8''${[...cjk].map((b) => `%${b.toString(16).toUpperCase()}`).join("")}\r\n\r\nx\r\n--XyZ--\r\n`);
    acceptedEveryWay(type, `--XyZ\r\nContent-Disposition: form-data; name="file"; filename="r\xc3\xa9sum\xc3\xa9.pdf"\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--XyZ \t\r\nContent-Disposition: form-data; name=note; filename*=UTF-8''%E2%82%AC.txt\r\n\r\nx\r\n--XyZ--\r\n`);
  });

  it("refuses a multipart type without exactly one plain boundary, a head over 16 KiB, and more than 4,096 parts", () => {
    expect(methodOverrideInspector("POST", ["Content-Type", "multipart/form-data"])).toEqual({ refused: expect.stringMatching(/exactly one plain boundary/) });
    // Where parsers would read different boundaries (a part delimited by one of them could hide from the other),
    // and boundaries PHP and Rack cut differently (quotes, escapes, spaces, ',') or longer than RFC 2046's 70.
    for (const t of ["multipart/form-data; boundary=a; boundary=b", "multipart/form-data; boundary=a; xboundary=b", "multipart/form-data; BOUNDARY=a; xboundary; y=b", "multipart/form-data; boundaryjunk=b", "multipart/form-data; boundary= b", 'multipart/form-data; boundary=""', "multipart/form-data; boundary=xxboundary=b", "multipart/form-data; BOUNDARY=a; boundary=b", 'multipart/form-data; boundary=B"x', 'multipart/form-data; boundary="B\\"x"', "multipart/form-data; boundary=B x", 'multipart/form-data; boundary="a b"', "multipart/form-data; boundary=a,b", `multipart/form-data; boundary=${"b".repeat(71)}`]) {
      expect(methodOverrideInspector("POST", ["Content-Type", t]), t).toEqual({ refused: expect.stringMatching(/exactly one plain boundary/) });
    }
    expect(inspector(type).push(Buffer.from(`--XyZ\r\nX-Pad: ${"a".repeat(5_000)}`))).toMatch(/longer than 4000 bytes/);
    const lines = inspector(type);
    expect(lines.push(Buffer.from("--XyZ\r\n"))).toBeUndefined();
    let problem: string | undefined;
    for (let i = 0; i < 40 && problem === undefined; i++) problem = lines.push(Buffer.from(`X-Pad: ${"a".repeat(3000)}\r\n`));
    expect(problem).toMatch(/exceeds 16 KiB/);
    const many = inspector(type);
    expect(many.push(Buffer.from(`${part('form-data; name="a"', "1")}`.repeat(4096)))).toBeUndefined();
    expect(many.push(Buffer.from(part('form-data; name="a"', "1")))).toMatch(/more than 4096 parts/);
  });
});

describe("JSON bodies (Laravel reads _method from them: Illuminate\\Http\\Request::createFromBase)", () => {
  it("refuses a member named _method, escaped or not, with the ':' however far", () => {
    for (const body of ['{"_method":"DELETE"}', '{"a":1,"_method" : "DELETE"}', '{"\\u005fmethod":"DELETE"}', '{"\\u005F\\u006D\\u0065\\u0074\\u0068\\u006F\\u0064":"PUT"}', `{"_method"${" ".repeat(100)}\n:"PUT"}`, '{"a":{"_method":"PUT"}}']) {
      refusedEveryWay("application/json", body);
    }
    refusedEveryWay("application/vnd.api+json; charset=utf-8", '{"_method":"PATCH"}');
  });

  it("refuses a JSON body that is not UTF-8: a charset other than utf-8/us-ascii, a UTF-16/32 byte-order mark, NUL bytes (review MEDIUM-2)", () => {
    // express.json() decodes any charset starting 'utf-' (expressjs/body-parser lib/types/json.js:
    // isValidCharset `charset.slice(0, 4) === 'utf-'`; lib/read.js: iconv.decode(body, encoding),
    // whose utf-16/utf-32 decoders take the byte order from a BOM, else guess it from the NULs).
    for (const charset of ["utf-16", "UTF-16LE", "utf-16be", "utf-32", "utf-32le", "utf-7", "iso-8859-1", "\"utf-16le\"", "utf-8; charset=utf-16le", "us-ascii;charset=utf-32"]) {
      expect(methodOverrideInspector("POST", ["Content-Type", `application/json; charset=${charset}`]), charset).toEqual({ refused: expect.stringMatching(/JSON body in charset .*send it in UTF-8/) });
    }
    for (const charset of ["utf-8", "UTF-8", "\"utf-8\"", "us-ascii", "US-ASCII"]) {
      const reader = methodOverrideInspector("POST", ["Content-Type", `application/json; charset=${charset}`]) as BodyInspector;
      expect(reader.push(Buffer.from('{"_method":"DELETE"}')), charset).toBeDefined();
    }
    // Without a charset: UTF-16/32 told by a BOM or by NUL bytes (RFC 4627 §3), in any split.
    const utf16le = Buffer.from('{"_method":"DELETE"}', "utf16le");
    const utf16be = Buffer.from(utf16le).swap16();
    const bodies = [Buffer.concat([Buffer.from([0xff, 0xfe]), utf16le]), Buffer.concat([Buffer.from([0xfe, 0xff]), utf16be]), utf16le, utf16be, Buffer.from('{"a":1}\0\0')];
    const utf32 = Buffer.alloc(utf16le.length * 2);
    for (let i = 0; i < utf16le.length; i += 2) utf32.writeUInt32LE(utf16le.readUInt16LE(i), i * 2);
    bodies.push(utf32, Buffer.concat([Buffer.from([0xff, 0xfe, 0, 0]), utf32]));
    for (const body of bodies) {
      for (let at = 0; at <= Math.min(body.length, 6); at++) {
        const reader = inspector("application/json");
        const verdict = reader.push(body.subarray(0, at)) ?? reader.push(body.subarray(at)) ?? reader.end();
        expect(verdict, `${body.subarray(0, 8).toString("hex")} split at ${at}`).toMatch(/UTF-16 or UTF-32/);
      }
    }
    // A BOM only counts at the start; a UTF-8 BOM is UTF-8 (iconv-lite strips it), and the member is still found.
    acceptedEveryWay("application/json", '{"a":"\xfe\xff"}');
    refusedEveryWay("application/json", '\xef\xbb\xbf{"_method":"DELETE"}');
    acceptedEveryWay("application/json", '\xef\xbb\xbf{"a":1}');
  });

  it("lets other members and _method as a value through", () => {
    for (const body of ['{"payment_method":"card"}', '{"a":"_method"}', '{"a":["_method", "x"]}', '{"a":"\\"_method\\":1"}', '{"a":"_method"   }', '{"_methods":1}']) acceptedEveryWay("application/json", body);
  });
});
