/**
 * Issue 14, Proof: the differential suite. Every attack class, over HTTP/1.1 (raw bytes) and
 * HTTP/2 (ALPN h2 inbound, prior knowledge outbound), inbound and outbound, through the sidecar
 * to real app servers. From what each app itself parsed (and the bytes a tap saw on its socket):
 *   (a) the app saw only requests the policy allowed (GET under /items, as the app resolves it;
 *       on the h2c app also gRPC calls of the one method it allows, GRPC_METHOD);
 *   (b) each request framed once: the app saw as many requests as the sidecar answered from it;
 *   (c) no identity header but the sidecar's own XFCC, exactly once, in any spelling, also in
 *       trailers and in WSGI's HTTP_X_FORWARDED_CLIENT_CERT (PEP 3333); likewise exactly the
 *       sidecar's dapr-caller-app-id `orders`, dapr-caller-namespace `shop` and dapr-callee-app-id
 *       (its own app id), as Dapr's callee sidecar sets them (dapr/dapr
 *       pkg/messaging/grpc_proxy.go setLocalIdentityMetadata), never a forged value.
 * Refusals are checked as well: answered 400/403/405/501 by the sidecar and nothing reaches
 * the app. Run only some apps with SEC_APPS=node:http,gunicorn.
 */
import { afterAll, beforeAll, describe, it } from "vitest";
import type { ExpectStatic } from "vitest";
import { posix } from "node:path";
import { nodeRoute } from "./apps.ts";
import type { AppName, AppRecord } from "./apps.ts";
import { FORGED, GRPC_CASES, H1_CASES, H2_CASES } from "./cases.ts";
import type { Case, Transport } from "./cases.ts";
import { byApp, bySidecar, GRPC_METHOD, h1Exchange, h2Exchange, routeHeader, startSecurityMesh, underItems } from "./mesh.ts";
import type { Answer, MeshApp, SecurityMesh } from "./mesh.ts";
import { readWire } from "./wire.ts";
import type { WireReading } from "./wire.ts";

/** Statuses a refusal may have (issue 14: 400 for ambiguous input, 403 policy, 405/501 methods and codings, 431 limits, 505 versions). */
const REFUSAL = [400, 403, 405, 421, 431, 501, 505];
/**
 * A refusal by the sidecar: one of REFUSAL, or for a gRPC request a trailers-only answer with a
 * non-zero grpc-status (PERMISSION_DENIED for a denial: gRPC answers HTTP 200 whatever the outcome).
 */
const refusedBySidecar = (a: Answer): boolean => bySidecar(a) && (REFUSAL.includes(a.status) || (a.status === 200 && /^[1-9]\d*$/.test(String(a.headers["grpc-status"] ?? ""))));
const XFCC = "x-forwarded-client-cert";

interface Observed {
  answers: Answer[];
  /** The exchange failed on the client side (e.g. a stream reset without an answer). */
  error?: string;
  records: AppRecord[];
  tapBytes: Buffer;
  /** The tap's bytes read as an HTTP/1.1 request stream (HTTP/1 apps). */
  wire: WireReading;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let markerSeq = 0;

/** Sends a legitimate GET through the inbound sidecar and waits until the app has recorded it. */
async function marker(mesh: SecurityMesh, target: MeshApp): Promise<{ id: string; answer: Answer | undefined }> {
  const id = `__marker_${++markerSeq}`;
  const r = await h1Exchange(mesh, target, "inbound", Buffer.from(`GET /items/${id} HTTP/1.1\r\nHost: app.shop\r\n\r\n`), { quietMs: 0 });
  for (let i = 0; i < 60 && !target.app.records().some((rec) => rec.path.includes(id)); i++) await sleep(50);
  return { id, answer: r.answers[0] };
}

async function send(mesh: SecurityMesh, target: MeshApp, c: Case, transport: Transport): Promise<{ answers: Answer[]; error?: string }> {
  const direction = transport.endsWith("-in") ? "inbound" : "outbound";
  if (transport.startsWith("h1")) {
    const bytes = c.h1!(routeHeader(target, direction));
    // 100 ms of quiet after the answers expected: a second answer (a desync) follows the first on
    // loopback within a few ms; the marker below catches one on the app connection in any case.
    const r = await h1Exchange(mesh, target, direction, typeof bytes === "string" ? Buffer.from(bytes, "latin1") : bytes, { expect: c.h1Answers ?? 1, quietMs: 100, timeoutMs: 3_000 });
    return { answers: r.answers };
  }
  const r = await h2Exchange(mesh, target, direction, c.h2!, 3_000);
  return r.answer ? { answers: [r.answer] } : { answers: [], error: r.error ?? "no answer" };
}

/** Runs one case and collects what the app parsed and what its socket carried. */
async function observe(mesh: SecurityMesh, target: MeshApp, c: Case, transport: Transport): Promise<{ attack: Observed; marker?: Answer; markerId?: string; followUp?: { answer?: Answer; records: AppRecord[] } }> {
  const { app } = target;
  // Start from fresh app connections: a desync left by one case must not leak into the next.
  await app.tap.resetConnections();
  await sleep(20);
  const firstChunk = app.tap.chunks.length;
  const firstRecord = app.records().length;
  const sent = await send(mesh, target, c, transport);
  let markerResult: { id: string; answer: Answer | undefined } | undefined;
  if (app.speaks === "http1") markerResult = await marker(mesh, target);
  // Late requests (a body parsed as a second request) arrive right behind the first: on the
  // marker's connection they were recorded before it; on another app connection within ms.
  await sleep(app.speaks === "http1" ? 50 : 300);
  const all = app.records().slice(firstRecord);
  const records = all.filter((r) => !(markerResult && r.path.includes(markerResult.id)));
  const chunks = app.tap.chunks.slice(firstChunk);
  const markerAt = markerResult ? chunks.findIndex((ch) => ch.data.includes(markerResult!.id)) : -1;
  const attackChunks = markerAt < 0 ? chunks : chunks.slice(0, markerAt);
  const tapBytes = Buffer.concat(attackChunks.map((ch) => ch.data));
  const attack: Observed = { answers: sent.answers, ...(sent.error ? { error: sent.error } : {}), records, tapBytes, wire: readWire(attackChunks) };
  let followUp: { answer?: Answer; records: AppRecord[] } | undefined;
  if (c.followUp) {
    const before = app.records().length;
    const r = await h2Exchange(mesh, target, transport.endsWith("-in") ? "inbound" : "outbound", { method: "GET", path: c.followUp }, 3_000);
    await sleep(80);
    followUp = { ...(r.answer ? { answer: r.answer } : {}), records: app.records().slice(before) };
  }
  return { attack, ...(markerResult ? { markerId: markerResult.id, ...(markerResult.answer ? { marker: markerResult.answer } : {}) } : {}), ...(followUp ? { followUp } : {}) };
}

/** Header names normalised for case and '_'/'-' (how WSGI/CGI, and many frameworks, read them). */
/** A field name as the most liberal CGI-style server reads it (lighttpd: any non-alphanumeric character is '_'). */
const norm = (name: string) => name.toLowerCase().replace(/[^a-z0-9]/g, "-");

/** How Python's servers resolve a target: path before '?', percent-decoded, then posixpath.normpath. */
function pythonRoute(target: string): string {
  const path = target.split("?")[0]!;
  let decoded = path;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    /* kept as is */
  }
  return posix.normalize(decoded);
}

/**
 * How a server with a lenient UTF-8 decoder resolves a target (Tomcat before CVE-2008-2938, IIS,
 * some Java and .NET decoders): percent-decoded to bytes, every overlong form of an ASCII
 * character read as that character, then dot segments removed.
 */
function lenientRoute(target: string): string {
  const bytes = Buffer.from(target.split("?")[0]!.replace(/%([0-9a-f]{2})/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))), "latin1");
  let out = "";
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    // The sequence's length from its lead byte, and its value from the payload bits, unchecked.
    const length = b >= 0xf0 && b <= 0xf7 ? 4 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xc0 && b <= 0xdf ? 2 : 1;
    const tail = bytes.subarray(i + 1, i + length);
    if (length === 1 || tail.length < length - 1 || tail.some((t) => (t & 0xc0) !== 0x80)) {
      out += String.fromCharCode(b);
      continue;
    }
    let value = b & (0x7f >> length);
    for (const t of tail) value = (value << 6) | (t & 0x3f);
    out += value < 0x80 ? String.fromCharCode(value) : String.fromCharCode(...bytes.subarray(i, i + length));
    i += length - 1;
  }
  return posix.normalize(out);
}

function describeRecord(r: AppRecord): string {
  return `${r.method} ${r.target ?? r.path} (route ${r.route}, body ${r.bodyBytes})`;
}

function checkInvariants(expect: ExpectStatic, target: MeshApp, c: Case, o: Observed): void {
  const seen = o.records.map(describeRecord);
  // (a) only what the policy allows, as the app itself resolved it.
  for (const r of o.records) {
    // The one gRPC method the policy allows (GRPC_METHOD): a gRPC POST to exactly that method.
    if (c.grpc && r.method === "POST" && r.route === GRPC_METHOD) {
      expect.soft(r.headers.filter((h) => norm(h[0]!) === "content-type").map((h) => h[1]), `(a) the app saw ${describeRecord(r)} without the gRPC content-type`).toEqual(["application/grpc"]);
      continue;
    }
    expect.soft(r.method, `(a) the app saw a non-GET request: ${describeRecord(r)}`).toBe("GET");
    expect.soft(underItems(r.route), `(a) the app resolved a path outside /items: ${describeRecord(r)}`).toBe(true);
  }
  // (b) framed once: as many requests at the app as answers the app gave through the sidecar.
  expect.soft(o.records.length, `(b) requests the app parsed [${seen.join(" | ")}] vs app answers relayed (${o.answers.filter(byApp).length})`).toBe(o.answers.filter(byApp).length);
  // (c) identity: exactly one XFCC, the sidecar's, in every spelling; none in trailers.
  for (const r of o.records) {
    const xfcc = r.headers.filter((h) => norm(h[0]!) === XFCC);
    expect.soft(xfcc.map((h) => h[1]), `(c) XFCC values the app read for ${describeRecord(r)}`).toEqual([target.xfcc]);
    const wsgiKey = r.headers.filter((h) => h[2] === "HTTP_X_FORWARDED_CLIENT_CERT");
    if (r.headers.some((h) => h.length === 3)) expect.soft(wsgiKey.map((h) => h[1]), "(c) WSGI environ HTTP_X_FORWARDED_CLIENT_CERT").toEqual([target.xfcc]);
    // RFC 9112 §3.2: one Host; WSGI would merge two into "a,b".
    const hosts = r.headers.filter((h) => norm(h[0]!) === "host");
    expect.soft(hosts.length <= 1 && !hosts.some((h) => h[1]!.includes(",")), `(c) Host headers the app read: ${JSON.stringify(hosts)}`).toBe(true);
    expect.soft((r.trailers ?? []).filter((h) => norm(h[0]!) === XFCC), `(c) XFCC in the trailers the app read`).toEqual([]);
    for (const [name, value] of Object.entries(target.dapr)) {
      expect.soft(r.headers.filter((h) => norm(h[0]!) === name).map((h) => h[1]), `(c) ${name} values the app read for ${describeRecord(r)}`).toEqual([value]);
      const environKey = `HTTP_${name.toUpperCase().replaceAll("-", "_")}`;
      if (r.headers.some((h) => h.length === 3)) expect.soft(r.headers.filter((h) => h[2] === environKey).map((h) => h[1]), `(c) WSGI environ ${environKey}`).toEqual([value]);
      expect.soft((r.trailers ?? []).filter((h) => norm(h[0]!) === name), `(c) ${name} in the trailers the app read`).toEqual([]);
    }
    expect.soft(JSON.stringify(r).includes(FORGED), `(c) the forged identity reached the app in ${describeRecord(r)}`).toBe(false);
  }
  if (target.app.speaks === "http1") {
    // The same three checks on the wire: what any HTTP/1.1 app on that socket would parse.
    const wire = o.wire.requests.map((w) => `${w.method} ${w.target} (body ${w.bodyBytes})`);
    expect.soft(o.wire.unparsed.map((u) => u.text), "(b) bytes on the app's socket that are no HTTP/1.1 request").toEqual([]);
    expect.soft(o.wire.requests.length, `(b) requests on the app's socket [${wire.join(" | ")}] vs app answers relayed (${o.answers.filter(byApp).length})`).toBe(o.answers.filter(byApp).length);
    for (const w of o.wire.requests) {
      expect.soft(w.method, `(a) a non-GET request on the app's socket: ${w.method} ${w.target}`).toBe("GET");
      expect.soft(underItems(nodeRoute(w.target)) && underItems(pythonRoute(w.target)) && underItems(lenientRoute(w.target)), `(a) a request outside /items on the app's socket: ${w.target} (WHATWG ${nodeRoute(w.target)}, Python ${pythonRoute(w.target)}, lenient UTF-8 ${lenientRoute(w.target)})`).toBe(true);
      expect.soft(w.fields.filter(([n]) => norm(n) === XFCC).map(([, v]) => v), `(c) XFCC fields on the app's socket for ${w.method} ${w.target}`).toEqual([target.xfcc]);
      for (const [name, value] of Object.entries(target.dapr)) expect.soft(w.fields.filter(([n]) => norm(n) === name).map(([, v]) => v), `(c) ${name} fields on the app's socket for ${w.method} ${w.target}`).toEqual([value]);
    }
  }
  if (c.identity) expect.soft(o.tapBytes.toString("latin1").includes(FORGED), "(c) the forged identity was written on the app's socket").toBe(false);
}

function checkExpectation(expect: ExpectStatic, c: Case, o: Observed): void {
  const first = o.answers[0];
  const seen = o.records.map(describeRecord);
  if (c.expect === "allowed") {
    expect(first, `no answer (${o.error ?? ""})`).toBeDefined();
    expect(first!.status, first!.body).toBe(200);
    expect(byApp(first!)).toBe(true);
    expect(o.records).toHaveLength(1);
    expect(o.records[0]!.route).toBe(c.allowedRoute ?? "/items/1");
    return;
  }
  if (c.expect === "refused") {
    if (first !== undefined) {
      expect.soft(refusedBySidecar(first), `answered ${first.status} by ${first.headers["x-app"] ?? (bySidecar(first) ? "the sidecar" : "?")} (${first.body.slice(0, 160)}); wanted a sidecar refusal ${REFUSAL.join("/")}`).toBe(true);
    }
    const attackRecords = o.records.filter((r) => !(c.legit?.(r) ?? false));
    expect.soft(attackRecords.map(describeRecord), "a refused request reached the app").toEqual([]);
    if (c.tapMustNotMatch) expect.soft(c.tapMustNotMatch.test(o.tapBytes.toString("latin1")), `the refused request was written on the app's socket: ${JSON.stringify(o.tapBytes.toString("latin1").slice(0, 300))}`).toBe(false);
    if (c.legit === undefined) expect.soft(o.tapBytes.length, `a refused request wrote bytes on the app's socket: ${JSON.stringify(o.tapBytes.toString("latin1").slice(0, 200))}`).toBe(0);
    return;
  }
  // either: a sidecar answer is a refusal; an app answer is 200 (recorded, checked by the invariants).
  if (c.tapMustNotMatch) expect.soft(c.tapMustNotMatch.test(o.tapBytes.toString("latin1")), `bytes the sidecar must not write were on the app's socket: ${JSON.stringify(o.tapBytes.toString("latin1").slice(0, 300))}`).toBe(false);
  if (first !== undefined && !byApp(first)) {
    expect.soft(refusedBySidecar(first), `answered ${first.status} (${first.body.slice(0, 160)}): neither a sidecar refusal nor the app; app saw [${seen.join(" | ")}]`).toBe(true);
  }
}

/**
 * Meshes each file starts: its cases run this many at a time, each on a mesh of its own (its own
 * CA, sidecars and app process), so one case's traffic never reaches another's app. Most of a
 * case is waiting (the quiet windows that catch a second answer or a late request); one at a time,
 * the seven files held four test workers for ~70 s each while using ~0.2 of a core.
 * SEC_MESHES=1 runs the cases one after another.
 */
const MESHES = Math.max(1, Math.floor(Number(process.env.SEC_MESHES ?? 3)) || 1);

/** Lends each case a mesh no other case is using. */
class MeshPool {
  readonly #free: SecurityMesh[];
  readonly #waiting: ((mesh: SecurityMesh) => void)[] = [];
  constructor(meshes: SecurityMesh[]) {
    this.#free = [...meshes];
  }
  async use<T>(run: (mesh: SecurityMesh) => Promise<T>): Promise<T> {
    const mesh = this.#free.pop() ?? (await new Promise<SecurityMesh>((resolve) => this.#waiting.push(resolve)));
    try {
      return await run(mesh);
    } finally {
      const next = this.#waiting.shift();
      if (next) next(mesh);
      else this.#free.push(mesh);
    }
  }
}

/**
 * The suite against one app (one test file per app, so that the two test workers share them).
 * SEC_APPS=node:http,gunicorn limits a run to those apps (for development: by default every file
 * runs its app).
 */
export function differentialSuite(name: AppName): void {
  if (process.env.SEC_APPS !== undefined && !process.env.SEC_APPS.split(",").includes(name)) return;
  describe.concurrent(`differential: ${name} behind the inbound sidecar`, () => {
    const meshes: SecurityMesh[] = [];
    let pool: MeshPool;
    beforeAll(async () => {
      // One after another: each start is mostly CPU (keys, processes), and two cores are shared.
      for (let i = 0; i < MESHES; i++) meshes.push(await startSecurityMesh([name]));
      pool = new MeshPool(meshes);
    }, 120_000);
    afterAll(async () => {
      await Promise.all(meshes.map((mesh) => mesh.close()));
    });

    const cases: [Case, Transport][] =
      (name === "node:http2"
        ? GRPC_CASES.flatMap((c) => [[c, "h2-in"], [c, "h2-out"]] as [Case, Transport][])
        : [...H1_CASES.filter((c) => !(c.skipApps ?? []).includes(name)).flatMap((c) => [[c, "h1-in"], [c, "h1-out"]] as [Case, Transport][]), ...H2_CASES.flatMap((c) => [[c, "h2-in"], [c, "h2-out"]] as [Case, Transport][])]
      ).filter(([c, t]) => c.direction === undefined || t.endsWith(c.direction === "inbound" ? "-in" : "-out"));

    // Concurrent tests assert with their own `expect` (the global one cannot tell them apart).
    for (const [c, t] of cases) it(`${t} ${c.id} (${c.expect})`, async ({ expect }) => {
      await pool.use(async (mesh) => {
        const target = mesh.apps.get(name)!;
        const result = await observe(mesh, target, c, t);
        if (process.env.SEC_DEBUG) console.log(JSON.stringify({ case: c.id, t, answers: result.attack.answers, error: result.attack.error, records: result.attack.records.map(describeRecord), tap: result.attack.tapBytes.toString("latin1"), followUp: result.followUp }, null, 1));
        checkExpectation(expect, c, result.attack);
        checkInvariants(expect, target, c, result.attack);
        if (result.marker !== undefined || result.markerId !== undefined) {
          // The next legitimate request on the app connection gets its own answer (no response desync).
          expect.soft(result.marker?.status, "the legitimate request after the attack was not answered 200").toBe(200);
          expect.soft(result.marker?.body ?? "", "the legitimate request after the attack got another request's answer").toContain(result.markerId);
        }
        if (result.followUp) {
          expect.soft(result.followUp.answer?.status, "the follow-up GET after the attack").toBe(200);
          expect.soft(result.followUp.records.map(describeRecord), "the follow-up GET reached the app as itself").toEqual([`GET ${c.followUp} (route ${c.followUp}, body 0)`]);
        }
      });
    });
  });
}
