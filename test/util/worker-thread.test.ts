import { X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { Worker } from "node:worker_threads";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { initAnchors, loadAnchors } from "../../src/ca/anchors.ts";
import type { SignedLeaf } from "../../src/ca/issuer.ts";
import { SigningPool } from "../../src/ca/signing-pool.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { toPem } from "../../src/pki/pem.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import { SOURCE_WORKERS_DIR_ENV, startMeshwardWorker } from "../../src/util/worker-thread.ts";

// The rest of the suite runs the worker threads from the bundle test/global-setup.ts builds
// (SOURCE_WORKERS_DIR_ENV). This file checks which worker each way of running starts, and that
// the sources alone (a developer's `MESHWARD_FROM_SOURCE=1`) still start working workers.

/** The first message of a worker. */
function firstMessage(worker: Worker): Promise<unknown> {
  return new Promise((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
    worker.once("exit", (code) => reject(new Error(`worker exited with ${code} before a message`)));
  });
}

describe("startMeshwardWorker: which worker file runs", () => {
  let work: string;
  const saved = process.env[SOURCE_WORKERS_DIR_ENV];
  const started: Worker[] = [];

  /** A folder with a stand-in signing-worker.js that answers with `marker`. */
  function folderWithWorker(marker: string): string {
    const dir = join(work, marker);
    mkdirSync(dir);
    writeFileSync(join(dir, "signing-worker.js"), `import { parentPort } from "node:worker_threads"; parentPort.postMessage(${JSON.stringify(marker)});\n`);
    return dir;
  }

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), "meshward-worker-thread-"));
  });
  afterEach(async () => {
    if (saved === undefined) delete process.env[SOURCE_WORKERS_DIR_ENV];
    else process.env[SOURCE_WORKERS_DIR_ENV] = saved;
    await Promise.all(started.splice(0).map((w) => w.terminate()));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("from the sources, the folder the variable names", async () => {
    process.env[SOURCE_WORKERS_DIR_ENV] = folderWithWorker("bundled");
    const worker = startMeshwardWorker(pathToFileURL(join(work, "caller.ts")).href, "signing-worker");
    started.push(worker);
    expect(await firstMessage(worker)).toBe("bundled");
  });

  it("from a build, the file next to the caller, whatever the variable says", async () => {
    const build = folderWithWorker("build");
    process.env[SOURCE_WORKERS_DIR_ENV] = folderWithWorker("elsewhere");
    const worker = startMeshwardWorker(pathToFileURL(join(build, "chunk.js")).href, "signing-worker");
    started.push(worker);
    expect(await firstMessage(worker)).toBe("build");
  });

  it("from the sources without the variable, the .ts workers through tsx: a real pool signs and a real writer records", async () => {
    delete process.env[SOURCE_WORKERS_DIR_ENV];
    const dir = join(work, "sources");
    await initAnchors({ dir, trustDomain: "worker.test", now: new Date() });
    const anchors = loadAnchors({ dir });
    const pool = new SigningPool(1);
    let leaf: SignedLeaf;
    try {
      leaf = await pool.issue({
        csr: await createCsr({ keyPair: generateKeyPair() }),
        identity: { spiffeId: "spiffe://worker.test/ns/a/b", allowedDnsNames: [], method: "join-token" },
        signer: anchors.issuer,
        policy: { workloadTtlMs: 3_600_000, clockSkewMs: 60_000 },
        now: new Date(),
      });
      expect(new X509Certificate(leaf.der).checkIssued(anchors.issuer.certificate)).toBe(true);
    } finally {
      await pool.close();
    }
    const store = openSqliteStore(join(work, "ca.db"), { writerThread: true });
    try {
      await store.migrate();
      await store.recordIssuance({
        serial: leaf.serial,
        spiffeId: "spiffe://worker.test/ns/a/b",
        dnsNames: [],
        notBefore: leaf.notBefore,
        notAfter: leaf.notAfter,
        issuedAt: new Date(),
        attestation: "join-token",
        issuerFingerprint: anchors.issuer.certificate.fingerprint256,
        rootFingerprint: anchors.issuer.certificate.fingerprint256,
        certificatePem: toPem(leaf.der, "CERTIFICATE"),
      });
      expect((await store.listIssuances({})).map((r) => r.serial)).toEqual([leaf.serial]);
    } finally {
      await store.close();
    }
  });
});
