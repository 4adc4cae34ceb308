/**
 * `_method` fields in POST bodies. Rails (Rack::MethodOverride), Symfony and Laravel, and Spring's
 * HiddenHttpMethodFilter run a POST as the method a `_method` form field names, and Laravel takes
 * it from a JSON body too; the policy judged a POST. The sidecar reads such bodies as they pass
 * and refuses the request before the app has all of it: the chunk that shows the field, and the
 * body's end, are never forwarded (the upstream connection is closed instead), and every one of
 * those frameworks parses the whole body before it reads the field.
 *
 * Each reading is wider than any one parser's (Rack 2.2, PHP 8.2, Tomcat's), never narrower: a
 * name is checked in every form one of them could give it (isMethodOverrideName), and a multipart
 * head in every way one of them splits it. Work is linear in the body: names and part heads are
 * decoded, values and part contents are skipped with indexOf.
 */
import { isMethodOverrideName, urlDecodedBytes } from "./canonical.ts";
import { cgiFieldName } from "./headers.ts";

/** Reads a request body as it passes; a problem stops the request before the bytes that showed it are forwarded. */
export interface BodyInspector {
  /** These body bytes (before they are forwarded): why the request is refused, or undefined. */
  push(chunk: Buffer): string | undefined;
  /** The body ended (before its end is forwarded): why the request is refused, or undefined. */
  end(): string | undefined;
}

const REFUSAL = "a _method field in the body, which frameworks read as the request's method: send the method itself";

/**
 * Charsets in which every ASCII character of a form is the byte it is in ASCII, and no other
 * bytes make one (what the inspector reads is what Spring decodes). UTF-16/32, UTF-7, EBCDIC and
 * ISO-2022 (whose escapes can split `_met` from `hod` in the bytes) are not among them.
 */
const ASCII_COMPATIBLE =
  /^(?:utf-?8|us-ascii|ascii|iso[-_]?8859[-_]\d+|latin-?\d|l\d|windows-125\d|cp125\d|shift[-_]jis|sjis|windows-31j|ms932|cp932|euc-?(?:jp|kr|cn|tw)|gb2312|gbk|gb18030|cp936|big5(?:-hkscs)?|cp950|koi8-[ru]|tis-620|cp874|windows-874|ks_c_5601-1987|windows-949|cp949|uhc|x-sjis|csshiftjis|ms_kanji|x-euc-jp|iso-8859-8-i|macintosh|mac-?roman|ibm866|cp866)$/i;

/**
 * What a POST with these fields needs: undefined (nothing to read: not a POST, or a body no such
 * framework reads `_method` from), a refusal (a body that cannot be read with certainty), or an
 * inspector. Forms and JSON are read: Rack also parses a POST without Content-Type as a form, Rack
 * and Spring any multipart/* type, Laravel any type naming JSON.
 *
 * Such a body is read only as the bytes it is, so a body that the app could read as other bytes
 * is refused: one with a Content-Encoding other than `identity` (Express's body parsers inflate
 * gzip, deflate and br before method-override reads `_method`: expressjs/body-parser
 * lib/read.js contentstream; Koa's co-body and hapi inflate too; any other coding as well, which
 * another parser may undo), and one in a charset whose bytes for `_method` are not its ASCII
 * bytes (every `charset` parameter is checked: parsers keep the first or the last).
 */
export function methodOverrideInspector(method: string, rawHeaders: readonly string[]): BodyInspector | { refused: string } | undefined {
  if (method !== "POST") return undefined;
  const types = namedFields(rawHeaders, "content-type");
  if (types.length > 1) return { refused: "a POST with more than one Content-Type field (also spelt with '_' or '.'), whose body a _method field could hide in" };
  const type = (types[0] ?? "").trim().toLowerCase();
  const form = type === "" || type.includes("x-www-form-urlencoded");
  const multipart = type.includes("multipart/");
  const json = type.includes("json");
  if (!form && !multipart && !json) return undefined;
  const coding = contentCoding(rawHeaders);
  if (coding !== undefined) return { refused: `a ${json ? "JSON" : multipart ? "multipart" : "form"} body with Content-Encoding ${coding}, which apps inflate before they read a _method field in it (Express's body parsers): send it uncompressed` };
  const charsets = [...type.matchAll(/(?:^|[;,\s])charset\s*=\s*"?([^";,\s]*)/g)].map((m) => m[1]!);
  const inspectors: BodyInspector[] = [];
  if (form || multipart) {
    // A multipart head is ASCII as well: no parser reads it in another charset, none needs one.
    const charset = charsets.find((c) => !ASCII_COMPATIBLE.test(c));
    if (charset !== undefined) return { refused: `a ${form ? "form" : "multipart"} body in charset ${charset}, in which a _method field cannot be read: send it in UTF-8` };
  }
  if (form) inspectors.push(new FormInspector());
  if (multipart) {
    const boundary = multipartBoundary(types[0] ?? "");
    if (boundary === undefined) return { refused: "a multipart body whose Content-Type does not name exactly one plain boundary (1 to 70 of RFC 2046's characters, no space or ','), in which a _method field cannot be read" };
    inspectors.push(new MultipartInspector(boundary));
  }
  if (json) {
    // JSON is UTF-8 (RFC 8259 §8.1). express.json() decodes any `utf-*` charset the Content-Type
    // names (body-parser: isValidCharset `charset.slice(0, 4) === 'utf-'`, then iconv-lite, which
    // also reads a UTF-16/32 BOM); Jackson detects UTF-16/32 from the first bytes (RFC 4627 §3).
    const charset = charsets.find((c) => !JSON_CHARSET.test(c));
    if (charset !== undefined) return { refused: `a JSON body in charset ${charset}, in which a _method member cannot be read: send it in UTF-8` };
    inspectors.push(new Utf8JsonOnly(), new JsonInspector());
  }
  return inspectors.length === 1 ? inspectors[0] : new AllOf(inspectors);
}

/** Charsets a JSON body may name: its bytes are then the UTF-8 the inspector reads. */
const JSON_CHARSET = /^(?:utf-8|us-ascii)$/i;

/**
 * The first content coding other than `identity` in any Content-Encoding field (its name spelt
 * with '_' or '.' too, as namedFields reads names), or undefined when there is none.
 */
function contentCoding(rawHeaders: readonly string[]): string | undefined {
  for (const value of namedFields(rawHeaders, "content-encoding")) {
    for (const item of value.split(",")) {
      const coding = item.trim().toLowerCase();
      if (coding !== "" && coding !== "identity") return JSON.stringify(coding.slice(0, 40));
    }
  }
  return undefined;
}

/**
 * The fields called `name` (content-type, content-encoding), with any character but a letter or a
 * digit in the name read as '-' (cgiFieldName): CGI-style servers (`php -S`, which `php artisan
 * serve` runs; lighttpd) give `Content_Type`, `Content.Type` and `Content+Type` the variable
 * Laravel reads the type from.
 */
function namedFields(rawHeaders: readonly string[], name: string): string[] {
  const values: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const field = rawHeaders[i]!;
    if (field.length === name.length && cgiFieldName(field.toLowerCase()) === name) values.push(rawHeaders[i + 1]!);
  }
  return values;
}

/**
 * The boundary, when every parser reads the same one from this Content-Type, else undefined.
 * Rack takes the last `boundary=` (any case) and stops at '"', ';' or ','; PHP the first
 * "boundary" (lower case first), then the first '=' after it, and keeps what follows up to ';'
 * or ',' (spaces and quotes too) or, quoted, up to the next '"'; RFC 2045 parsers unescape a
 * quoted one. They agree when the field names one `boundary=` (the only "boundary" in it, or
 * the first, in lower case), whose value starts right after the '=' and is 1 to 70 of RFC 2046's
 * characters without space or ',', bare or in quotes without escapes, and ends the parameter.
 */
function multipartBoundary(contentType: string): string | undefined {
  const all = [...contentType.matchAll(/boundary/gi)];
  if (all.length === 0) return undefined;
  const at = all[0]!.index;
  if (all.length > 1 && contentType.slice(at, at + 8) !== "boundary") return undefined;
  if (/boundary\s*=/i.test(contentType.slice(at + 8))) return undefined;
  const m = /^boundary\s*=(?:"([^"\\]*)"|([^";,\s]*))[ \t]*(?:;|$)/i.exec(contentType.slice(at));
  const value = m?.[1] ?? m?.[2];
  return value !== undefined && /^[0-9A-Za-z'()+_\-./:=?]{1,70}$/.test(value) ? value : undefined;
}

class AllOf implements BodyInspector {
  constructor(private readonly inspectors: readonly BodyInspector[]) {}
  push(chunk: Buffer): string | undefined {
    for (const inspector of this.inspectors) {
      const problem = inspector.push(chunk);
      if (problem !== undefined) return problem;
    }
    return undefined;
  }
  end(): string | undefined {
    for (const inspector of this.inspectors) {
      const problem = inspector.end();
      if (problem !== undefined) return problem;
    }
    return undefined;
  }
}

const AMP = 0x26;
const SEMI = 0x3b;
const EQ = 0x3d;
const PCT = 0x25;
const PLUS = 0x2b;
/** Decoded characters of a name kept: one leading space (a run of them collapsed), `_method` and the one after it. */
const NAME_KEPT = 9;

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

const NAME_END = 1;
const NAME_INTERESTING = 2;
/** Per byte, in a form: ends a name ('&', ';', '='), or could be part of a `_method` name ('m', 'M', '%', an overlong form's lead byte). */
const NAME_BYTE = new Uint8Array(256);
for (const c of [AMP, SEMI, EQ]) NAME_BYTE[c] = NAME_END;
for (const c of [0x6d, 0x4d, PCT, 0xc0, 0xc1, 0xe0, 0xf0]) NAME_BYTE[c] = NAME_INTERESTING;

/**
 * Whether `bytes` (1 to 4) begin an overlong UTF-8 form of an ASCII character (C0/C1 xx,
 * E0 80–81 xx, F0 80 80–81 xx): "complete", "prefix", or undefined for neither.
 */
function overlongAscii(bytes: readonly number[]): "complete" | "prefix" | undefined {
  const lead = bytes[0]!;
  const cont = (b: number | undefined) => b !== undefined && b >= 0x80 && b <= 0xbf;
  const total = lead === 0xc0 || lead === 0xc1 ? 2 : lead === 0xe0 ? 3 : lead === 0xf0 ? 4 : 0;
  if (total === 0) return undefined;
  for (let k = 1; k < bytes.length; k++) {
    const b = bytes[k]!;
    const ok = k === total - 2 && total > 2 ? b === 0x80 || b === 0x81 : k < total - 2 ? b === 0x80 : cont(b);
    if (!ok) return undefined;
  }
  return bytes.length === total ? "complete" : "prefix";
}

/** The next index of `byte` at or after `from`, reusing `known` while it is still ahead (-1: none left in the chunk). */
function nextIndex(chunk: Buffer, byte: number, known: number, from: number): number {
  return known === -1 || known >= from ? known : chunk.indexOf(byte, from);
}

/**
 * `application/x-www-form-urlencoded`: each name (at the start and after '&', or ';' as old Rack
 * read them) decoded as it streams ('+' as space, %XX), its first characters kept; values are
 * skipped with indexOf. A name is complete at '=', '&', ';' or the body's end.
 */
class FormInspector implements BodyInspector {
  #inValue = false;
  #name = "";
  /** The name's kept characters are all known (past NAME_KEPT, or cut at a NUL). */
  #nameFull = false;
  /** Raw characters of an escape not yet complete: "%" or "%X". */
  #escape = "";
  /** Decoded bytes of what may be an overlong UTF-8 form not yet complete (at most 3). */
  #overlong: number[] = [];

  push(chunk: Buffer): string | undefined {
    const n = chunk.length;
    let amp = -2;
    let semi = -2;
    let eq = -2;
    let i = 0;
    while (i < n) {
      if (this.#inValue) {
        // A short value is stepped over here; a long one with indexOf.
        let k = i;
        const near = Math.min(n, i + 32);
        while (k < near && chunk[k] !== AMP && chunk[k] !== SEMI) k++;
        if (k === near) {
          amp = nextIndex(chunk, AMP, amp, k);
          semi = nextIndex(chunk, SEMI, semi, k);
          k = amp < 0 ? semi : semi < 0 ? amp : Math.min(amp, semi);
          if (k < 0) return undefined;
        }
        this.#inValue = false;
        i = k + 1;
        continue;
      }
      if (this.#name === "" && this.#escape === "" && this.#overlong.length === 0 && !this.#nameFull) {
        // A name shorter than `_method`, or without an 'm' or an escape, cannot be `_method`: its
        // bytes are only looked at. (One that goes on into the next chunk is decoded below.)
        let k = i;
        let interesting = 0;
        for (; k < n; k++) {
          const kind = NAME_BYTE[chunk[k]!]!;
          if (kind === NAME_END) break;
          interesting |= kind;
        }
        if (k < n && (!interesting || k - i < 7)) {
          this.#inValue = chunk[k] === EQ;
          i = k + 1;
          continue;
        }
      }
      amp = nextIndex(chunk, AMP, amp, i);
      semi = nextIndex(chunk, SEMI, semi, i);
      eq = nextIndex(chunk, EQ, eq, i);
      const separator = amp < 0 ? semi : semi < 0 ? amp : Math.min(amp, semi);
      const end = separator < 0 ? eq : eq < 0 ? separator : Math.min(separator, eq);
      const stop = end < 0 ? n : end;
      for (let k = i; k < stop && !this.#nameFull; k++) this.#take(chunk[k]!);
      if (end < 0) return undefined;
      const problem = this.#endName();
      if (problem !== undefined) return problem;
      this.#inValue = chunk[end] === EQ;
      i = end + 1;
    }
    return undefined;
  }

  end(): string | undefined {
    return this.#inValue ? undefined : this.#endName();
  }

  #take(c: number): void {
    if (this.#escape.length > 0 || c === PCT) {
      this.#escape += String.fromCharCode(c);
      if (this.#escape.length === 1) return;
      const high = hexValue(this.#escape.charCodeAt(1));
      if (high < 0) return this.#flushEscape();
      if (this.#escape.length === 2) return;
      const low = hexValue(this.#escape.charCodeAt(2));
      if (low < 0) return this.#flushEscape();
      this.#escape = "";
      return this.#add((high << 4) | low);
    }
    this.#add(c === PLUS ? 0x20 : c);
  }

  /** An invalid escape: its characters stand for themselves (PHP's urldecode). */
  #flushEscape(): void {
    const raw = this.#escape;
    this.#escape = "";
    for (let k = 0; k < raw.length && !this.#nameFull; k++) this.#add(raw.charCodeAt(k));
  }

  /**
   * A decoded byte of the name. Overlong UTF-8 forms of ASCII characters are read as the character
   * (as a lenient decoder does, isMethodOverrideName), before leading runs are collapsed, so that
   * a name padded with overlong spaces is still bounded.
   */
  #add(decoded: number): void {
    if (this.#overlong.length > 0 || decoded === 0xc0 || decoded === 0xc1 || decoded === 0xe0 || decoded === 0xf0) {
      this.#overlong.push(decoded);
      const state = overlongAscii(this.#overlong);
      if (state === "prefix") return;
      const bytes = this.#overlong;
      this.#overlong = [];
      if (state === "complete") return this.#addChar(((bytes[bytes.length - 2]! & 0x01) << 6) | (bytes[bytes.length - 1]! & 0x3f));
      // Not an overlong form: its first byte stands for itself, the rest is read again.
      this.#addChar(bytes[0]!);
      for (let k = 1; k < bytes.length && !this.#nameFull; k++) this.#add(bytes[k]!);
      return;
    }
    this.#addChar(decoded);
  }

  #addChar(decoded: number): void {
    if (decoded === 0) {
      this.#nameFull = true;
      return;
    }
    // Runs of leading spaces or brackets (PHP drops the spaces, Rack the brackets) collapse to one.
    const leading = decoded === 0x20 || decoded === 0x5b || decoded === 0x5d;
    if (leading && this.#name.length === 1 && (this.#name === " " || this.#name === "[" || this.#name === "]")) {
      if (this.#name !== String.fromCharCode(decoded)) this.#name = "[";
      return;
    }
    this.#name += String.fromCharCode(decoded);
    if (this.#name.length >= NAME_KEPT) this.#nameFull = true;
  }

  #endName(): string | undefined {
    if (this.#escape.length > 0) this.#flushEscape();
    for (const b of this.#overlong.splice(0)) if (!this.#nameFull) this.#addChar(b);
    const name = this.#name;
    this.#name = "";
    this.#nameFull = false;
    return name.length >= 7 && isMethodOverrideName(name) ? REFUSAL : undefined;
  }
}

/** Bytes of a part's head read before the request is refused (real ones are a few hundred). */
const PART_HEAD_MAX = 16 * 1024;
/**
 * A head line longer than this is refused: PHP reads head lines in 5 KiB pieces, each a line of
 * its own. (.NET writes a file name twice, encoded, which passes RFC 5322's 998 with ~75 CJK characters.)
 */
const HEAD_LINE_MAX = 4000;
/**
 * Delimiters in one body past which it is refused: each starts a head to read. Rack refuses more
 * parts too (multipart_total_part_limit, 4,096), PHP reads 1,000 fields (max_input_vars).
 */
const MAX_PARTS = 4096;
const EMPTY = Buffer.alloc(0);
const CRLF = Buffer.from("\r\n");
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t\x20-\x7e\x80-\xff]*)$/;
/** Content-Disposition as RFC 6266 / 7578 write it: a type, then `; name=value` parameters, value a token or a quoted string. */
const DISPOSITION = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*;[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+=(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+|"(?:[^"\\]|\\[\s\S])*"))*[ \t]*$/;
const DISPOSITION_PARAMETER = /;[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)=([!#$%&'*+.^_`|~0-9A-Za-z-]+|"(?:[^"\\]|\\[\s\S])*")/g;
/**
 * Rack 2.2's reading of a name in Content-Disposition (MULTIPART_CONTENT_DISPOSITION), Ruby's \s
 * spelt out (JavaScript's takes U+00A0 too); sticky, tried at every ';' (Rack's greedy `[^:]*`
 * takes the last one, inside a quoted value too).
 */
const RACK_NAME = /;[ \t\r\n\f\v]*name=("(?:\\"|[^"])*"|[^ \t\r\n\f\v()<>,;:\\"/[\]?=]+)/iy;

type MultipartState = "preamble" | "delimiter" | "head" | "content" | "epilogue";

/**
 * `multipart/*`, read strictly: parsers differ on almost everything else (where a head starts
 * and ends, quotes, continuation lines, line length, what a delimiter is), so a body is read
 * only when it is written the one way they all read alike, and refused otherwise (where the
 * policy's answer depends on the method). Every `--boundary` must start a line (CRLF before it,
 * or the body's start) and be a delimiter line: `--boundary`, padding, CRLF, or the close
 * `--boundary--`; the first one opens a part, nothing follows the close but an epilogue without
 * the boundary. A head is non-empty CRLF-ended `Name: value` lines (no folding, no bare CR or LF,
 * no control characters, at most 4,000 bytes, without the boundary) up to an empty line; at most one
 * Content-Disposition, in RFC 6266 form. Its `name` / `name*` parameters, Rack's reading of a
 * name in it and a Content-ID (Rack names a part by it) must not be `_method`. Part contents
 * are skipped with indexOf.
 */
class MultipartInspector implements BodyInspector {
  readonly #delimiter: Buffer;
  readonly #delimiterText: string;
  #state: MultipartState = "preamble";
  /** The last bytes of the stream before the current chunk (a delimiter, or the CRLF before it, may straddle). */
  #tail = EMPTY;
  /** The current delimiter line's bytes after `--boundary`, or the current head line's. */
  #line: Buffer[] = [];
  #lineBytes = 0;
  #headLines: string[] = [];
  #headBytes = 0;
  #parts = 0;
  #opened = false;
  /** Bytes of the stream before the current chunk. */
  #offset = 0;

  constructor(boundary: string) {
    this.#delimiterText = `--${boundary}`;
    this.#delimiter = Buffer.from(this.#delimiterText, "latin1");
  }

  push(chunk: Buffer): string | undefined {
    const problem = this.#read(chunk);
    this.#offset += chunk.length;
    return problem;
  }

  #read(chunk: Buffer): string | undefined {
    let at = 0;
    while (at < chunk.length) {
      const state = this.#state;
      if (state === "delimiter" || state === "head") {
        const lf = chunk.indexOf(0x0a, at);
        const end = lf < 0 ? chunk.length : lf;
        this.#line.push(chunk.subarray(at, end));
        this.#lineBytes += end - at;
        if (this.#lineBytes > HEAD_LINE_MAX + 1) return `a multipart body with a delimiter or head line longer than ${HEAD_LINE_MAX} bytes`;
        if (lf < 0) break;
        const line = (this.#line.length === 1 ? this.#line[0]! : Buffer.concat(this.#line)).toString("latin1");
        this.#line = [];
        this.#lineBytes = 0;
        at = lf + 1;
        const problem = state === "delimiter" ? this.#delimiterLine(line) : this.#headLine(line);
        if (problem !== undefined) return problem;
        // A part's content (or the epilogue) starts a line: its first bytes may be a delimiter.
        if (this.#state !== "delimiter" && this.#state !== "head") this.#tail = CRLF;
        continue;
      }
      // preamble, content, epilogue: the next delimiter, also across the chunk boundary.
      const probe = this.#tail.length === 0 ? EMPTY : Buffer.concat([this.#tail, chunk.subarray(at, at + this.#delimiter.length - 1)]);
      let found = probe.length === 0 ? -1 : probe.indexOf(this.#delimiter);
      let before: Buffer;
      if (found >= 0) {
        before = probe.subarray(Math.max(0, found - 2), found);
        found = at + found - this.#tail.length;
      } else {
        found = chunk.indexOf(this.#delimiter, at);
        if (found < 0) {
          const keep = this.#delimiter.length + 1;
          const kept = chunk.length - at >= keep ? chunk.subarray(chunk.length - keep) : Buffer.concat([this.#tail, chunk.subarray(at)]);
          this.#tail = Buffer.from(kept.subarray(Math.max(0, kept.length - keep)));
          return undefined;
        }
        before = found - at >= 2 ? chunk.subarray(found - 2, found) : Buffer.concat([this.#tail, chunk.subarray(at, found)]).subarray(-2);
      }
      const startsLine = this.#offset + found === 0 || (before.length === 2 && before[0] === 0x0d && before[1] === 0x0a);
      if (state === "epilogue") return "a multipart body with the boundary after its close delimiter";
      if (!startsLine) return "a multipart body with the boundary inside a line";
      if (++this.#parts > MAX_PARTS) return `a multipart body of more than ${MAX_PARTS} parts`;
      this.#tail = EMPTY;
      this.#state = "delimiter";
      at = found + this.#delimiter.length;
    }
    return undefined;
  }

  end(): string | undefined {
    if (this.#state === "delimiter") {
      // The close delimiter may end the body without its CRLF.
      const rest = Buffer.concat(this.#line).toString("latin1");
      if (/^--[ \t]*$/.test(rest) && this.#opened) return undefined;
      return "a multipart body that ends inside a delimiter line";
    }
    if (this.#state === "head") return "a multipart body that ends inside a part head";
    return undefined;
  }

  /** The rest of a delimiter line (what follows `--boundary` up to LF). */
  #delimiterLine(line: string): string | undefined {
    if (!line.endsWith("\r")) return "a multipart delimiter line that does not end in CRLF";
    const rest = line.slice(0, -1);
    if (/^--[ \t]*$/.test(rest)) {
      if (!this.#opened) return "a multipart body that starts with its close delimiter";
      this.#state = "epilogue";
      return undefined;
    }
    if (!/^[ \t]*$/.test(rest)) return "a multipart delimiter line with more after the boundary";
    this.#opened = true;
    this.#state = "head";
    this.#headLines = [];
    this.#headBytes = 0;
    return undefined;
  }

  #headLine(line: string): string | undefined {
    if (!line.endsWith("\r")) return "a multipart part head line that does not end in CRLF";
    const text = line.slice(0, -1);
    this.#headBytes += line.length + 1;
    if (this.#headBytes > PART_HEAD_MAX) return "a multipart part whose head exceeds 16 KiB";
    if (text === "") {
      this.#state = "content";
      return partHeadProblem(this.#headLines);
    }
    if (text.includes(this.#delimiterText)) return "a multipart part head with the boundary in it";
    this.#headLines.push(text);
    return undefined;
  }
}

/** A part head (its lines) that names `_method` as Rack, PHP or an RFC parser reads it, or that they could read differently. */
function partHeadProblem(lines: readonly string[]): string | undefined {
  if (lines.length === 0) return "a multipart part without a head (Rack reads the next lines as its head)";
  // Rack looks for `Content-Disposition:` and `Content-ID:` anywhere in the head (inside other
  // fields' names and values too): they may only be fields of their own.
  const lineStarts = new Set<number>();
  let offset = 0;
  for (const line of lines) {
    lineStarts.add(offset);
    offset += line.length + 2;
  }
  for (const m of lines.join("\r\n").matchAll(/content-(?:disposition|id):/gi)) {
    if (!lineStarts.has(m.index)) return "a multipart part head that names Content-Disposition or Content-ID elsewhere than as a field (Rack reads a name there)";
  }
  const candidates: string[] = [];
  let dispositions = 0;
  for (const line of lines) {
    const m = HEADER_LINE.exec(line);
    if (m === null) return "a multipart part head line that is not `Name: value`";
    const name = m[1]!.toLowerCase();
    const value = m[2]!;
    const content = name === "content-id";
    if (!content && name !== "content-disposition") continue;
    if (!content && ++dispositions > 1) return "a multipart part with more than one Content-Disposition";
    if (!content && !DISPOSITION.test(value)) return "a multipart Content-Disposition that is not `type; name=value…` (parsers read such ones differently)";
    // No `_method` without "method" after a character read as '_', a percent escape, an encoded
    // word, a backslash escape or the lead byte of an overlong UTF-8 form (isMethodOverrideName).
    if (!/[_. [\]]method|%|=\?|\\|[\xc0\xc1\xe0\xf0]/i.test(value)) continue;
    if (content) {
      candidates.push(value.trim());
      continue;
    }
    for (const p of value.matchAll(DISPOSITION_PARAMETER)) {
      const key = p[1]!.toLowerCase();
      if (key !== "name" && key !== "name*") continue;
      const raw = unquoted(p[2]!);
      candidates.push(raw);
      if (key === "name*") candidates.push(urlDecodedBytes(raw.replace(/^[^']*'[^']*'/, "")));
    }
    for (let at = value.indexOf(";"); at >= 0; at = value.indexOf(";", at + 1)) {
      RACK_NAME.lastIndex = at;
      const r = RACK_NAME.exec(value);
      if (r !== null) candidates.push(unquoted(r[1]!), r[1]!);
    }
    const php = phpName(value);
    if (php !== undefined) candidates.push(php);
  }
  for (const candidate of candidates) {
    for (const form of nameForms(candidate)) if (isMethodOverrideName(form)) return REFUSAL;
  }
  return undefined;
}

/**
 * The name PHP reads from a Content-Disposition value (main/rfc1867.c): parameters split at ';'
 * outside '"…"' and "'…'" (php_ap_getword), the key up to '=' (the same way), compared as it is;
 * the value (php_ap_getword_conf) in either quote up to the same quote, `\<quote>` escaped, or
 * up to white space; the last `name` wins.
 */
function phpName(value: string): string | undefined {
  const words = (text: string, stop: string): [string, string] => {
    let pos = 0;
    while (pos < text.length && text[pos] !== stop) {
      const q = text[pos];
      if (q === '"' || q === "'") {
        pos++;
        while (pos < text.length && text[pos] !== q) pos += text[pos] === "\\" && text[pos + 1] === q ? 2 : 1;
        if (pos < text.length) pos++;
      } else pos++;
    }
    return [text.slice(0, pos), text.slice(pos + 1)];
  };
  let name: string | undefined;
  let rest = value.replace(/^[ \t]+/, "");
  while (rest.length > 0) {
    const [pair, after] = words(rest, ";");
    rest = after.replace(/^[ \t\r\n\f\v]+/, "");
    if (!pair.includes("=")) continue;
    const [key, word] = words(pair, "=");
    if (key.toLowerCase() !== "name") continue;
    const w = word.replace(/^[ \t\r\n\f\v]+/, "");
    const q = w[0];
    if (q === '"' || q === "'") {
      let out = "";
      for (let i = 1; i < w.length && w[i] !== q; i++) {
        if (w[i] === "\\" && w[i + 1] === q) i++;
        out += w[i];
      }
      name = out;
    } else {
      name = w.split(/[ \t\r\n\f\v]/)[0]!;
    }
  }
  return name;
}

/** A value without its quotes ('"' or "'", closed or not) and with backslash escapes undone. */
function unquoted(value: string): string {
  const q = value[0];
  if (q !== '"' && q !== "'") return value;
  const inner = value.length > 1 && value.endsWith(q) ? value.slice(1, -1) : value.slice(1);
  return inner.replace(/\\([\s\S])/g, "$1");
}

/** A parameter value as each parser could read it: as is, percent-decoded, RFC 2047-decoded (Tomcat). */
function nameForms(value: string): string[] {
  const forms = [value, urlDecodedBytes(value)];
  if (value.includes("=?")) forms.push(encodedWordsDecoded(value));
  return forms;
}

function encodedWordsDecoded(text: string): string {
  return text.replace(/=\?[^?]*\?([qb])\?([^?]*)\?=/gi, (_, encoding: string, data: string) =>
    encoding.toLowerCase() === "b" ? Buffer.from(data, "base64").toString("latin1") : data.replace(/_/g, " ").replace(/=([0-9a-f]{2})/gi, (__, hex: string) => String.fromCharCode(parseInt(hex, 16))),
  );
}

/**
 * A JSON body whose bytes are UTF-16 or UTF-32 without a charset saying so: a BOM (FE FF, FF FE;
 * UTF-32's start with 00 00 FE FF or FF FE 00 00) at its start, or a NUL byte anywhere (UTF-8
 * JSON has none: RFC 8259 §7 escapes control characters in strings, and NUL is no whitespace),
 * which is how RFC 4627 §3 detection (Jackson's) and iconv-lite's UTF-16/32 decoders tell them.
 */
class Utf8JsonOnly implements BodyInspector {
  #seen = 0;
  #first = -1;

  push(chunk: Buffer): string | undefined {
    if (chunk.length === 0) return undefined;
    const bom = this.#seen === 0 ? (chunk.length > 1 ? chunk[0]! * 256 + chunk[1]! : -1) : this.#seen === 1 ? this.#first * 256 + chunk[0]! : -1;
    if (this.#seen === 0) this.#first = chunk[0]!;
    this.#seen += chunk.length;
    if (bom === 0xfeff || bom === 0xfffe || chunk.includes(0)) return "a JSON body in UTF-16 or UTF-32 (a byte-order mark or NUL bytes), in which a _method member cannot be read: send it in UTF-8";
    return undefined;
  }

  end(): string | undefined {
    return undefined;
  }
}

/**
 * JSON: a member named `_method` at any depth (Laravel reads the top level), its name written
 * plainly or with \u escapes, found with a regular expression over each chunk and the end of the
 * one before; the ':' that makes a string a name may come chunks later, after whitespace.
 */
const JSON_NAME = /"(?:_|\\u005f)(?:m|\\u006d)(?:e|\\u0065)(?:t|\\u0074)(?:h|\\u0068)(?:o|\\u006f)(?:d|\\u0064)"[ \t\r\n]*(:|$)/gi;
/** The longest such name, escapes and all, with its quotes. */
const JSON_NAME_MAX = 2 + 7 * 6;

class JsonInspector implements BodyInspector {
  #carry = "";
  /** A `"_method"` ended the previous chunk, followed only by whitespace. */
  #awaitingColon = false;

  push(chunk: Buffer): string | undefined {
    let text = chunk.toString("latin1");
    if (this.#awaitingColon) {
      const rest = text.replace(/^[ \t\r\n]+/, "");
      if (rest.startsWith(":")) return REFUSAL;
      if (rest.length > 0) this.#awaitingColon = false;
    }
    text = this.#carry + text;
    for (const m of text.matchAll(JSON_NAME)) {
      if (m[1] === ":") return REFUSAL;
      this.#awaitingColon = true;
    }
    this.#carry = text.slice(-JSON_NAME_MAX);
    return undefined;
  }

  end(): string | undefined {
    return undefined;
  }
}
