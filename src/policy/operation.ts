/**
 * Operation names and request paths: normalisation and precompiled glob matchers.
 *
 * Glob syntax (Dapr's, see https://docs.dapr.io/operations/configuration/invoke-allowlist/
 * and dapr/dapr pkg/config/trie.go):
 *   - a segment `*` matches exactly one path segment; a trailing `/*` also matches the bare
 *     prefix (Dapr: `/op3/a/*` matches `/op3/a`, see dapr/dapr pkg/acl/acl_test.go), unless the
 *     prefix is an operation of its own, which then decides it (barePrefixName, decide.ts rule 8);
 *   - a segment `**` matches any number of segments (zero included) and must be the last one;
 *   - `*` inside a segment (`/v1/order*`) matches any characters within that segment;
 *   - a name whose last segment is a literal or an in-segment glob (`/admin`, `/files/*.pdf`) also
 *     covers the paths below it (`/admin/users`), as Dapr's trie does (matchesBelow), ranked there
 *     as the name followed by `/**` (belowPattern, decide.ts rule 8).
 * Names are compared with the canonical request path (src/proxy/canonical.ts): what it keeps
 * percent-encoded a name spells encoded too (operationNameProblem refuses it raw).
 */

/** Segment kinds, ordered by specificity (higher = more specific). */
export const SegmentKind = { Rest: 0, Any: 1, Glob: 2, Literal: 3 } as const;
export type SegmentKind = (typeof SegmentKind)[keyof typeof SegmentKind];

interface Segment {
  readonly kind: SegmentKind;
  readonly literal: string;
  /** Glob segments: the literal pieces around its "*"s ("a*b*" → ["a", "b", ""]), see matchesGlob. */
  readonly pieces: readonly string[] | undefined;
}

export interface OperationPattern {
  /** The normalised name as written (case kept), e.g. "/v1/orders/**". */
  readonly name: string;
  /** Lower-cased: requests (also lower-cased) are matched without regard to case. */
  readonly segments: readonly Segment[];
  /** Specificity per segment, left to right, then literal character count. */
  readonly ranks: readonly number[];
  readonly literalChars: number;
}

// Not a cost bound (matchesGlob is linear whatever the count): the limit predates it and keeps rules readable.
const MAX_GLOBS_PER_SEGMENT = 3;
/**
 * Escapes decoded in an operation: those the sidecar's canonical path decodes (src/proxy/canonical.ts:
 * unreserved, ":", "@" and the sub-delims but ";"), less "*", which in a rule name would become a wildcard.
 */
const DECODED = /^[A-Za-z0-9\-._~!$&'()+,=:@]$/;

/**
 * Normalises a request path the way Dapr does before matching (purell "usually safe greedy"
 * plus duplicate-slash removal): drops the query and fragment, decodes percent-escapes of
 * the characters the sidecar decodes (DECODED), collapses "//", resolves "." and ".." (never above the root),
 * drops the trailing slash and guarantees a leading one. Never throws.
 */
export function normaliseOperation(input: string): string {
  if (isAlreadyNormal(input)) return input;
  let path = input;
  const cut = firstIndexOf(path, "?", "#");
  if (cut !== -1) path = path.slice(0, cut);
  if (path.includes("%")) path = decodeUnreserved(path);
  const out: string[] = [];
  for (const segment of path.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") {
      out.pop();
      continue;
    }
    out.push(segment);
  }
  return `/${out.join("/")}`;
}

function isAlreadyNormal(path: string): boolean {
  const n = path.length;
  if (n === 0 || path.charCodeAt(0) !== 47 /* / */) return false;
  if (n > 1 && path.charCodeAt(n - 1) === 47) return false;
  for (let i = 0; i < n; i++) {
    const c = path.charCodeAt(i);
    if (c === 63 /* ? */ || c === 35 /* # */ || c === 37 /* % */) return false;
    if (c === 47 && i + 1 < n) {
      const next = path.charCodeAt(i + 1);
      if (next === 47) return false;
      if (next === 46 /* . */) {
        const after = i + 2 < n ? path.charCodeAt(i + 2) : 47;
        if (after === 47) return false;
        if (after === 46 && (i + 3 >= n || path.charCodeAt(i + 3) === 47)) return false;
      }
    }
  }
  return true;
}

function firstIndexOf(text: string, a: string, b: string): number {
  const i = text.indexOf(a);
  const j = text.indexOf(b);
  if (i === -1) return j;
  if (j === -1) return i;
  return Math.min(i, j);
}

function decodeUnreserved(path: string): string {
  return path.replace(/%([0-9A-Fa-f]{2})/g, (escape, hex: string) => {
    const char = String.fromCharCode(Number.parseInt(hex, 16));
    return DECODED.test(char) ? char : escape.toUpperCase();
  });
}

/** Why an operation name cannot be compiled, or undefined when it can. */
export function operationNameProblem(name: string): string | undefined {
  if (name.trim() === "") return "the operation name is empty";
  const encoding = encodingProblem(name);
  if (encoding !== undefined) return encoding;
  const segments = normaliseOperation(name).split("/").slice(1);
  const rest = segments.indexOf("**");
  if (rest !== -1 && rest !== segments.length - 1) {
    return "'**' is only supported as the last segment (as in Dapr), e.g. /v1/orders/**";
  }
  if (segments.some((segment) => segment !== "**" && (segment.match(/\*+/g)?.length ?? 0) > MAX_GLOBS_PER_SEGMENT)) {
    return `at most ${MAX_GLOBS_PER_SEGMENT} '*' wildcards per path segment are supported`;
  }
  return undefined;
}

/**
 * Characters a canonical request path holds as they are (src/proxy/canonical.ts: RFC 3986 pchar and
 * "/", less ";", which it refuses raw). Any other character reaches the policy percent-encoded, so a
 * rule naming it raw could never match: a deny rule written that way would deny nothing.
 */
const RAW_IN_PATH = /^[A-Za-z0-9\-._~!$&'()*+,=:@/]$/;

/**
 * Why a rule name could never match a request path, or undefined. Only the path part is read: a
 * query or fragment is dropped from a rule name (normaliseOperation), as from a request.
 */
function encodingProblem(name: string): string | undefined {
  const cut = firstIndexOf(name, "?", "#");
  const path = cut === -1 ? name : name.slice(0, cut);
  let written = "";
  const offending: string[] = [];
  // One escape or one code point at a time ("u": a surrogate pair is one token, a lone surrogate too).
  for (const [token] of path.matchAll(/%[0-9A-Fa-f]{2}|./gsu)) {
    if (token.length === 3 && token[0] === "%") {
      const escape = token.toUpperCase();
      const byte = Number.parseInt(escape.slice(1), 16);
      if (byte < 0x20 || byte === 0x7f) {
        return `the operation name holds ${escape}, an escaped control character: the sidecar refuses every request path with one, so the rule could never match`;
      }
      if (escape === "%2A") {
        return "the operation name holds %2A: the sidecar decodes an escaped '*' in a request path (/a%2Ab is judged as /a*b), so the rule could never match; write '*', a wildcard, which matches a '*' too";
      }
      written += token;
      continue;
    }
    if (RAW_IN_PATH.test(token)) {
      written += token;
      continue;
    }
    const code = token.charCodeAt(0);
    if (code < 0x20 || code === 0x7f) {
      return `the operation name holds a control character (${JSON.stringify(token)}): the sidecar refuses every request path with one, raw or escaped, so the rule could never match`;
    }
    if (token === "\\") {
      return "the operation name holds a backslash: the sidecar refuses one in a request path (some servers read it as '/'), so the rule could never match; an escaped one (%5C) is refused too unless escapedSlashes is keep, and then judged as %5C";
    }
    if (token.length === 1 && code >= 0xd800 && code <= 0xdfff) {
      return "the operation name holds a lone UTF-16 surrogate, which is not a character: no request path can spell it";
    }
    // encodeURIComponent: UTF-8, upper-case hex, as canonical.ts spells an escape it keeps.
    if (!offending.includes(token)) offending.push(token);
    written += encodeURIComponent(token);
  }
  if (offending.length === 0) return undefined;
  const listed = offending.map((char) => `${JSON.stringify(char)} (${encodeURIComponent(char)})`).join(", ");
  return `the operation name ${JSON.stringify(name)} holds ${listed}, which a request path always carries percent-encoded, so the rule could never match: write ${JSON.stringify(written + name.slice(path.length))} (UTF-8, upper-case hex, as the sidecar spells the path it judges)`;
}

export function compileOperation(rawName: string): OperationPattern {
  const name = normaliseOperation(rawName);
  const parts = name === "/" ? [] : name.slice(1).split("/");
  const segments = parts.map((part) => compileSegment(part.toLowerCase()));
  let literalChars = 0;
  for (const part of parts) literalChars += part.replaceAll("*", "").length;
  return { name, segments, ranks: segments.map((s) => s.kind), literalChars };
}

function compileSegment(part: string): Segment {
  if (part === "**") return { kind: SegmentKind.Rest, literal: part, pieces: undefined };
  if (part === "*") return { kind: SegmentKind.Any, literal: part, pieces: undefined };
  if (part.includes("*")) return { kind: SegmentKind.Glob, literal: part, pieces: part.split(/\*+/) };
  return { kind: SegmentKind.Literal, literal: part, pieces: undefined };
}

/** Orders patterns most specific first (stable for ties: declaration order wins). */
export function compareSpecificity(a: OperationPattern, b: OperationPattern): number {
  const n = Math.min(a.ranks.length, b.ranks.length);
  for (let i = 0; i < n; i++) {
    const diff = (b.ranks[i] ?? 0) - (a.ranks[i] ?? 0);
    if (diff !== 0) return diff;
  }
  // Same shape up to the shorter one: a longer pattern is more specific unless its extra
  // segment is a "**" (which also matches nothing).
  if (a.ranks.length !== b.ranks.length) {
    const aExtra = a.ranks[n];
    const bExtra = b.ranks[n];
    if (aExtra !== undefined) return aExtra === SegmentKind.Rest ? 1 : -1;
    if (bExtra !== undefined) return bExtra === SegmentKind.Rest ? -1 : 1;
  }
  return b.literalChars - a.literalChars;
}

/**
 * Segment boundaries of a normalised path, reused between calls so that matching does not
 * allocate (decide() is synchronous, so one scratch buffer per policy is safe).
 */
export class PathSegments {
  private starts = new Int32Array(16);
  private ends = new Int32Array(16);
  count = 0;
  path = "/";

  load(path: string): void {
    this.path = path;
    this.count = 0;
    if (path.length <= 1) return;
    let start = 1;
    for (;;) {
      const slash = path.indexOf("/", start);
      const end = slash === -1 ? path.length : slash;
      this.push(start, end);
      if (slash === -1) return;
      start = slash + 1;
    }
  }

  private push(start: number, end: number): void {
    if (this.count === this.starts.length) {
      const starts = new Int32Array(this.count * 2);
      const ends = new Int32Array(this.count * 2);
      starts.set(this.starts);
      ends.set(this.ends);
      this.starts = starts;
      this.ends = ends;
    }
    this.starts[this.count] = start;
    this.ends[this.count] = end;
    this.count++;
  }

  start(i: number): number {
    return this.starts[i] ?? 0;
  }

  end(i: number): number {
    return this.ends[i] ?? 0;
  }
}

/**
 * Whether an operation also decides the paths below its name: one whose last segment is a literal
 * or an in-segment glob (`/admin`, `/files/*.pdf`), as in Dapr, whose trie answers with the first
 * node on the way down that holds an operation (dapr/dapr pkg/config/acl_trie.go Search: only a
 * bare `/*` met before the last segment is passed by). A last `*` or `**` does not: `*` matches
 * one segment, `**` already matches everything below.
 */
export function coversBelow(segments: readonly Segment[]): boolean {
  const last = segments[segments.length - 1];
  return last !== undefined && (last.kind === SegmentKind.Literal || last.kind === SegmentKind.Glob);
}

/**
 * How the paths below a covering operation's name rank and match (decide.ts rule 8): as the name
 * followed by `**`, under the operation's own name (its rule and reason). The name itself is
 * matched by the operation first (it ranks above: one segment fewer, and no `**`).
 */
export function belowPattern(pattern: OperationPattern): OperationPattern {
  const rest: Segment = { kind: SegmentKind.Rest, literal: "**", pieces: undefined };
  return { name: pattern.name, segments: [...pattern.segments, rest], ranks: [...pattern.ranks, SegmentKind.Rest], literalChars: pattern.literalChars };
}

/**
 * The name a trailing `/*` follows, lower case (`/a/*` → `/a`, `/*` → `/`), or undefined when the
 * last segment is not a bare `*`. Where that name is an operation of its own, it decides its own
 * path, not the `/*` (decide.ts rule 8): Dapr's trie (dapr/dapr pkg/config/acl_trie.go) holds
 * `/a/*` below the node of `/a`, and Search answers with `/a`'s node when the path ends there.
 */
export function barePrefixName(pattern: OperationPattern): string | undefined {
  const segments = pattern.segments;
  if (segments.length === 0 || segments[segments.length - 1]!.kind !== SegmentKind.Any) return undefined;
  return `/${segments.slice(0, -1).map((segment) => segment.literal).join("/")}`;
}

/** An operation's normalised name in lower case, as requests are matched (`/` for the root). */
export function lowerName(pattern: OperationPattern): string {
  return `/${pattern.segments.map((segment) => segment.literal).join("/")}`;
}

/** Lower-case names of operations (compiled), for barePrefixName lookups. */
export function operationNames(patterns: Iterable<OperationPattern>): Set<string> {
  const names = new Set<string>();
  for (const pattern of patterns) names.add(lowerName(pattern));
  return names;
}

/**
 * Whether the path lies strictly below the operation's name (`/admin/users` below `/admin`, not
 * `/admin` itself nor `/administrator`), for an operation that covers the paths below it
 * (coversBelow); dapr-differences.ts reads meshward's choice with it.
 */
export function matchesBelow(segments: readonly Segment[], path: PathSegments): boolean {
  const n = segments.length;
  if (n === 0 || path.count <= n || !coversBelow(segments)) return false;
  for (let i = 0; i < n; i++) if (!segmentMatchesAt(segments[i]!, path, i)) return false;
  return true;
}

function segmentMatchesAt(segment: Segment, path: PathSegments, i: number): boolean {
  const start = path.start(i);
  const end = path.end(i);
  if (segment.kind === SegmentKind.Any || segment.kind === SegmentKind.Rest) return true;
  if (segment.kind === SegmentKind.Literal) return end - start === segment.literal.length && path.path.startsWith(segment.literal, start);
  return matchesGlob(segment.pieces!, path.path, start, end);
}

/**
 * Whether the path matches the operation. `bare` false: a trailing `/*` does not match its bare
 * prefix (the prefix is an operation of its own, which decides there: shadowsBare).
 */
export function matchesOperation(segments: readonly Segment[], path: PathSegments, bare = true): boolean {
  const count = path.count;
  const text = path.path;
  const last = segments.length - 1;
  for (let i = 0; i <= last; i++) {
    const segment = segments[i]!;
    if (segment.kind === SegmentKind.Rest) return true;
    if (i >= count) {
      // Dapr: a trailing "/*" also matches the bare prefix ("/op3/a/*" matches "/op3/a").
      return bare && i === last && i === count && segment.kind === SegmentKind.Any;
    }
    const start = path.start(i);
    const end = path.end(i);
    if (segment.kind === SegmentKind.Any) continue;
    if (segment.kind === SegmentKind.Literal) {
      if (end - start !== segment.literal.length || !text.startsWith(segment.literal, start)) return false;
      continue;
    }
    if (!matchesGlob(segment.pieces!, text, start, end)) return false;
  }
  return segments.length === count;
}

/**
 * Whether text[start, end) (one path segment) matches a glob split on its "*"s. The first piece
 * must be a prefix and the last a suffix, not overlapping; each middle piece is taken at its
 * leftmost place after the one before, which leaves the most room for the rest and so is exact
 * for "*"-only globs. At most one scan per piece: a backtracking RegExp took cubic time in the
 * segment's length for `*-*-*.pdf` (minutes for one 16 KiB request, blocking the sidecar).
 */
export function matchesGlob(pieces: readonly string[], text: string, start: number, end: number): boolean {
  const first = pieces[0] ?? "";
  const last = pieces[pieces.length - 1] ?? "";
  let from = start + first.length;
  const to = end - last.length;
  if (from > to || !text.startsWith(first, start) || !text.startsWith(last, to)) return false;
  for (let i = 1; i < pieces.length - 1; i++) {
    const piece = pieces[i]!;
    const at = text.indexOf(piece, from);
    if (at === -1 || at + piece.length > to) return false;
    from = at + piece.length;
  }
  return true;
}
