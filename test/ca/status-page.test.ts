import { X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { caLayout, initAnchors } from "../../src/ca/anchors.ts";
import { rotateIssuer } from "../../src/ca/rotation.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { trustBundleVersionOfPem } from "../../src/telemetry/bundle-version.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { requestCertificate } from "../../src/identity/ca-client.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { runCli } from "../helpers/cli.ts";
import { exec } from "../helpers/exec.ts";
import { renegotiateWithSClient } from "../helpers/openssl-renegotiate.ts";

// The CA's own status page: a real CA (in-process) with --status on 127.0.0.1:0, refused
// sign requests over real gRPC, a TLS 1.1 ClientHello from openssl, an issuer rotation on
// disk — and Debian's Chromium showing it.
const TD = "status.test";
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

interface Feed {
  component: string;
  name: string;
  identities: { kind: string; serial: string; spiffeId: string }[];
  roots: { fingerprint: string }[];
  rotations: { kind: string; result: string; serial?: string }[];
  handshakeFailures: { total: number; byKey: { key: string }[] };
  denials: { total: number; byKey: { key: string }[] };
  refusals: { reason: string; peer: string }[];
  health: { ok: boolean };
}

const ARTIFACTS = new URL("../../test-artifacts/", import.meta.url).pathname;
let work: string;
let dir: string;
let server: CaServer;
let context: BrowserContext | undefined;
let userDataDir: string | undefined;

const feed = async (): Promise<Feed> => (await (await fetch(`${server.status!.url}/status.json`)).json()) as Feed;
const issuerSerial = () => new X509Certificate(readFileSync(caLayout(dir).issuerCert)).serialNumber;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "meshward-ca-status-"));
  dir = join(work, "ca");
  await initAnchors({ dir, trustDomain: TD, now: new Date() });
  server = await startCaServer({ dir, config: caConfigSchema.parse({ listen: "127.0.0.1:0", status: "127.0.0.1:0", anchorPoll: "100ms" }), logger: pino({ level: "silent" }) });
});

afterAll(async () => {
  await context?.close().catch(() => undefined);
  await server?.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

describe("the CA's status page", () => {
  it("reports the CA's identity, issuer and root, and its health", async () => {
    const f = await feed();
    expect(f.component).toBe("ca");
    expect(f.name).toBe(TD);
    expect(f.identities.map((i) => i.kind)).toEqual(["workload", "issuer", "root"]);
    expect(f.identities[0]?.spiffeId).toBe(server.spiffeId);
    expect(f.identities[1]?.serial).toBe(issuerSerial());
    expect(f.roots).toHaveLength(1);
    expect(f.health.ok).toBe(true);
    const metrics = await (await fetch(`${server.status!.url}/metrics`)).text();
    expect(metrics).toContain("meshward_ca_sign_requests_total");
    expect((await fetch(`${server.status!.url}/readyz`)).status).toBe(200);
  });

  it("shows refused sign requests and failed handshakes with their reasons", async () => {
    const bundlePem = readFileSync(caLayout(dir).bundle, "utf8");
    const refused = await requestCertificate(
      { address: server.address, bundlePem, trustDomain: TD },
      { csrPem: await createCsr({ keyPair: generateKeyPair() }), token: "mwjt_not-a-real-token", validator: "JOIN_TOKEN", namespace: "shop", appId: "cart" },
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(Error);
    const tls11 = await exec("openssl", ["s_client", "-tls1_1", "-connect", server.address], { input: "Q\n" });
    expect(tls11.code).not.toBe(0);
    // The CA refuses a client-initiated TLS 1.2 renegotiation too (a renewal's peer certificate is read once per connection).
    const renegotiation = await renegotiateWithSClient(server.address, ["-CAfile", caLayout(dir).bundle]);
    expect(renegotiation.output).toContain("RENEGOTIATING");
    expect(renegotiation.output).toMatch(/no renegotiation/);

    // A request that names no app id, with an expired token (it used to read "E_TOKEN_EXPIRED (ns//)").
    const { token: expired } = await issueJoinToken(server.store, { spiffeId: `spiffe://${TD}/ns/shop/cart`, ttlMs: 1_000, now: new Date(Date.now() - 60_000) });
    await requestCertificate(
      { address: server.address, bundlePem, trustDomain: TD },
      { csrPem: await createCsr({ keyPair: generateKeyPair() }), token: expired, validator: "JOIN_TOKEN", namespace: "", appId: "" },
    ).catch(() => undefined);
    // Plain HTTP to the TLS port (it used to read "handshake: other").
    await exec("curl", ["-s", "-m", "5", `http://${server.address}/`]);

    const f = await feed();
    expect(f.denials.total).toBeGreaterThanOrEqual(2);
    expect(f.refusals.some((r) => /^sign refused for ns\/shop\/cart: E_TOKEN_UNKNOWN: the join token is not known to this CA$/.test(r.reason))).toBe(true);
    expect(f.refusals.map((r) => r.reason)).toContain("sign refused: E_TOKEN_EXPIRED: the join token has expired; create a new one with 'meshward token create'");
    expect(f.handshakeFailures.byKey.map((k) => k.key)).toContain("protocol_version");
    expect(f.refusals.map((r) => r.reason)).toContain("handshake: protocol_version");
    expect(f.refusals.map((r) => r.reason)).toContain("handshake: other: plain HTTP sent to the TLS port");
    // Every reason reads as words, and every peer is an address with its port.
    for (const r of f.refusals) {
      expect(r.reason).not.toMatch(/\(ns\/\/\)|: other$|^handshake: other$/);
      expect(r.peer).toMatch(/^127\.0\.0\.1:\d+$/);
    }
  });

  it("in Chromium: shows the issuer, and follows an issuer rotation without a reload", async () => {
    userDataDir = mkdtempSync(join(tmpdir(), "meshward-chromium-"));
    context = await chromium.launchPersistentContext(userDataDir, { executablePath: "/usr/bin/chromium", headless: true, args: CHROMIUM_ARGS });
    const page = await context.newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(`${server.status!.url}/`);
    const before = issuerSerial();
    await page.locator(`#identities td.serial[data-serial="${before}"]`).waitFor();
    await page.evaluate(() => ((globalThis as unknown as { notReloaded: boolean }).notReloaded = true));

    await rotateIssuer({ dir, now: new Date(), issuerTtlMs: 365 * 24 * 3_600_000 });
    const after = issuerSerial();
    expect(after).not.toBe(before);
    await page.locator(`#identities td.serial[data-serial="${after}"]`).waitFor();
    expect(await page.locator("#rotations tbody tr").first().textContent()).toContain(after);
    expect(await page.evaluate(() => (globalThis as unknown as { notReloaded?: boolean }).notReloaded)).toBe(true);
    expect((await feed()).rotations[0]).toMatchObject({ kind: "issuer", result: "ok", serial: after });
  });

  it("in Chromium: every timeline bar visible, whole fingerprints and expiry times, refused sign requests (not policy denials), live certificates per root, bundle version; screenshot once loaded", async () => {
    // One live certificate under the root.
    const { token } = await issueJoinToken(server.store, { spiffeId: `spiffe://${TD}/ns/shop/orders`, ttlMs: 60_000 });
    await requestCertificate(
      { address: server.address, bundlePem: readFileSync(caLayout(dir).bundle, "utf8"), trustDomain: TD },
      { csrPem: await createCsr({ keyPair: generateKeyPair() }), token, validator: "JOIN_TOKEN", namespace: "shop", appId: "orders" },
    );
    const rootPem = readFileSync(caLayout(dir).bundle, "utf8");
    const root = new X509Certificate(rootPem);
    userDataDir ??= mkdtempSync(join(tmpdir(), "meshward-chromium-"));
    context ??= await chromium.launchPersistentContext(userDataDir, { executablePath: "/usr/bin/chromium", headless: true, args: CHROMIUM_ARGS });
    for (const width of [1280, 640]) {
      const page = await context.newPage();
      page.setDefaultTimeout(15_000);
      await page.setViewportSize({ width, height: 1100 });
      await page.goto(`${server.status!.url}/`);
      await page.locator('body[data-state="ready"]').waitFor();
      expect(await page.locator("#loading").isVisible()).toBe(false);

      // The timeline: the 24 h serving certificate, the 1 y issuer and the 10 y root each get a full-width bar.
      const svgWidth = await page.locator("#timeline").evaluate((svg) => svg.getBoundingClientRect().width);
      const bars = await page.locator("#timeline rect.life").evaluateAll((rects) => rects.map((r) => ({ kind: r.getAttribute("data-kind"), width: r.getBoundingClientRect().width })));
      expect(bars.map((b) => b.kind)).toEqual(["workload", "issuer", "root"]);
      for (const bar of bars) expect(bar.width, `${bar.kind} bar`).toBeGreaterThan(svgWidth * 0.9);
      // and no label overlaps another text of the timeline
      const boxes = await page.locator("#timeline text").evaluateAll((texts) => texts.map((t) => t.getBoundingClientRect()).map((r) => ({ left: r.left, right: r.right, top: r.top, bottom: r.bottom })));
      const overlapping = boxes.flatMap((a, i) => boxes.slice(i + 1).filter((b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom).map(() => i));
      expect(overlapping).toEqual([]);

      // Whole values: the fingerprint is complete, and no colon-separated group (nor an expiry
      // time) is split across lines, however narrow the page.
      const fingerprintCell = page.locator("#roots td.fingerprint").first();
      expect(await fingerprintCell.textContent()).toBe(root.fingerprint256);
      const splitGroups = await page.locator("#roots td.fingerprint, #roots td.nowrap, #identities td.expires, #identities td.serial").evaluateAll((cells) =>
        cells.flatMap((cell) =>
          [...cell.childNodes]
            .filter((n) => n.nodeType === 3)
            .filter((n) => {
              // (runs in the page)
              const range = (globalThis as unknown as { document: { createRange(): { selectNodeContents(node: unknown): void; getClientRects(): { length: number } } } }).document.createRange();
              range.selectNodeContents(n);
              return range.getClientRects().length > 1;
            })
            .map((n) => n.textContent),
        ),
      );
      expect(splitGroups).toEqual([]);
      // words wrap between words only (the kind column used to read "wor/kloa/d")
      const wordsSplit = await page.locator("#identities td.nowrap, #roots td.subject").evaluateAll((cells) =>
        cells.filter((cell) => {
          const range = (globalThis as unknown as { document: { createRange(): { selectNodeContents(node: unknown): void; getClientRects(): { length: number } } } }).document.createRange();
          range.selectNodeContents(cell);
          const words = (cell.textContent ?? "").split(/\s+/).filter((w: string) => w !== "").length;
          return range.getClientRects().length > words;
        }).map((cell) => cell.textContent),
      );
      expect(wordsSplit).toEqual([]);
      expect(await page.locator("#identities td.expires").first().textContent()).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);

      // The CA's second chart is refused sign requests, not policy denials; reasons in words.
      expect(await page.locator("#denials-title").textContent()).toBe("Refused sign requests");
      expect(await page.locator("#denials-summary").textContent()).toMatch(/refused sign requests in the last hour — E_TOKEN_/);
      const refusals = await page.locator("#refusals tbody").textContent();
      expect(refusals).not.toMatch(/unknown:0|\(ns\/\/\)/);

      // Live certificates per root, and the bundle version operators compare with each workload's.
      expect(await page.locator("#roots th.live-col").isVisible()).toBe(true);
      // (the CA reads the count from its store at most every 5 s; the page polls every 2 s)
      const live = String((await server.store.countValidByRoot(new Date())).get(root.fingerprint256));
      expect(Number(live)).toBeGreaterThanOrEqual(1);
      await expect.poll(() => page.locator(`#roots td.live[data-fingerprint="${root.fingerprint256}"]`).textContent(), { timeout: 10_000 }).toBe(live);
      expect(await page.locator("#bundle-version").textContent()).toBe(`bundle version ${trustBundleVersionOfPem(rootPem)} · 1 root`);

      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, `ca-status-page-${width}.png`), fullPage: true });
      await page.close();
    }
  });

  it("meshward ca serve exits with a clear error for a weak or unreadable token, before serving", async () => {
    const short = join(work, "short-token");
    writeFileSync(short, "too-short\n", { mode: 0o600 });
    const weak = await runCli(["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0", "--status", "0.0.0.0:0", "--status-token-file", short], { timeoutMs: 20_000 });
    expect(weak.code).toBe(1);
    expect(weak.stderr).toMatch(/at least 16 characters.*\[E_STATUS_TOKEN_WEAK\]/);
    expect(weak.stdout).not.toMatch(/listening/);
    const missing = await runCli(["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0", "--status", "0.0.0.0:0", "--status-token-file", join(work, "nope")], { timeoutMs: 20_000 });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot read status token file .*nope: ENOENT/);
  });

  it("refuses a status port off loopback without a token, and starts nothing", async () => {
    const saved = process.env.MESHWARD_STATUS_TOKEN;
    delete process.env.MESHWARD_STATUS_TOKEN;
    try {
      const error = await startCaServer({ dir, config: caConfigSchema.parse({ listen: "127.0.0.1:0", status: "0.0.0.0:0" }), logger: pino({ level: "silent" }) }).then(
        (s) => s.close().then(() => undefined),
        (e: unknown) => e,
      );
      expect(String(error)).toMatch(/not on loopback.*status-token-file/);
    } finally {
      if (saved !== undefined) process.env.MESHWARD_STATUS_TOKEN = saved;
    }
  });
});
