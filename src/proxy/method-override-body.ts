/**
 * `_method` fields in POST bodies. Rails (Rack::MethodOverride), Symfony and Laravel, and Spring's
 * HiddenHttpMethodFilter run a POST as the method a `_method` form field names, and Laravel takes
 * it from a JSON body too; the policy judged a POST. The sidecar reads such bodies as they pass
 * and refuses the request before the app has all of it: the chunk that shows the field, and the
 * body's end, are never forwarded (the upstream connection is closed instead), and every one of
 * those frameworks parses the whole body before it reads the field.
 */
import { isMethodOverrideName } from "./canonical.ts";
import { findHeader, findHeaders } from "./http1/wire.ts";

/** Reads a request body as it passes; a problem stops the request before the bytes that showed it are forwarded. */
export interface BodyInspector {
  /** These body bytes (before they are forwarded): why the request is refused, or undefined. */
  push(chunk: Buffer): string | undefined;
  /** The body ended (before its end is forwarded): why the request is refused, or undefined. */
  end(): string | undefined;
}

const REFUSAL = "a _method field in the body, which frameworks read as the request's method: send the method itself";

/** Charsets in which `_method` is written as in ASCII (a form body in UTF-16 would hide it). */
const ASCII_COMPATIBLE = /^(?:utf-?8|us-ascii|ascii|iso-?8859-\d+|latin-?1|windows-125\d|cp125\d)$/i;

/**
 * What a POST with these fields needs: undefined (nothing to read: not a POST, or a body no such
 * framework reads `_method` from), a refusal (a body that cannot be read with certainty), or an
 * inspector. Only the forms and JSON are read: Rack also parses a POST without Content-Type as
 * a form, Rack and Spring any multipart/* type, Laravel any type naming JSON.
 */
export function methodOverrideInspector(method: string, rawHeaders: readonly string[]): BodyInspector | { refused: string } | undefined {
  if (method !== "POST") return undefined;
  const types = findHeaders(rawHeaders, "content-type");
  if (types.length > 1) return { refused: "a POST with more than one Content-Type field, whose body a _method field could hide in" };
  const type = (types[0] ?? "").trim().toLowerCase();
  const encoding = (findHeader(rawHeaders, "content-encoding") ?? "identity").trim().toLowerCase();
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
  if (encoding !== "identity") return { refused: `a POST form or JSON body with Content-Encoding ${encoding}, in which a _method field cannot be read: send it uncompressed` };
  return inspectors.length === 1 ? inspectors[0] : new AllOf(inspectors);
}

/**
 * The start of the boundary every parser reads from this Content-Type. Rack takes the last
 * `boundary=` (any case) and stops at '"', ';' or ','; PHP the first "boundary" (lower case
 * first), then the first '=' after it, and keeps what follows up to ';' or ',' (spaces and
 * quotes too) or, quoted, up to the next '"'; RFC 2045 parsers unescape a quoted one. Each of
 * their delimiters begins with `--` and this prefix (up to the first '"', '\\', ';', ',' or
 * space), so looking for that finds every delimiter any of them sees. Undefined unless all of
 * them read the same `boundary=`: the first "boundary" is lower case and directly followed by
 * '=' (spaces allowed), no other `boundary=` follows, and a value starts right after the '='.
 */
function boundaryPrefix(contentType: string): string | undefined {
  const at = contentType.toLowerCase().indexOf("boundary");
  if (at < 0 || contentType.slice(at, at + 8) !== "boundary") return undefined;
  const m = /^boundary\s*=("?)([^"\\;,\s]*)/.exec(contentType.slice(at));
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
/** Decoded characters of a name kept: one leading space (a run of them collapsed), `_method` and the one after it. */
const NAME_KEPT = 9;

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

/**
 * `application/x-www-form-urlencoded`: each name (at the start and after '&', or ';' as old Rack
 * read them) decoded as it streams ('+' as space, %XX), its first characters kept; values are
 * skipped with indexOf.
 */
class FormInspector implements BodyInspector {
  #inValue = false;
  #name = "";
  /** The name's kept characters are all known (past NAME_KEPT, or cut at a NUL). */
  #nameFull = false;
  /** Raw characters of an escape not yet complete: "%" or "%X". */
  #escape = "";

  push(chunk: Buffer): string | undefined {
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.#inValue) {
        const next = nextSeparator(chunk, i);
        if (next < 0) return undefined;
        this.#inValue = false;
        i = next + 1;
        continue;
      }
      const c = chunk[i]!;
      if (c === AMP || c === SEMI || c === EQ) {
        const problem = this.#endName();
        if (problem !== undefined) return problem;
        this.#inValue = c === EQ;
        i++;
        continue;
      }
      if (this.#nameFull) {
        // The rest of a name that cannot change the verdict: skip to its end.
        const next = nextNameEnd(chunk, i);
        if (next < 0) return undefined;
        i = next;
        continue;
      }
      this.#take(c);
      i++;
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
    if (decoded === 0x20 && this.#name === " ") return;
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

function nextSeparator(chunk: Buffer, from: number): number {
  const amp = chunk.indexOf(AMP, from);
  const semi = chunk.indexOf(SEMI, from);
  return amp < 0 ? semi : semi < 0 ? amp : Math.min(amp, semi);
}

function nextNameEnd(chunk: Buffer, from: number): number {
  const sep = nextSeparator(chunk, from);
  const eq = chunk.indexOf(EQ, from);
  return sep < 0 ? eq : eq < 0 ? sep : Math.min(sep, eq);
}

/** Bytes of a part's header block kept before the request is refused (real ones are a few hundred). */
const PART_HEADERS_MAX = 16 * 1024;

/**
 * `multipart/*`: the header block after every `--boundary` (anywhere, not only at a line start:
 * wider than any parser) is read up to its empty line, and each `name` or `name*` parameter in
 * it, quoted or not, escaped or not, is checked. Bytes inside parts are not read.
 */
class MultipartInspector implements BodyInspector {
  readonly #delimiter: Buffer;
  /** The last bytes of the previous chunk (a delimiter may straddle two chunks). */
  #carry = Buffer.alloc(0);
  /** The header block being collected, or undefined while in a part's content. */
  #headers: string | undefined;

  constructor(boundary: string) {
    this.#delimiter = Buffer.from(`--${boundary}`, "latin1");
  }

  push(chunk: Buffer): string | undefined {
    const data = this.#carry.length > 0 ? Buffer.concat([this.#carry, chunk]) : chunk;
    this.#carry = Buffer.alloc(0);
    let at = 0;
    for (;;) {
      const before = this.#headers;
      if (before !== undefined) {
        const text = before + data.toString("latin1", at);
        // A close delimiter ("--boundary--") ends the parts: what follows is no header block.
        if (before.length < 2 && text.startsWith("--")) {
          this.#headers = undefined;
          at += 2 - before.length;
          continue;
        }
        const blank = /\r?\n\r?\n/.exec(text);
        if (blank === null) {
          if (text.length > PART_HEADERS_MAX) return "a multipart part whose headers exceed 16 KiB";
          this.#headers = text;
          return undefined;
        }
        const problem = partHeadersProblem(text.slice(0, blank.index));
        if (problem !== undefined) return problem;
        this.#headers = undefined;
        // The block cannot have ended inside the text kept before (it would have been found then).
        at += blank.index + blank[0].length - before.length;
        continue;
      }
      const found = data.indexOf(this.#delimiter, at);
      if (found < 0) {
        const keep = Math.min(data.length - at, this.#delimiter.length - 1);
        this.#carry = Buffer.from(data.subarray(data.length - keep));
        return undefined;
      }
      at = found + this.#delimiter.length;
      this.#headers = "";
    }
  }

  end(): string | undefined {
    const headers = this.#headers;
    this.#headers = undefined;
    return headers === undefined ? undefined : partHeadersProblem(headers);
  }
}

/** A `name` / `name*` parameter of a part that names `_method`, in any of the ways parsers read one. */
function partHeadersProblem(block: string): string | undefined {
  for (const m of block.matchAll(/(?:^|[\s;])name(\*?)\s*=\s*("(?:[^"\\]|\\[\s\S])*"?|[^;\s]*)/gi)) {
    const extended = m[1] === "*";
    const raw = m[2]!;
    const candidates = new Set<string>();
    if (raw.startsWith('"')) {
      const inner = raw.slice(1, raw.endsWith('"') && raw.length > 1 ? -1 : undefined);
      candidates.add(inner.replace(/\\([\s\S])/g, "$1"));
      candidates.add(inner);
    } else {
      candidates.add(raw);
      candidates.add(raw.split(/["',]/)[0]!);
    }
    for (const candidate of [...candidates]) {
      const value = extended ? candidate.replace(/^[^']*'[^']*'/, "") : candidate;
      candidates.add(value);
      candidates.add(percentDecoded(value));
      // RFC 2047 encoded words, which Tomcat's multipart parser (for Spring) decodes in every parameter.
      if (value.includes("=?")) candidates.add(encodedWordsDecoded(value));
    }
    for (const candidate of candidates) if (isMethodOverrideName(candidate)) return REFUSAL;
  }
  return undefined;
}

function encodedWordsDecoded(text: string): string {
  return text.replace(/=\?[^?]*\?([qb])\?([^?]*)\?=/gi, (_, encoding: string, data: string) =>
    encoding.toLowerCase() === "b" ? Buffer.from(data, "base64").toString("latin1") : data.replace(/_/g, " ").replace(/=([0-9a-f]{2})/gi, (__, hex: string) => String.fromCharCode(parseInt(hex, 16))),
  );
}

function percentDecoded(text: string): string {
  return text.replace(/%([0-9a-f]{2})/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
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
    JSON_NAME.lastIndex = 0;
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
