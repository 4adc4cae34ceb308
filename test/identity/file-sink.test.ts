import { spawn } from "node:child_process";
import { createHash, createPublicKey, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startFileSink } from "../../src/identity/file-sink.ts";
import type { FileSink, FileSinkEvent, FileSinkOptions } from "../../src/identity/file-sink.ts";
import { createCrl, createIssuerCertificate, decodePrivateKey, generateKeyPair, toPem } from "../../src/pki/index.ts";
import { fileIdentitySource } from "../../src/identity/file-source.ts";
import { exec } from "../helpers/exec.ts";
import { createLogger } from "../../src/telemetry/logger.ts";
import { createTestPki, manualIdentitySource } from "../helpers/test-pki.ts";
import { waitFor } from "../helpers/wait.ts";
import type { TestPki } from "../helpers/test-pki.ts";

let pki: TestPki;
let root: string;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  pki = await createTestPki();
  root = mkdtempSync(join(tmpdir(), "mw-sink-"));
});
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

let counter = 0;
function freshDir(): string {
  return join(root, `out-${++counter}`);
}

function sink(options: FileSinkOptions): FileSink {
  const started = startFileSink(options);
  cleanups.push(() => started.close());
  return started;
}

function spkiHash(key: Parameters<typeof createPublicKey>[0]): string {
  return createHash("sha256").update(createPublicKey(key).export({ type: "spki", format: "der" })).digest("hex");
}

describe("file sink", () => {
  it("writes cert.pem (leaf + chain), key.pem (0600) and bundle.pem on start", async () => {
    const snapshot = pki.snapshot();
    const dir = freshDir();
    const files = sink({ source: manualIdentitySource(snapshot), dir });
    await files.ready();
    expect(readFileSync(files.paths.cert, "utf8")).toBe(snapshot.svid.certChainPem);
    expect(readFileSync(files.paths.bundle, "utf8")).toBe(pki.rootPem);
    expect(spkiHash(decodePrivateKey(readFileSync(files.paths.key, "utf8")))).toBe(spkiHash(snapshot.svid.privateKey));
    expect(statSync(files.paths.key).mode & 0o777).toBe(0o600);
    expect(statSync(files.paths.cert).mode & 0o777).toBe(0o644);
    expect(new X509Certificate(readFileSync(files.paths.cert)).serialNumber).toBe(snapshot.svid.serial);
  });

  it("writes crl.pem with every CRL of the set (after an issuer rotation, both issuers'): openssl refuses the old issuer's revoked certificate and accepts its good one", async () => {
    // After a rotation: this identity is on the new issuer B; the old issuer A (pki.issuer) still
    // has valid certificates and signs its own CRL. One of A's certificates was revoked after the rotation.
    const keysB = generateKeyPair();
    const certB = await createIssuerCertificate({ trustDomain: pki.trustDomain, publicKey: keysB.publicKey, signer: pki.root, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 86_400_000) });
    const issuerB = { certificate: new X509Certificate(certB.der), der: certB.der, privateKey: keysB.privateKey };
    const [revokedOld, goodOld] = [pki.issueSvid(), pki.issueSvid()];
    const now = Date.now();
    const crl = (signer: typeof pki.issuer) =>
      createCrl({ signer, entries: [{ serial: revokedOld.serial, revokedAt: new Date(now - 1000), reason: "keyCompromise" }], thisUpdate: new Date(now - 60_000), nextUpdate: new Date(now + 3_600_000), crlNumber: 12n });
    const [crlB, crlA] = [await crl(issuerB), await crl(pki.issuer)];
    const snapshot = { svid: pki.issueSvid({ signer: issuerB }), bundle: { ...pki.bundle({ revokedSerials: [revokedOld.serial] }), crls: [crlB, crlA] } };
    const dir = freshDir();
    const files = sink({ source: manualIdentitySource(snapshot), dir });
    await files.ready();
    expect(files.paths.crl).toBe(join(dir, "crl.pem"));
    expect(readFileSync(files.paths.crl, "utf8")).toBe(toPem(crlB, "X509 CRL") + toPem(crlA, "X509 CRL"));
    expect(statSync(files.paths.crl).mode & 0o777).toBe(0o644);

    // A real relying party: openssl verify with the files as written (-crl_check: the leaf against its own issuer's CRL).
    const scratch = join(dir, "peer");
    mkdirSync(scratch);
    const write = (name: string, text: string) => {
      const path = join(scratch, name);
      writeFileSync(path, text);
      return path;
    };
    const verify = (leafChainPem: string, crlFile = files.paths.crl) => {
      const chain = write(`chain-${++counter}.pem`, leafChainPem);
      return exec("openssl", ["verify", "-crl_check", "-CAfile", files.paths.bundle, "-untrusted", chain, "-CRLfile", crlFile, chain]);
    };
    const revoked = await verify(revokedOld.certChainPem);
    expect(revoked.code).not.toBe(0);
    expect(revoked.stdout + revoked.stderr).toMatch(/certificate revoked/);
    const good = await verify(goodOld.certChainPem);
    expect(good.code, good.stdout + good.stderr).toBe(0);
    expect(good.stdout).toMatch(/: OK/);
    const own = await verify(readFileSync(files.paths.cert, "utf8"));
    expect(own.code, own.stdout + own.stderr).toBe(0);
    // The current issuer's CRL alone leaves the old issuer's certificates without a CRL: openssl refuses them all.
    const currentOnly = await verify(goodOld.certChainPem, write("current-only.pem", toPem(crlB, "X509 CRL")));
    expect(currentOnly.code).not.toBe(0);
    expect(currentOnly.stdout + currentOnly.stderr).toMatch(/unable to get certificate CRL/);

    // meshward's own file reader takes the whole file too, for an identity on either issuer.
    for (const [svid, issuerPem] of [[snapshot.svid, toPem(issuerB.der, "CERTIFICATE")], [goodOld, pki.issuerPem]] as const) {
      const certFile = write(`id-${++counter}.pem`, svid.certChainPem);
      const keyFile = write(`id-${counter}.key`, svid.privateKey.export({ type: "pkcs8", format: "pem" }) as string);
      const reader = fileIdentitySource({ certFile, keyFile, bundleFile: files.paths.bundle, crlFile: files.paths.crl });
      cleanups.push(() => reader.close());
      const read = await reader.ready();
      expect([...read.bundle.revokedSerials]).toEqual([revokedOld.serial]);
      expect(svid.certChainPem).toContain(issuerPem.trim());
    }
  });

  it("rewrites crl.pem (and runs the command) when only the CRL changed", async () => {
    const now = Date.now();
    const crl = (serials: string[], n: bigint) =>
      createCrl({ signer: pki.issuer, entries: serials.map((serial) => ({ serial, revokedAt: new Date(now - 1000) })), thisUpdate: new Date(now - 60_000), nextUpdate: new Date(now + 3_600_000), crlNumber: n });
    const first = pki.snapshot();
    const source = manualIdentitySource({ ...first, bundle: { ...first.bundle, crls: [await crl([], 1n)] } });
    const events: FileSinkEvent[] = [];
    const files = sink({ source, dir: freshDir(), onRotate: "true", onEvent: (e) => events.push(e) });
    await files.ready();
    const second = await crl(["0A0B"], 2n);
    source.updateBundle({ ...first.bundle, revokedSerials: new Set(["0A0B"]), crls: [second] });
    await waitFor("crl.pem to hold the new CRL", () => readFileSync(files.paths.crl, "utf8") === toPem(second, "X509 CRL"));
    await waitFor("the command to run again", () => events.filter((e) => e.type === "command-finished").length === 2);
  });

  it("waits for a source without an identity, then writes; rewrites on rotation and bundle update", async () => {
    const source = manualIdentitySource();
    const files = sink({ source, dir: freshDir() });
    expect(existsSync(files.paths.cert)).toBe(false);
    const first = pki.snapshot();
    source.rotate(first);
    await files.ready();
    await files.idle();
    expect(new X509Certificate(readFileSync(files.paths.cert)).serialNumber).toBe(first.svid.serial);

    const second = pki.snapshot();
    source.rotate(second);
    await files.idle();
    expect(new X509Certificate(readFileSync(files.paths.cert)).serialNumber).toBe(second.svid.serial);
    expect(spkiHash(decodePrivateKey(readFileSync(files.paths.key, "utf8")))).toBe(spkiHash(second.svid.privateKey));

    const other = await createTestPki();
    source.updateBundle(pki.bundle({ extraRootsPem: other.rootPem }));
    await files.idle();
    expect(readFileSync(files.paths.bundle, "utf8")).toBe(pki.rootPem + other.rootPem);
  });

  it("runs the on-rotate command after each write, with the file paths in its environment", async () => {
    const source = manualIdentitySource(pki.snapshot());
    const dir = freshDir();
    const marker = join(root, `marker-${counter}`);
    const events: FileSinkEvent[] = [];
    const files = sink({
      source,
      dir,
      onRotate: `echo "$MESHWARD_SPIFFE_ID $(openssl x509 -noout -serial -in "$MESHWARD_CERT_FILE")" >> ${marker}`,
      onEvent: (event) => events.push(event),
    });
    await files.ready();
    const next = pki.snapshot({ spiffeId: "spiffe://example.org/ns/default/next" });
    source.rotate(next);
    await files.idle();
    const lines = readFileSync(marker, "utf8").trim().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[1]).toBe(`spiffe://example.org/ns/default/next serial=${next.svid.serial}`);
    expect(events.filter((event) => event.type === "command-finished").every((event) => event.type === "command-finished" && event.result.ok)).toBe(true);
  });

  it("does not pass meshward's own secrets (join token, status token, CA passphrase) to the on-rotate command", async () => {
    // Red team: the command inherits meshward's environment. The guide's PostgreSQL hook is
    // 'runuser -u postgres -- pg_ctl reload', and runuser keeps the environment, so a
    // reusable join token in MESHWARD_TOKEN would reach processes of another user.
    const secrets = { MESHWARD_TOKEN: "mwjt_reusable-join-token-value", MESHWARD_STATUS_TOKEN: "status-token-0123456789", MESHWARD_CA_PASSPHRASE: "ca-passphrase-value" };
    const saved = Object.fromEntries(Object.keys(secrets).map((name) => [name, process.env[name]]));
    Object.assign(process.env, secrets, { MESHWARD_HOOK_PROBE: "kept" });
    cleanups.push(() => {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
      delete process.env.MESHWARD_HOOK_PROBE;
    });
    const marker = join(root, `env-${++counter}`);
    const files = sink({ source: manualIdentitySource(pki.snapshot()), dir: freshDir(), onRotate: `env > ${marker}` });
    await files.ready();
    const env = readFileSync(marker, "utf8");
    for (const [name, value] of Object.entries(secrets)) {
      expect(env).not.toContain(name);
      expect(env).not.toContain(value);
    }
    // The rest of the environment, and the file paths, are passed on.
    expect(env).toContain("MESHWARD_HOOK_PROBE=kept");
    expect(env).toContain(`PATH=${process.env.PATH}`);
    expect(env).toContain(`MESHWARD_KEY_FILE=${files.paths.key}`);
  });

  it("never logs the private key, even when the on-rotate command prints it", async () => {
    const lines: string[] = [];
    const logger = createLogger({ component: "identity", destination: { write: (line: string) => void lines.push(line) } });
    const events: FileSinkEvent[] = [];
    const snapshot = pki.snapshot();
    const files = sink({ source: manualIdentitySource(snapshot), dir: freshDir(), onRotate: 'cat "$MESHWARD_KEY_FILE"; exit 1', retryMs: { initial: 60_000, max: 60_000 }, logger, onEvent: (event) => events.push(event) });
    await files.ready();
    const keyBody = readFileSync(files.paths.key, "utf8").split("\n")[1]!;
    expect(lines.some((line) => line.includes("on-rotate command failed"))).toBe(true);
    expect(lines.join("")).not.toContain(keyBody);
    expect(lines.join("")).toContain("[REDACTED PRIVATE KEY]");
    // Nor in what listeners (status pages) are handed.
    const finished = events.find((event) => event.type === "command-finished");
    expect(finished?.type === "command-finished" && finished.result.output).toBe("[REDACTED PRIVATE KEY]");
  });

  it("reports a failing or hanging command without stopping", async () => {
    const source = manualIdentitySource(pki.snapshot());
    const lines: { msg: string; exitCode?: number; output?: string; timedOut?: boolean }[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const events: FileSinkEvent[] = [];
    const files = sink({ source, dir: freshDir(), onRotate: "echo boom >&2; exit 3", logger, onEvent: (event) => events.push(event) });
    await files.ready();
    const failed = events.find((event) => event.type === "command-finished");
    expect(failed?.type === "command-finished" && failed.result).toMatchObject({ ok: false, exitCode: 3, timedOut: false, output: "boom" });
    expect(lines.some((line) => line.msg === "on-rotate command failed" && line.exitCode === 3 && line.output === "boom")).toBe(true);

    // The sink keeps working after the failure.
    const next = pki.snapshot();
    source.rotate(next);
    await files.idle();
    expect(new X509Certificate(readFileSync(files.paths.cert)).serialNumber).toBe(next.svid.serial);

    const hanging = sink({ source: manualIdentitySource(pki.snapshot()), dir: freshDir(), onRotate: "sleep 30", onRotateTimeoutMs: 200, logger, onEvent: (event) => events.push(event) });
    await hanging.ready();
    const timedOut = events.filter((event) => event.type === "command-finished").at(-1);
    expect(timedOut?.type === "command-finished" && timedOut.result).toMatchObject({ ok: false, timedOut: true, signal: "SIGKILL" });
    expect(lines.some((line) => line.msg === "on-rotate command timed out and was killed")).toBe(true);
  });

  /*
   * Red team: a failed reload (nginx busy, a PostgreSQL restart in progress) or a failed write
   * (disk full) was only tried again at the next rotation, about half a lifetime later, when the
   * certificate the server still holds may have expired. Now both are retried with backoff until
   * they succeed or newer files supersede them. spiffe-helper, by contrast, logs a failed
   * X.509 write or signal and waits for the next SVID; only its JWT path retries, from 1 s
   * doubling to 60 s (spiffe/spiffe-helper pkg/sidecar/sidecar.go, updateCertificates and
   * createRetryIntervalFunc).
   */
  it("retries a failed on-rotate command with backoff until it succeeds", async () => {
    const attempts = join(root, `attempts-${++counter}`);
    const events: FileSinkEvent[] = [];
    const command = `n=$(cat ${attempts} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${attempts}; [ $n -ge 3 ] || { echo "reload failed $n" >&2; exit 1; }`;
    const files = sink({ source: manualIdentitySource(pki.snapshot()), dir: freshDir(), onRotate: command, retryMs: { initial: 20, max: 100 }, onEvent: (event) => events.push(event) });
    await files.ready();
    const results = () => events.flatMap((event) => (event.type === "command-finished" ? [event.result.ok] : []));
    await waitFor("a successful on-rotate run", () => results().includes(true), 10_000, 10);
    expect(results()).toEqual([false, false, true]);
    expect(readFileSync(attempts, "utf8").trim()).toBe("3");
  });

  it("retries a failed write until it succeeds, and stops retrying on close", async () => {
    const dir = freshDir();
    mkdirSync(join(dir, "cert.pem", "blocker"), { recursive: true }); // rename(2) cannot replace a non-empty directory
    const events: FileSinkEvent[] = [];
    const snapshot = pki.snapshot();
    const files = sink({ source: manualIdentitySource(snapshot), dir, retryMs: { initial: 20, max: 100 }, onEvent: (event) => events.push(event) });
    await waitFor("two failed writes", () => events.filter((event) => event.type === "write-failed").length >= 2, 10_000, 10);
    // A readiness check reads this: the files do not hold the current identity.
    expect(files.problem()).toMatch(/^cannot write the identity files in .*retrying in (less than a second|\d+ seconds?|\d+ minutes?( \d+ seconds?)?): they hold no identity yet$/);
    rmSync(join(dir, "cert.pem"), { recursive: true });
    await files.ready();
    expect(new X509Certificate(readFileSync(files.paths.cert)).serialNumber).toBe(snapshot.svid.serial);
    expect(files.problem()).toBeUndefined();

    // A command that always fails is retried until the sink closes, then never again.
    const marker = join(root, `forever-${counter}`);
    const failing = sink({ source: manualIdentitySource(pki.snapshot()), dir: freshDir(), onRotate: `echo x >> ${marker}; exit 1`, retryMs: { initial: 20, max: 20 } });
    await failing.ready();
    await waitFor("three runs", () => readFileSync(marker, "utf8").split("\n").length > 3, 10_000, 10);
    await failing.close();
    const runs = readFileSync(marker, "utf8");
    await new Promise((r) => setTimeout(r, 300)); // a wait for a retry that must not come, not a measurement
    expect(readFileSync(marker, "utf8")).toBe(runs);
  });

  it("a reader polling in another process never sees a partial file, nor a new certificate with an old key", async () => {
    const source = manualIdentitySource(pki.snapshot());
    const dir = freshDir();
    const files = sink({ source, dir });
    await files.ready();
    const stopFile = join(root, `stop-${counter}`);
    // The reader reads cert.pem, then key.pem, as a TLS server loading its files would.
    const reader = `
      const fs = require("node:fs"), crypto = require("node:crypto");
      const [certPath, keyPath, stop] = process.argv.slice(1);
      const hash = (k) => crypto.createHash("sha256").update(crypto.createPublicKey(k).export({ type: "spki", format: "der" })).digest("hex");
      const seen = []; let reads = 0, partial = 0; const until = Date.now() + 20000;
      while (!fs.existsSync(stop) && Date.now() < until) {
        const certPem = fs.readFileSync(certPath, "utf8"), keyPem = fs.readFileSync(keyPath, "utf8");
        reads++;
        try {
          const blocks = certPem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\\n/g) || [];
          if (blocks.length !== 2 || blocks.join("") !== certPem) throw new Error("cert");
          const serial = new crypto.X509Certificate(blocks[0]).serialNumber;
          const key = hash(crypto.createPrivateKey(keyPem));
          if (seen.length === 0 || seen[seen.length - 1][0] !== serial || seen[seen.length - 1][1] !== key) seen.push([serial, key]);
        } catch { partial++; }
      }
      process.stdout.write(JSON.stringify({ reads, partial, seen }));
    `;
    const child = spawn(process.execPath, ["-e", reader, files.paths.cert, files.paths.key, stopFile], { stdio: ["ignore", "pipe", "inherit"] });
    cleanups.push(() => void child.kill("SIGKILL"));
    let out = "";
    child.stdout!.on("data", (chunk) => (out += chunk));
    const exited = new Promise((resolve) => child.once("exit", resolve));

    const order = new Map<string, number>();
    const keyOrder = new Map<string, number>();
    const first = source.current()!;
    order.set(first.svid.serial, 0);
    keyOrder.set(spkiHash(first.svid.privateKey), 0);
    for (let i = 1; i <= 80; i++) {
      const next = pki.snapshot();
      order.set(next.svid.serial, i);
      keyOrder.set(spkiHash(next.svid.privateKey), i);
      source.rotate(next);
      await files.idle();
    }
    writeFileSync(stopFile, "");
    await exited;
    const result = JSON.parse(out) as { reads: number; partial: number; seen: [string, string][] };
    expect(result.partial).toBe(0);
    expect(result.reads).toBeGreaterThan(0);
    expect(new Set(result.seen.map(([serial]) => serial)).size).toBeGreaterThan(1);
    for (const [serial, key] of result.seen) {
      const certIndex = order.get(serial)!;
      const keyIndex = keyOrder.get(key)!;
      expect(certIndex).toBeDefined();
      // Matching pair, or the key already newer than the certificate: never older.
      expect(keyIndex).toBeGreaterThanOrEqual(certIndex);
    }
  });
});
