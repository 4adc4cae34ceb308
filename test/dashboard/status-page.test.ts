import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createStatusRecorder, emptyMinuteSeries, type DaprTrustBundleStatus, type IdentityStatus, type StatusSnapshot } from "../../src/dashboard/feed.ts";
import { createStatusRoutes } from "../../src/dashboard/routes.ts";
import { createOpsServer, type OpsServer } from "../../src/telemetry/health.ts";

// Real Chromium (Debian's /usr/bin/chromium) driven by playwright-core against a real
// createOpsServer on 127.0.0.1:0. The provider is an in-test object because the point is to
// change the identity at will ("rotate") and watch the page follow without a reload.
// rebind.meshward.test stands for an attacker's name whose DNS was rebound to 127.0.0.1.
const REBOUND = "rebind.meshward.test";
const CHROMIUM_ARGS = [`--host-resolver-rules=MAP ${REBOUND} 127.0.0.1`, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const ARTIFACTS = new URL("../../test-artifacts/", import.meta.url).pathname;
const HOUR = 3_600_000;
const TOKEN = "s3cret-status-token-0123456789";

const servers: OpsServer[] = [];
let context: BrowserContext;
let userDataDir: string;
let baseUrl: string;
let guardedUrl: string;

const recorder = createStatusRecorder();
const started = Date.now();
let identity: IdentityStatus = {
  spiffeId: "spiffe://prod.example.com/ns/shop/orders",
  serial: "6f1c0e2a9b7d4c3e8a5f0b1d2c3e4f50",
  notBefore: new Date(started - 13 * HOUR),
  notAfter: new Date(started + 11 * HOUR),
  kind: "workload",
};
let failFeed = false;
let hostile: string | undefined;
/** A CA's dapr-trust-bundle sync state (src/ca/dapr-trust-bundle-sync.ts), when set. */
let dapr: DaprTrustBundleStatus | undefined;

function snapshot(): StatusSnapshot {
  if (failFeed) throw new Error("identity source closed");
  const now = new Date();
  return {
    component: "sidecar",
    name: hostile ?? "orders",
    generatedAt: now,
    identities: [
      identity,
      ...(hostile !== undefined ? [{ ...identity, spiffeId: hostile, serial: "01" }] : []),
    ],
    roots: [
      {
        subject: "O=meshward, CN=meshward root prod.example.com",
        fingerprint: "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89",
        notAfter: new Date(started + 3_600 * HOUR),
      },
    ],
    rotations: recorder.rotations(),
    handshakeFailures: recorder.handshakeFailures(now),
    denials: recorder.denials(now),
    refusals: recorder.refusals(),
    health: { ok: true, checks: { identity: { ok: true, detail: `valid until ${identity.notAfter.toISOString()}` }, ca: { ok: true, detail: "127.0.0.1:8443 answered 1.2 ms ago" } } },
    ...(dapr !== undefined ? { daprTrustBundle: dapr } : {}),
  };
}

async function serve(token?: string): Promise<string> {
  const { routes } = createStatusRoutes(snapshot, token === undefined ? {} : { token });
  const server = createOpsServer({ host: "127.0.0.1", port: 0, extraRoutes: routes });
  servers.push(server);
  return (await server.start()).url;
}

async function openPage(url: string): Promise<Page> {
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  await page.goto(url);
  return page;
}

beforeAll(async () => {
  // a readable history for the screenshot: failures and denials spread over the last hour
  for (let minute = 0; minute < 60; minute += 1) {
    const at = new Date(started - minute * 60_000);
    for (let i = 0; i < (minute * 7) % 5; i++) recorder.recordHandshakeFailure({ reason: i % 3 === 0 ? "unknown_ca" : "no_certificate", time: at });
    for (let i = 0; i < (minute * 3) % 4; i++) recorder.recordDenial({ rule: "default-deny", time: at });
  }
  recorder.recordRotation({ kind: "workload", result: "ok", serial: "3a0f9c1d2e4b5a6978c0d1e2f3a4b5c6", time: new Date(started - 25 * HOUR) });
  recorder.recordRotation({ kind: "workload", result: "error", error: "E_CA_UNAVAILABLE", time: new Date(started - 13.2 * HOUR) });
  recorder.recordRotation({ kind: "workload", result: "ok", serial: identity.serial, time: new Date(started - 13 * HOUR) });
  recorder.recordRefusal({ peer: "10.0.3.7:52114", reason: "unknown_ca", time: new Date(started - 4 * 60_000) });
  recorder.recordRefusal({ peer: "10.0.3.9:40022", reason: "E_SPIFFE_MISMATCH", spiffeId: "spiffe://prod.example.com/ns/shop/cart", time: new Date(started - 60_000) });

  baseUrl = await serve();
  guardedUrl = await serve(TOKEN);
  userDataDir = mkdtempSync(join(tmpdir(), "meshward-chromium-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 1000 },
  });
});

afterAll(async () => {
  await context?.close().catch(() => undefined);
  await Promise.all(servers.splice(0).map((s) => s.close()));
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
});

describe("status page in Chromium", () => {
  it("loads and shows the live SPIFFE ID, serial and expiry; updates after a rotation without a reload; screenshot", async () => {
    const page = await openPage(`${baseUrl}/`);
    const firstRow = page.locator("#identities tbody tr").first();
    await expect.poll(() => firstRow.locator(".spiffe-id").textContent()).toBe(identity.spiffeId);
    expect(await firstRow.locator(".serial").textContent()).toBe(identity.serial);
    expect(await firstRow.locator(".expires").textContent()).toBe(identity.notAfter.toISOString());
    expect(await page.locator("#health").textContent()).toBe("healthy");
    expect(await page.locator("#refusals tbody").textContent()).toContain("E_SPIFFE_MISMATCH");
    expect(await page.locator("#chart-failures rect.bar").count()).toBeGreaterThan(10);

    // no navigation may happen between here and the new serial showing up
    await page.evaluate(() => ((globalThis as unknown as { notReloaded: boolean }).notReloaded = true));
    const rotatedAt = new Date();
    identity = { ...identity, serial: "c0ffee00112233445566778899aabbcc", notBefore: new Date(rotatedAt.getTime() - 15 * 60_000), notAfter: new Date(rotatedAt.getTime() + 24 * HOUR) };
    recorder.recordRotation({ kind: "workload", result: "ok", serial: identity.serial, time: rotatedAt });

    await page.locator('#identities td.serial[data-serial="c0ffee00112233445566778899aabbcc"]').waitFor();
    expect(await firstRow.locator(".expires").textContent()).toBe(identity.notAfter.toISOString());
    expect(await page.locator("#rotations tbody tr").first().textContent()).toContain("c0ffee00112233445566778899aabbcc");
    expect(await page.evaluate(() => (globalThis as unknown as { notReloaded?: boolean }).notReloaded)).toBe(true);

    await page.locator('body[data-state="ready"]').waitFor();
    mkdirSync(ARTIFACTS, { recursive: true });
    const file = join(ARTIFACTS, "status-page.png");
    await page.screenshot({ path: file, fullPage: true });
    expect(statSync(file).size).toBeGreaterThan(10_000);
    await page.close();
  });

  it("shows durations as a person reads them (59 min 59 s, not 3599871 ms or a rounded 60 min); the raw ms stay in data-ms", async () => {
    const at = new Date();
    const expiring: IdentityStatus = { ...identity, notBefore: new Date(at.getTime() - 15 * 60_000), notAfter: new Date(at.getTime() + 3_599_871) };
    const rootLeft = 364 * 24 * HOUR + 23 * HOUR + 59 * 60_000 + 999;
    const fixed = (): StatusSnapshot => ({ ...snapshot(), generatedAt: at, identities: [expiring], roots: [{ subject: "O=meshward, CN=root", fingerprint: "AB:CD", notAfter: new Date(at.getTime() + rootLeft) }] });
    const { routes } = createStatusRoutes(fixed, {});
    const server = createOpsServer({ host: "127.0.0.1", port: 0, extraRoutes: routes });
    servers.push(server);
    const page = await openPage(`${(await server.start()).url}/`);
    const left = page.locator("#identities td.time-left").first();
    await expect.poll(() => left.textContent()).toBe("59 min 59 s");
    expect(await left.getAttribute("data-ms")).toBe("3599871");
    expect(await page.locator("#roots td.time-left").first().textContent()).toBe("364 days 23 h");
    expect(await page.locator("#roots td.time-left").first().getAttribute("data-ms")).toBe(String(rootLeft));
    expect(await page.locator("#timeline text.life-info").first().textContent()).toMatch(/^59 min 59 s left of 1 h 14 min /);
    for (const table of ["#identities", "#roots"]) expect(await page.locator(table).innerText()).not.toMatch(/\d\s*ms\b/);
    await page.close();
  });

  it("renders the first state into the page: it shows the identity even when status.json never answers", async () => {
    const html = await (await fetch(`${baseUrl}/`)).text();
    const embedded = /<script id="initial-state" type="application\/json">([^<]*)<\/script>/.exec(html)?.[1];
    expect(JSON.parse(embedded ?? "null")).toMatchObject({ component: "sidecar", identities: [{ spiffeId: identity.spiffeId }] });

    const page = await context.newPage();
    page.setDefaultTimeout(15_000);
    let feedRequests = 0;
    await page.route("**/status.json", (route) => {
      feedRequests += 1;
      return route.abort();
    });
    await page.goto(`${baseUrl}/`);
    // straight from the page, before any feed request could have answered
    expect(await page.locator("body").getAttribute("data-state")).toBe("ready");
    expect(await page.locator("#loading").isVisible()).toBe(false);
    expect(await page.locator("#identities td.spiffe-id").first().textContent()).toBe(identity.spiffeId);
    expect(await page.locator("#timeline rect.life").count()).toBe(1);
    // then the first poll fails and the page says so, keeping the data
    await page.locator("#stale").waitFor({ state: "visible" });
    expect(feedRequests).toBeGreaterThan(0);
    expect(await page.locator("body").getAttribute("data-state")).toBe("stale");
    expect(await page.locator("#identities td.spiffe-id").first().textContent()).toBe(identity.spiffeId);
    await page.close();
  });

  it("marks the loading state unmistakably when there is no first state yet", async () => {
    failFeed = true;
    try {
      const html = await (await fetch(`${baseUrl}/`)).text();
      expect(html).toContain('<script id="initial-state" type="application/json"></script>');
      const page = await openPage(`${baseUrl}/`);
      expect(await page.locator("body").getAttribute("data-state")).toBe("loading");
      expect(await page.locator("#loading").isVisible()).toBe(true);
      expect(await page.locator("#loading").textContent()).toMatch(/^LOADING — waiting for the first status report/);
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, "status-page-loading.png") });
      await page.locator("#stale").waitFor({ state: "visible" });
      expect(await page.locator("#stale").textContent()).toContain("no data yet");
      expect(await page.locator("body").getAttribute("data-state")).toBe("loading");
      failFeed = false;
      await page.locator('body[data-state="ready"]').waitFor();
      expect(await page.locator("#loading").isVisible()).toBe(false);
      await page.close();
    } finally {
      failFeed = false;
    }
  });

  it("shows a clear stale state when the feed fails, and recovers", async () => {
    const page = await openPage(`${baseUrl}/`);
    await page.locator("#identities td.spiffe-id").first().waitFor();
    expect(await page.locator("#stale").isVisible()).toBe(false);
    failFeed = true;
    try {
      await page.locator("#stale").waitFor({ state: "visible" });
      expect(await page.locator("#stale").textContent()).toMatch(/^STALE — the status feed is not answering \(HTTP 503\)/);
      expect(await page.locator("body.stale").count()).toBe(1);
      // the last good data stays on screen, marked stale
      expect(await page.locator("#identities td.spiffe-id").first().textContent()).toBe(identity.spiffeId);
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, "status-page-stale.png") });
    } finally {
      failFeed = false;
    }
    await page.locator("#stale").waitFor({ state: "hidden" });
    expect(await page.locator("body.stale").count()).toBe(0);
    await page.close();
  });

  it("a CA's dapr-trust-bundle sync: a card with its state, last success, resourceVersion written and last error; a header badge while it fails, the health badge untouched; hidden without one", async () => {
    const page = await openPage(`${baseUrl}/`);
    await page.locator('body[data-state="ready"]').waitFor();
    expect(await page.locator("#dapr").isHidden()).toBe(true);
    expect(await page.locator("#dapr-badge").isHidden()).toBe(true);
    const failedAt = new Date();
    const hostileMessage = `E_KUBERNETES_UNAVAILABLE: the Kubernetes API refused to read ConfigMap dapr-system/dapr-trust-bundle: HTTP 403 Forbidden: <img src=x onerror="globalThis.pwned=4">`;
    try {
      dapr = {
        namespace: "dapr-system",
        configMap: "dapr-trust-bundle",
        state: "failing",
        lastResult: "error",
        lastAttemptAt: failedAt,
        lastSuccessAt: new Date(failedAt.getTime() - 5 * 60_000),
        lastWriteAt: new Date(failedAt.getTime() - 5 * 60_000),
        resourceVersion: "48213",
        failures: 3,
        lastError: { at: failedAt, code: "E_KUBERNETES_UNAVAILABLE", status: 403, reason: "Forbidden", message: hostileMessage },
        retryAt: new Date(failedAt.getTime() + 4_000),
      };
      await page.locator('#dapr[data-state="failing"]').waitFor();
      expect(await page.locator("#dapr-target").textContent()).toBe("ConfigMap dapr-system/dapr-trust-bundle");
      expect(await page.locator("#dapr-state").textContent()).toMatch(/^failing \(3 attempts in a row\), next attempt /);
      expect(await page.locator("#dapr-version").textContent()).toMatch(/^48213 at /);
      expect(await page.locator("#dapr-error").textContent()).toContain("E_KUBERNETES_UNAVAILABLE HTTP 403 Forbidden at ");
      expect(await page.locator("#dapr-error").textContent()).toContain(hostileMessage);
      expect(await page.locator("#dapr-badge").textContent()).toBe("dapr-trust-bundle failing");
      expect(await page.locator("#dapr-badge").isVisible()).toBe(true);
      // Never a readiness matter: the health badge and the checks stay as they are.
      expect(await page.locator("#health").textContent()).toBe("healthy");
      expect(await page.locator("#checks tbody").textContent()).not.toContain("dapr");
      expect(await page.locator("main img").count()).toBe(0);
      expect(await page.evaluate(() => (globalThis as unknown as { pwned?: number }).pwned)).toBeUndefined();
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, "status-page-dapr-failing.png"), fullPage: true });

      // Recovered: in step, the badge gone, the last error kept with its time.
      dapr = { ...dapr, state: "in-step", lastResult: "updated", lastSuccessAt: new Date(), lastWriteAt: new Date(), resourceVersion: "48290", failures: 0, retryAt: undefined };
      delete (dapr as { retryAt?: Date }).retryAt;
      await page.locator('#dapr[data-state="in-step"]').waitFor();
      expect(await page.locator("#dapr-state").textContent()).toBe("in step with the CA's trust bundle");
      expect(await page.locator("#dapr-success").textContent()).toMatch(/ \(updated\)$/);
      expect(await page.locator("#dapr-version").textContent()).toMatch(/^48290 at /);
      expect(await page.locator("#dapr-error").textContent()).toContain("E_KUBERNETES_UNAVAILABLE HTTP 403 Forbidden");
      expect(await page.locator("#dapr-badge").isHidden()).toBe(true);
    } finally {
      dapr = undefined;
      await page.close();
    }
  });

  it("renders a hostile SPIFFE-ID-like string as text, never as HTML", async () => {
    const payload = `spiffe://evil.example/<img src=x onerror="globalThis.pwned=1"><script>globalThis.pwned=2</script>`;
    hostile = payload;
    recorder.recordRefusal({ peer: `<b id="injected">10.0.0.1</b>:1`, reason: `<svg onload="globalThis.pwned=3">`, spiffeId: payload });
    try {
      // the first state rendered into the page carries the payload only as escaped JSON
      const html = await (await fetch(`${baseUrl}/`)).text();
      expect(html).not.toContain("<img src=x");
      expect(html).not.toContain("<script>globalThis.pwned");
      const page = await openPage(`${baseUrl}/`);
      await expect.poll(() => page.locator("#identities td.spiffe-id").allTextContents()).toContain(payload);
      expect(await page.locator("#name").textContent()).toBe(payload);
      expect(await page.locator("#refusals tbody tr").first().textContent()).toContain(`<b id="injected">10.0.0.1</b>:1`);
      // nothing the payloads describe exists as an element, and none of their scripts ran
      expect(await page.locator("main img, main script, #injected, main svg[onload]").count()).toBe(0);
      expect(await page.evaluate(() => (globalThis as unknown as { pwned?: number }).pwned)).toBeUndefined();
      await page.close();
    } finally {
      hostile = undefined;
    }
  });

  it("with a token: 401 without it or with a wrong one; the page works from ?token= and sends it as a bearer", async () => {
    for (const path of ["/", "/status.json"]) {
      const none = await fetch(`${guardedUrl}${path}`);
      expect(none.status).toBe(401);
      expect(none.headers.get("www-authenticate")).toBe('Bearer realm="meshward-status"');
      expect(await none.text()).not.toContain(identity.spiffeId);
      expect((await fetch(`${guardedUrl}${path}`, { headers: { authorization: "Bearer wrong-token-wrong-token" } })).status).toBe(401);
      expect((await fetch(`${guardedUrl}${path}?token=wrong-token-wrong-token`)).status).toBe(401);
      expect((await fetch(`${guardedUrl}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
      expect((await fetch(`${guardedUrl}${path}?token=${TOKEN}`)).status).toBe(200);
    }

    const refused = await context.newPage();
    const response = await refused.goto(`${guardedUrl}/`);
    expect(response?.status()).toBe(401);
    await refused.close();

    const page = await openPage(`${guardedUrl}/?token=${TOKEN}`);
    await expect.poll(() => page.locator("#identities td.spiffe-id").first().textContent()).toBe(identity.spiffeId);
    expect(new URL(page.url()).search).toBe(""); // the token left the address bar
    expect(await page.locator("#stale").isVisible()).toBe(false);
    await page.close();
  });

  it("serves the page with a hash-based CSP and no-referrer, and the feed as JSON", async () => {
    const res = await fetch(`${baseUrl}/`);
    expect(res.status).toBe(200);
    const csp = res.headers.get("content-security-policy") ?? "";
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'/);
    expect(csp).not.toContain("unsafe-inline");
    expect(res.headers.get("referrer-policy")).toBe("no-referrer");
    const feed = await fetch(`${baseUrl}/status.json`);
    expect(feed.headers.get("content-type")).toBe("application/json");
    const body = (await feed.json()) as { identities: { spiffeId: string }[]; handshakeFailures: { counts: number[] } };
    expect(body.identities[0]?.spiffeId).toBe(identity.spiffeId);
    expect(body.handshakeFailures.counts).toHaveLength(60);
    expect(emptyMinuteSeries(new Date()).total).toBe(0);
  });

  it("DNS rebinding: a page on a name rebound to 127.0.0.1 gets 421 for the page and the feed; localhost works", async () => {
    const port = new URL(baseUrl).port;
    const page = await context.newPage();
    page.setDefaultTimeout(15_000);
    try {
      const rebound = await page.goto(`http://${REBOUND}:${port}/`);
      expect(rebound?.status()).toBe(421);
      expect(await page.locator("body").textContent()).toMatch(/bound to loopback.*DNS rebinding/);
      // what the attacker's script would do next, same-origin from its point of view
      const feed = await page.evaluate(async () => {
        const res = await fetch("/status.json");
        return { status: res.status, body: await res.text() };
      });
      expect(feed.status).toBe(421);
      expect(feed.body).not.toContain(identity.spiffeId);

      const local = await page.goto(`http://localhost:${port}/`);
      expect(local?.status()).toBe(200);
      await expect.poll(() => page.locator("#identities tbody tr .spiffe-id").first().textContent()).toBe(identity.spiffeId);
    } finally {
      await page.close();
    }
  });
});
