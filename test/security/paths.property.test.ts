/**
 * Issue 14, Proof: property-based test over generated request targets (fast-check).
 * For every target sent by `orders` (allowed: GET /items/**) over mTLS to the inbound sidecar
 * in front of a node:http app, the sidecar either refuses it, or forwards a path P that
 *   - node:http's reading (url.parse, as Express/parseurl do), WHATWG URL (`new URL`) and
 *     Python's `urllib.parse.urlsplit` all read as the same P, unchanged (RFC 3986 §6: the
 *     sidecar forwards its normalised form, nothing left for an app to resolve differently);
 *   - and P is allowed by the policy iff it reached the app.
 * Upstream model: Envoy's normalize_path + merge_slashes + path_with_escaped_slashes_action
 * (envoyproxy/envoy source/common/http/path_utility.cc), RFC 3986 §6.2.2.
 */
import { parse as legacyParse } from "node:url";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AppRecord } from "./helpers/apps.ts";
import { byApp, bySidecar, h1Exchange, startSecurityMesh, underItems } from "./helpers/mesh.ts";
import type { MeshApp, SecurityMesh } from "./helpers/mesh.ts";
import { startUrllib } from "./helpers/urllib.ts";
import type { Urllib } from "./helpers/urllib.ts";

const SEGMENTS = [
  "items", "ITEMS", "admin", "1", "x", "..", ".", "%2e", "%2E%2E", ".%2e", "%2f", "%2F", "%5c", "%5C", "%00", "%0a",
  "\\", "..\\", ";", ";x=1", "..;", "", "é", "日本", "%E2%82%AC", "a%20b", "%41", "{x}", "`", "~a", "-_.", "%", "%zz", "+", "@", ":", "a:b",
];
const QUERIES = ["", "?q=1", "?next=../../admin", "?%2f", "?a=é", "?a=b&c=%00"];

const target = fc
  .tuple(
    fc.constantFrom("", "", "", "", "http://x"),
    fc.boolean(),
    fc.array(fc.constantFrom(...SEGMENTS), { minLength: 0, maxLength: 6 }),
    fc.constantFrom(...QUERIES),
  )
  .map(([origin, items, segs, query]) => `${origin}/${[...(items ? ["items"] : []), ...segs].join("/")}${query}`);

/** The path component of an origin-form target as it was received (no query). */
const pathOf = (u: string) => u.split("?")[0]!;

/**
 * Equivalence of two readings of a path, RFC 3986 §6.2.2.2: percent-encoding normalisation.
 * Escapes of bytes that change structure or meaning stay escapes (upper-cased): `/`, `\`, `%`,
 * `?`, `#`, `;`, space and controls; every other escape is decoded, and raw bytes compared as
 * UTF-8. So `{` and `%7B` are one path, while `%2e` vs `.` (dot segments) or `%2F` vs `/` are not.
 */
const KEEP_ESCAPED = new Set([0x2f, 0x5c, 0x25, 0x3f, 0x23, 0x3b, 0x2e]);
function canon(s: string): string {
  const bytes = Buffer.from(s, "utf8");
  let out = "";
  const esc = (v: number) => `%${v.toString(16).toUpperCase().padStart(2, "0")}`;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    const hex = b === 0x25 ? /^[0-9a-fA-F]{2}$/.exec(bytes.subarray(i + 1, i + 3).toString("latin1")) : null;
    if (hex) {
      const v = parseInt(hex[0], 16);
      out += KEEP_ESCAPED.has(v) || v <= 0x20 || v >= 0x7f ? (v >= 0x80 ? String.fromCharCode(v) : esc(v)) : String.fromCharCode(v);
      i += 2;
    } else {
      out += b <= 0x20 || b === 0x7f ? esc(b) : String.fromCharCode(b);
    }
  }
  return out;
}
/** An app reads the raw target bytes (node hands them over as latin1) as UTF-8. */
const asUtf8 = (latin1: string): string => {
  const text = Buffer.from(latin1, "latin1").toString("utf8");
  return text.includes("\uFFFD") ? latin1 : text;
};

/** WHATWG URL's path for a target, or a marker that it refuses it (`//:` is an authority with an empty host to it). */
const whatwgPath = (t: string): string => {
  try {
    return new URL(t, "http://x").pathname;
  } catch {
    return "(WHATWG URL refuses it)";
  }
};

/**
 * What the policy ("GET /items/**") allows, for a path every parser reads the same: under
 * /items, no escaped slash/backslash/NUL, and no dot segment once decoded.
 */
function allowed(p: string): boolean {
  if (!underItems(p) || /%2f|%5c|%00/i.test(p)) return false;
  let decoded: string;
  try {
    decoded = decodeURIComponent(p);
  } catch {
    decoded = p;
  }
  return !decoded.split("/").some((s) => s === "." || s === "..") && !decoded.includes("\\");
}

describe("property: every generated target is refused, or forwarded as one unambiguous allowed path", () => {
  let mesh: SecurityMesh;
  let node: MeshApp;
  let urllib: Urllib;
  beforeAll(async () => {
    mesh = await startSecurityMesh(["node:http"]);
    node = mesh.apps.get("node:http")!;
    urllib = startUrllib();
  }, 60_000);
  afterAll(async () => {
    await urllib?.close();
    await mesh?.close();
  });

  it("holds for 300 generated targets", async () => {
    const stats = { refused: 0, forwarded: 0 };
    await fc.assert(
      fc.asyncProperty(target, async (t) => {
        const before = node.app.records().length;
        const r = await h1Exchange(mesh, node, "inbound", Buffer.from(`GET ${t} HTTP/1.1\r\nHost: app.shop\r\n\r\n`, "utf8"), { quietMs: 0, timeoutMs: 3_000 });
        const records: AppRecord[] = node.app.records().slice(before);
        const answer = r.answers[0];
        if (answer === undefined || bySidecar(answer)) {
          // Refused (or the connection closed unanswered): nothing reached the app.
          stats.refused++;
          expect(records, `refused ${JSON.stringify(t)} but the app saw it`).toEqual([]);
          if (answer !== undefined) expect([400, 403, 405, 414, 501]).toContain(answer.status);
          if (answer?.status === 403) {
            // The policy denied it: then the target must not be an unambiguous allowed path.
            const p = pathOf(t);
            const py = await urllib.urlsplitPath(t);
            const whatwg = whatwgPath(t);
            const unambiguous = !t.startsWith("http") && [legacyParse(t).pathname ?? "", whatwg, py ?? ""].every((r) => canon(r) === canon(p));
            expect(unambiguous && allowed(p), `policy denied ${JSON.stringify(t)}, an unambiguous allowed path`).toBe(false);
          }
          return;
        }
        expect(byApp(answer), `answered ${answer.status} by neither the sidecar nor the app`).toBe(true);
        stats.forwarded++;
        expect(records, `one request at the app for ${JSON.stringify(t)}`).toHaveLength(1);
        const u = asUtf8(records[0]!.target!);
        const p = pathOf(u);
        const readings = {
          received: p,
          "node url.parse": legacyParse(u).pathname ?? "",
          "WHATWG URL": whatwgPath(u),
          "python urlsplit": (await urllib.urlsplitPath(u)) ?? "",
        };
        const canonical = Object.fromEntries(Object.entries(readings).map(([k, v]) => [k, canon(v)]));
        expect(canonical, `parsers disagree on what the app received for ${JSON.stringify(t)}: ${JSON.stringify(readings)}`).toEqual({ received: canon(p), "node url.parse": canon(p), "WHATWG URL": canon(p), "python urlsplit": canon(p) });
        expect(allowed(p), `the app received ${JSON.stringify(u)} for ${JSON.stringify(t)}: not under /items as every parser reads it`).toBe(true);
      }),
      { numRuns: 300, ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}) },
    );
    // The generator reaches both sides (a property that only ever refuses proves little).
    expect(stats.refused).toBeGreaterThan(0);
    expect(stats.forwarded).toBeGreaterThan(0);
  }, 120_000);
});
