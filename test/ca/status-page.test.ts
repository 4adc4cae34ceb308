import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { caLayout, initAnchors } from "../../src/ca/anchors.ts";
import { rotateIssuer } from "../../src/ca/rotation.ts";
import { startCaServer, type CaServer } from "../../src/ca/server.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { requestCertificate } from "../../src/identity/ca-client.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { runCli } from "../helpers/cli.ts";
import { exec } from "../helpers/exec.ts";

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

    const f = await feed();
    expect(f.denials.total).toBeGreaterThanOrEqual(1);
    expect(f.refusals.some((r) => /^sign refused: E_\w+ \(ns\/shop\/cart\)$/.test(r.reason) && r.peer.startsWith("127.0.0.1"))).toBe(true);
    expect(f.handshakeFailures.byKey.map((k) => k.key)).toContain("protocol_version");
    expect(f.refusals.map((r) => r.reason)).toContain("handshake: protocol_version");
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

  it("meshward ca serve exits with a clear error for a weak or unreadable token, before serving", async () => {
    const short = join(work, "short-token");
    writeFileSync(short, "too-short\n");
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
