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
import { findHeaders } from "./http1/wire.ts";

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
  /^(?:utf-?8|us-ascii|ascii|iso[-_]?8859[-_]\d+|latin-?\d|l\d|windows-125\d|cp125\d|shift[-_]jis|sjis|windows-31j|ms932|cp932|euc-?(?:jp|kr|cn|tw)|gb2312|gbk|gb18030|cp936|big5(?:-hkscs)?|cp950|koi8-[ru]|tis-620|cp874)$/i;

/**
 * What a POST with these fields needs: undefined (nothing to read: not a POST, or a body no such
 * framework reads `_method` from), a refusal (a body that cannot be read with certainty), or an
 * inspector. Forms and JSON are read: Rack also parses a POST without Content-Type as a form, Rack
 * and Spring any multipart/* type, Laravel any type naming JSON. A body with a Content-Encoding
 * is none of theirs to parse: none of them inflates request bodies.
 */
export function methodOverrideInspector(method: string, rawHeaders: readonly string[]): BodyInspector | { refused: string } | undefined {
  if (method !== "POST") return undefined;
  const types = findHeaders(rawHeaders, "content-type");
  if (types.length > 1) return { refused: "a POST with more than one Content-Type field, whose body a _method field could hide in" };
  const encodings = findHeaders(rawHeaders, "content-encoding").map((e) => e.trim().toLowerCase());
  if (encodings.some((e) => e !== "" && e !== "identity")) return undefined;
  const type = (types[0] ?? "").trim().toLowerCase();
  const inspectors: BodyInspector[] = [];
  if (type === "" || type.includes("x-www-form-urlencoded")) {
    const charset = /(?:^|[;,\s])charset\s*=\s*"?([^";,\s]*)/.exec(type)?.[1];
    if (charset !== undefined && !ASCII_COMPATIBLE.test(charset)) return { refused: `a form body in charset ${charset}, in which a _method field cannot be read: send it in UTF-8` };
    inspectors.push(new FormInspector());
  }
  if (type.includes("multipart/")) {
    const boundary = boundaryPrefix(types[0] ?? "");
    if (boundary === undefined) return { refused: "a multipart body whose Content-Type does not name exactly one boundary, in which a _method field cannot be read" };
    inspectors.push(new MultipartInspector(boundary));
  }
  if (type.includes("json")) inspectors.push(new JsonInspector());
  if (inspectors.length === 0) return undefined;
  return inspectors.length === 1 ? inspectors[0] : new AllOf(inspectors);
}

/**
 * The start of the boundary every parser reads from this Content-Type. Rack takes the last
 * `boundary=` (any case) and stops at '"', ';' or ','; PHP the first "boundary" (lower case
 * first), then the first '=' after it, and keeps what follows up to ';' or ',' (spaces and
 * quotes too) or, quoted, up to the next '"'; RFC 2045 parsers unescape a quoted one. Each of
 * their delimiters begins with `--` and this prefix (up to the first '"', '\\', ';', ',' or
 * space), so looking for that finds every delimiter any of them sees. Undefined unless all of
 * them read the same `boundary=`: the only "boundary" in the field, or the first one in lower
 * case, directly followed by '=' (spaces allowed) with a value right after it, and no other
 * `boundary=` after it.
 */
function boundaryPrefix(contentType: string): string | undefined {
  const all = [...contentType.matchAll(/boundary/gi)];
  if (all.length === 0) return undefined;
  const at = all[0]!.index;
  if (all.length > 1 && contentType.slice(at, at + 8) !== "boundary") return undefined;
  const m = /^boundary\s*=("?)([^"\\;,\s]*)/i.exec(contentType.slice(at));
  if (m === null || m[2] === "" || /boundary\s*=/i.test(contentType.slice(at + 8))) return undefined;
  return m[2];
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
const DASH = 0x2d;
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
/** Per byte, in a form: ends a name ('&', ';', '='), or could be part of a `_method` name ('m', 'M', '%'). */
const NAME_BYTE = new Uint8Array(256);
for (const c of [AMP, SEMI, EQ]) NAME_BYTE[c] = NAME_END;
for (const c of [0x6d, 0x4d, PCT]) NAME_BYTE[c] = NAME_INTERESTING;

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
      if (this.#name === "" && this.#escape === "" && !this.#nameFull) {
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

  #add(decoded: number): void {
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
    const name = this.#name;
    this.#name = "";
    this.#nameFull = false;
    return name.length >= 7 && isMethodOverrideName(name) ? REFUSAL : undefined;
  }
}

/** Bytes of a part's head read before the request is refused (real ones are a few hundred). */
const PART_HEAD_MAX = 16 * 1024;
/**
 * Delimiters in one body past which it is refused: each starts a head to read. Rack refuses more
 * parts too (multipart_total_part_limit, 4,096), PHP reads 1,000 fields (max_input_vars).
 */
const MAX_PARTS = 4096;
const HEAD_END = Buffer.from("\r\n\r\n");
const EMPTY = Buffer.alloc(0);

/**
 * `multipart/*`. Every `--boundary` (anywhere, not only at a line start, and after the close
 * delimiter too: PHP parses on) starts a head, read up to the first CRLF CRLF (where Rack and
 * Tomcat end it; PHP ends it at any empty line, sooner) or up to the next `--boundary`, whichever
 * comes first, so that no head, real or not, hides the next one. A head longer than 16 KiB is
 * refused. Part contents are not read.
 */
class MultipartInspector implements BodyInspector {
  readonly #delimiter: Buffer;
  /** Bytes not yet settled: the end of the previous chunk (a delimiter may straddle two) or a head so far. */
  #pending = EMPTY;
  /** #pending starts with a head (right after its delimiter). */
  #inHead = false;
  #parts = 0;

  constructor(boundary: string) {
    this.#delimiter = Buffer.from(`--${boundary}`, "latin1");
  }

  push(chunk: Buffer): string | undefined {
    const delimiter = this.#delimiter;
    let data = chunk;
    let at = 0;
    /** The end of the stream before this chunk, when a delimiter could start in it and end past this (short) chunk. */
    let before = EMPTY;
    if (this.#pending.length > 0 && this.#inHead) {
      data = Buffer.concat([this.#pending, chunk]);
    } else if (this.#pending.length > 0) {
      // A delimiter across the two chunks (copying only its bytes: a copy of every chunk cost more than the search).
      const probe = Buffer.concat([this.#pending, chunk.subarray(0, delimiter.length - 1)]);
      const found = probe.indexOf(delimiter);
      if (found >= 0) {
        at = found + delimiter.length - this.#pending.length;
        this.#inHead = true;
        if (++this.#parts > MAX_PARTS) return `a multipart body of more than ${MAX_PARTS} parts`;
      } else if (chunk.length < delimiter.length - 1) {
        before = this.#pending;
      }
    }
    this.#pending = EMPTY;
    // Next delimiter and next CRLF CRLF, kept while still ahead: each search runs once per find.
    let next = -2;
    let blank = -2;
    const nextDelimiter = (from: number) => (next = next === -1 || next >= from ? next : data.indexOf(delimiter, from));
    for (;;) {
      if (this.#inHead) {
        // The close delimiter ("--boundary--") starts no head; two bytes are needed to know.
        if (data.length - at < 2) return this.#keep(data, at, true);
        if (data[at] === DASH && data[at + 1] === DASH) {
          this.#inHead = false;
          at += 2;
          continue;
        }
        nextDelimiter(at);
        blank = blank === -1 || blank >= at ? blank : data.indexOf(HEAD_END, at);
        const end = blank >= 0 && (next < 0 || blank + HEAD_END.length <= next) ? blank + HEAD_END.length : next;
        if (end < 0 ? data.length - at > PART_HEAD_MAX : end - at > PART_HEAD_MAX) return "a multipart part whose head exceeds 16 KiB";
        if (end < 0) return this.#keep(data, at, true);
        const problem = partHeadProblem(data.toString("latin1", at, end));
        if (problem !== undefined) return problem;
        this.#inHead = false;
        at = end;
        continue;
      }
      const found = nextDelimiter(at);
      if (found < 0) {
        if (before.length > 0 && at === 0) return this.#keep(Buffer.concat([before, data]), Math.max(0, before.length + data.length - (delimiter.length - 1)), false);
        const keep = Math.min(data.length - at, delimiter.length - 1);
        return this.#keep(data, data.length - keep, false);
      }
      at = found + delimiter.length;
      this.#inHead = true;
      if (++this.#parts > MAX_PARTS) return `a multipart body of more than ${MAX_PARTS} parts`;
    }
  }

  end(): string | undefined {
    if (!this.#inHead) return undefined;
    this.#inHead = false;
    return partHeadProblem(this.#pending.toString("latin1"));
  }

  #keep(data: Buffer, from: number, inHead: boolean): undefined {
    this.#pending = Buffer.from(data.subarray(from));
    this.#inHead = inHead;
    return undefined;
  }
}

/**
 * A part head that names `_method` as some parser reads it. Rack (2.2, Rack::Multipart::Parser):
 * `Content-Disposition:[^:]*;\s*name=(quoted|token)` across lines, else the `Content-ID` value.
 * PHP (main/rfc1867.c): lines up to the first empty one, a line without ':' (or indented) joined
 * to the one before as it is, parameters split at ';' (quotes not minded), values in '"' or "'"
 * with backslash escapes. RFC 2231/5987 (`name*=`), RFC 2047 encoded words (Tomcat) and percent
 * escapes decoded too. Every parameter of every line whose name is `name` counts, whatever the
 * header, and a quoted value never runs past its line.
 */
function partHeadProblem(head: string): string | undefined {
  // No `_method` without "method" after a character read as '_' (a line break may come between:
  // PHP joins lines), a percent escape, an encoded word or a backslash escape.
  const joined = head.includes("\n") ? head.replace(/\r?\n/g, "") : head;
  if (!/[_. [\]]method|%|=\?|\\/i.test(joined)) return undefined;
  const candidates = new Set<string>();
  for (const m of head.matchAll(/Content-Disposition:[^:]*;\s*name=("(?:\\"|[^"])*"|[^\s()<>,;:\\"/[\]?=]+)/gi)) candidates.add(unquoted(m[1]!));
  for (const m of head.matchAll(/Content-ID:\s*([^\r\n]*)/gi)) candidates.add(m[1]!.trim());
  const lines = head.split(/\r?\n/);
  // PHP's reading: up to the first empty line, continuation lines joined with nothing between.
  const php: string[] = [];
  for (const line of lines) {
    if (line === "" && php.length > 0) break;
    if (php.length > 0 && (!line.includes(":") || /^[ \t]/.test(line))) php[php.length - 1] += line;
    else if (line !== "") php.push(line);
  }
  // RFC 5322 unfolding, and each line on its own.
  const unfolded = head.replace(/\r?\n[ \t]+/g, " ").split(/\r?\n/);
  for (const line of new Set([...php, ...unfolded, ...lines])) parameterNames(line, candidates);
  for (const candidate of candidates) {
    for (const form of nameForms(candidate)) if (isMethodOverrideName(form)) return REFUSAL;
  }
  return undefined;
}

/** Values of `name` / `name*` parameters in one header line, split at ';' both minding quotes and not. */
function parameterNames(line: string, into: Set<string>): void {
  if (!/name/i.test(line)) return;
  const value = line.includes(":") ? line.slice(line.indexOf(":") + 1) : line;
  const pieces = value.split(";");
  if (/["']/.test(value)) pieces.push(...(value.match(/(?:[^;"']|"(?:\\.|[^"\\])*"?|'(?:\\.|[^'\\])*'?)+/g) ?? []));
  for (const piece of pieces) {
    const eq = piece.indexOf("=");
    if (eq < 0) continue;
    const key = piece.slice(0, eq).trim().toLowerCase();
    if (key !== "name" && key !== "name*") continue;
    const raw = piece.slice(eq + 1).trim();
    into.add(raw);
    into.add(unquoted(raw));
    if (key === "name*") into.add(urlDecodedBytes(unquoted(raw).replace(/^[^']*'[^']*'/, "")));
  }
}

/** A value without its quotes ('"' or "'", closed or not) and with backslash escapes undone. */
function unquoted(value: string): string {
  const q = value[0];
  if (q !== '"' && q !== "'") return value;
  const inner = value.length > 1 && value.endsWith(q) ? value.slice(1, -1) : value.slice(1);
  return inner.replace(/\\([\s\S])/g, "$1");
}

/** A parameter value as each parser could read it: as is, percent-decoded, RFC 2047-decoded. */
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
