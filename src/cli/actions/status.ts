// What `meshward status` does; what it accepts (its flags, its help) is ../status.ts.
import type { OptionValues } from "commander";
import { describeError, fileReadError, MeshwardError } from "../../errors.ts";
import { fetchFromCa } from "../../identity/ca-client.ts";
import { certificatesFromPem, toPem } from "../../pki/pem.ts";
import { inspectCertificate } from "../../pki/inspect.ts";
import { parseSpiffeId } from "../../spiffe/id.ts";
import { tlsAfterHandshakeFailure } from "../../tls/after-handshake.ts";
import { escapeControlCharacters } from "../../util/control-characters.ts";
import { describeTimeLeft, formatCertificateTime } from "../../util/duration.ts";
import { assertPrivateFile } from "../../util/files.ts";
import { INPUT_LIMITS, readInputText } from "../../util/read-input.ts";
import { readBundleFile } from "../../identity/bundle-file.ts";

interface Row {
  readonly component: string;
  readonly name: string;
  readonly identity: string;
  readonly expires: string | null;
  readonly timeLeft: string;
  readonly healthy: boolean;
  readonly health: string;
  readonly lastRotation: string;
}

interface FeedIdentity {
  spiffeId: string;
  serial: string;
  notAfter: string;
  kind: string;
}

interface Feed {
  component: string;
  name: string;
  identities: FeedIdentity[];
  rotations: { time: string; kind: string; result: string }[];
  health: { ok: boolean; checks: Record<string, { ok: boolean; detail?: unknown }> };
  /** A CA keeping Dapr's dapr-trust-bundle ConfigMap (src/dashboard/feed.ts DaprTrustBundleStatus). */
  daprTrustBundle?: { state?: unknown; namespace?: unknown; failures?: unknown; lastSuccessAt?: unknown; lastError?: { code?: unknown; status?: unknown; reason?: unknown } };
}

/** `meshward status`: one table for the CA and the status endpoints named. */
export async function runStatus(opts: OptionValues): Promise<void> {
  if (opts.statusToken !== undefined) {
    throw new MeshwardError(
      "E_USAGE",
      "--status-token puts the token in the process list, where every local user can read it (ps, /proc/PID/cmdline): give it with --status-token-file FILE or MESHWARD_STATUS_TOKEN",
    );
  }
  if (opts.ca === undefined && opts.statusUrl === undefined) {
    throw new MeshwardError("E_USAGE", "name at least one thing to look at: --ca ADDR --bundle FILE and/or --status-url URL");
  }
  const rows: Row[] = [];
  const now = new Date();
  if (opts.ca !== undefined) rows.push(...(await caRows(opts.ca, opts.bundle, now)));
  const token = statusToken(opts.statusTokenFile);
  for (const url of (opts.statusUrl as string[] | undefined) ?? []) rows.push(...(await feedRows(url, token, now)));
  if (opts.json) process.stdout.write(`${jsonForTerminal(rows)}\n`);
  else process.stdout.write(renderTable(rows));
  if (rows.some((r) => !r.healthy)) process.exitCode = 1;
}

/** The bearer token for status endpoints: --status-token-file, else MESHWARD_STATUS_TOKEN, else none. */
function statusToken(file: string | undefined): string | undefined {
  if (file === undefined) return process.env.MESHWARD_STATUS_TOKEN || undefined;
  let token: string;
  try {
    token = readInputText(file, { what: "status token file", maxBytes: INPUT_LIMITS.secret }).trim();
  } catch (error) {
    if (error instanceof MeshwardError) throw error;
    throw fileReadError(`cannot read status token file ${file}`, error);
  }
  // It opens the status endpoints: held to the key files' rule, as the servers hold theirs.
  assertPrivateFile(file, "status token file");
  if (token === "") throw new MeshwardError("E_USAGE", `the status token file ${file} is empty`);
  return token;
}

async function caRows(address: string, bundleFile: string | undefined, now: Date): Promise<Row[]> {
  if (bundleFile === undefined) throw new MeshwardError("E_USAGE", "--ca needs --bundle to verify the CA");
  const bundlePem = readBundleFile(bundleFile);
  const root = certificatesFromPem(bundlePem).map((der) => inspectCertificate(der)).find((c) => c.uris.some((u) => u.startsWith("spiffe://")));
  const trustDomain = root ? parseSpiffeId(root.uris.find((u) => u.startsWith("spiffe://")) as string).trustDomain : undefined;
  if (trustDomain === undefined) throw new MeshwardError("E_USAGE", `no root in ${bundleFile} names a trust domain`);
  const connection = { address, bundlePem, trustDomain, timeoutMs: 5000 };
  try {
    const ready = await readiness(connection);
    const roots = certificatesFromPem((await fetchFromCa(connection, "/v1/bundle")).toString("utf8")).map((der) => inspectCertificate(toPem(der, "CERTIFICATE")));
    const issuerCheck = ready.checks.issuer?.detail ?? "";
    const health = Object.entries(ready.checks).filter(([, c]) => !c.ok || (c.detail && /expire/.test(String(c.detail)) && !/no anchor/.test(String(c.detail)))).map(([k, c]) => `${k}: ${c.detail}`).join("; ");
    return [
      ...roots.map((r) => ({
        component: "ca",
        name: trustDomain,
        identity: `root ${r.fingerprint256.slice(0, 23)}…`,
        expires: formatCertificateTime(r.notAfter),
        timeLeft: describeTimeLeft(r.notAfter, now),
        healthy: r.notAfter > now,
        health: r.notAfter > now ? "trusted" : "expired",
        lastRotation: "",
      })),
      { component: "ca", name: trustDomain, identity: `issuer (${issuerCheck})`, expires: null, timeLeft: "", healthy: ready.status === "ready", health: health || ready.status, lastRotation: "" },
    ];
  } catch (error) {
    return [{ component: "ca", name: address, identity: "", expires: null, timeLeft: "", healthy: false, health: `unreachable: ${describeError(error)}`, lastRotation: "" }];
  }
}

/** /readyz answers 503 with the failing checks when the CA is not ready. */
async function readiness(connection: Parameters<typeof fetchFromCa>[0]): Promise<{ status: string; checks: Record<string, { ok: boolean; detail: string }> }> {
  try {
    return JSON.parse((await fetchFromCa(connection, "/readyz")).toString("utf8")) as { status: string; checks: Record<string, { ok: boolean; detail: string }> };
  } catch (error) {
    if (error instanceof MeshwardError && error.code === "E_CA_ERROR" && error.message.includes("503")) return { status: "not-ready", checks: {} };
    throw error;
  }
}

async function feedRows(url: string, token: string | undefined, now: Date): Promise<Row[]> {
  // undici is loaded here, outside the try (a failure to load it is no unreachable endpoint):
  // `status --ca` alone, over HTTP/2, does not pay for it.
  const { undiciFetch, renegotiationRefusingAgent } = await import("../../tls/undici-agent.ts");
  let feed: Feed;
  try {
    // An https:// status URL is trusted through Node's default store (NODE_EXTRA_CA_CERTS adds
    // to it) and, like every meshward TLS client, refuses a server-initiated renegotiation.
    const response = await undiciFetch(new URL("/status.json", url), {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(5000),
      dispatcher: renegotiationRefusingAgent(),
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    feed = (await response.json()) as Feed;
  } catch (error) {
    return [{ component: "?", name: url, identity: "", expires: null, timeLeft: "", healthy: false, health: `unreachable: ${describeFetchError(error)}`, lastRotation: "" }];
  }
  const problem = feedProblem(feed);
  if (problem !== undefined) {
    return [{ component: "?", name: url, identity: "", expires: null, timeLeft: "", healthy: false, health: `not a meshward status feed: ${problem} (is the URL a meshward status port?)`, lastRotation: "" }];
  }
  const last = feed.rotations[0];
  const lastRotation = last ? `${last.kind} ${last.result} ${describeTimeLeft(new Date(last.time), now).replace(/^expired (.*) ago$/, "$1 ago")}` : "none since start";
  const failing = Object.entries(feed.health.checks).filter(([, c]) => !c.ok).map(([k, c]) => `${k}: ${String(c.detail ?? "failing")}`);
  // Said beside the health, never in it: a failing dapr-trust-bundle sync does not make the CA unhealthy (nor the exit code 1).
  const dapr = daprTrustBundleNote(feed);
  const withDapr = (health: string) => (dapr === undefined ? health : `${health}; ${dapr}`);
  const workloads = feed.identities.filter((i) => i.kind === "workload");
  if (workloads.length === 0) {
    return [{ component: feed.component, name: feed.name, identity: "(none)", expires: null, timeLeft: "", healthy: false, health: withDapr(failing.join("; ") || "no identity"), lastRotation }];
  }
  return workloads.map((i) => {
    const notAfter = new Date(i.notAfter);
    const healthy = feed.health.ok && notAfter > now;
    return { component: feed.component, name: feed.name, identity: i.spiffeId, expires: formatCertificateTime(notAfter), timeLeft: describeTimeLeft(notAfter, now), healthy, health: withDapr(healthy ? "healthy" : failing.join("; ") || "expired"), lastRotation };
  });
}

/** What makes a /status.json answer unreadable as a meshward feed (another server's JSON), else undefined. */
function feedProblem(value: unknown): string | undefined {
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
  if (!isObject(value)) return "its /status.json is not a JSON object";
  if (typeof value.component !== "string" || typeof value.name !== "string") return "no component or name";
  if (!Array.isArray(value.rotations) || !value.rotations.every((r) => isObject(r) && typeof r.time === "string" && typeof r.kind === "string" && typeof r.result === "string")) return "no rotations list";
  if (!isObject(value.health) || typeof value.health.ok !== "boolean" || !isObject(value.health.checks) || !Object.values(value.health.checks).every((c) => isObject(c) && typeof c.ok === "boolean")) return "no health";
  if (!Array.isArray(value.identities) || !value.identities.every((i) => isObject(i) && typeof i.spiffeId === "string" && typeof i.notAfter === "string" && typeof i.kind === "string")) return "no identities list";
  return undefined;
}

/** "dapr-trust-bundle failing: E_… HTTP 403 Forbidden (3 in a row, last success …)" while a CA's sync fails, else undefined. */
function daprTrustBundleNote(feed: Feed): string | undefined {
  const dapr = feed.daprTrustBundle;
  if (dapr === undefined || dapr === null || typeof dapr !== "object" || dapr.state !== "failing") return undefined;
  const error = dapr.lastError ?? {};
  const what = [error.code, typeof error.status === "number" ? `HTTP ${error.status}` : undefined, error.reason].filter((part) => typeof part === "string" && part !== "").join(" ");
  const success = typeof dapr.lastSuccessAt === "string" ? `last success ${dapr.lastSuccessAt}` : "never in step since start";
  return `dapr-trust-bundle failing${typeof dapr.namespace === "string" ? ` in ${dapr.namespace}` : ""}: ${what || "error"} (${typeof dapr.failures === "number" ? `${dapr.failures} in a row, ` : ""}${success})`;
}

/** fetch says only "fetch failed": the reason is its cause (ECONNREFUSED, a certificate, a TLS alert). */
function describeFetchError(error: unknown): string {
  const named = tlsAfterHandshakeFailure(error);
  if (named !== undefined) return named;
  const cause = (error as { cause?: unknown }).cause;
  if (error instanceof TypeError && cause instanceof Error) return `${error.message}: ${cause.message}`;
  return describeError(error);
}

/**
 * JSON.stringify escapes C0 controls but writes DEL, the C1 controls (U+0080-U+009F, of which
 * U+009B is a one-character CSI), U+2028/2029 and the bidi controls (which reorder what follows
 * on screen) as they are. They can only occur inside JSON strings, where \uXXXX is the same value:
 * escaped, so `--json` on a terminal is as safe as the table.
 */
function jsonForTerminal(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(/[\u007f-\u009f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function renderTable(rows: readonly Row[]): string {
  const header = ["COMPONENT", "NAME", "IDENTITY", "EXPIRES", "HEALTH", "LAST ROTATION"];
  // Every cell may hold what a status endpoint or the CA sent (names, SPIFFE IDs, health details,
  // error messages): control characters are printed as visible escapes, never to the terminal
  // as they came (ESC sequences could overprint a failing row, set the title, or write the
  // clipboard with OSC 52), nor bidi controls that reorder the row. --json: see jsonForTerminal.
  const cells = rows.map((r) => [r.component, r.name, r.identity, r.expires ? `${r.timeLeft}` : "", r.health, r.lastRotation].map((cell) => escapeControlCharacters(String(cell ?? ""))));
  const widths = header.map((h, i) => Math.min(70, Math.max(h.length, ...cells.map((c) => (c[i] ?? "").length))));
  const line = (values: readonly string[]) => values.map((v, i) => v.padEnd(widths[i] as number)).join("  ").trimEnd();
  return `${[line(header), ...cells.map(line)].join("\n")}\n`;
}
