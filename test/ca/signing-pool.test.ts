import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initAnchors, loadAnchors, type LoadedAnchors } from "../../src/ca/anchors.ts";
import type { AttestedIdentity } from "../../src/ca/attest/attestor.ts";
import { inlineSigning, MAX_QUEUED_JOBS_PER_WORKER, runBatch, SigningPool, type WorkerRequest } from "../../src/ca/signing-pool.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { isMeshwardError, MeshwardError } from "../../src/errors.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { pemBlocks, toPem } from "../../src/pki/pem.ts";
import { exec } from "../helpers/exec.ts";

const TD = "pool.test";
const identity: AttestedIdentity = { spiffeId: `spiffe://${TD}/ns/shop/cart`, allowedDnsNames: ["cart.shop.internal"], method: "join-token" };
const policy = { workloadTtlMs: 3_600_000, clockSkewMs: 60_000 };

async function failure(promise: Promise<unknown>): Promise<{ code: string; message: string; details: unknown }> {
  try {
    await promise;
  } catch (error) {
    if (isMeshwardError(error)) return { code: error.code, message: error.message, details: error.details };
    throw error;
  }
  throw new Error("expected a refusal");
}

describe("signing pool (worker threads)", () => {
  let work: string;
  let first: LoadedAnchors;
  let second: LoadedAnchors;
  let pool: SigningPool;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-signing-pool-"));
    await initAnchors({ dir: join(work, "a"), trustDomain: TD, now: new Date() });
    await initAnchors({ dir: join(work, "b"), trustDomain: TD, now: new Date() });
    first = loadAnchors({ dir: join(work, "a") });
    second = loadAnchors({ dir: join(work, "b") });
    pool = new SigningPool(2);
  });

  afterAll(async () => {
    await pool?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it("parses a CSR exactly as the calling thread does, public key included", async () => {
    const keyPair = generateKeyPair();
    const pem = await createCsr({ keyPair, spiffeId: identity.spiffeId, dnsNames: ["cart.shop.internal"] });
    const [viaPool, inline] = await Promise.all([pool.parseCsr(pem), inlineSigning.parseCsr(pem)]);
    expect({ ...viaPool, publicKey: undefined }).toEqual({ ...inline, publicKey: undefined });
    expect(Buffer.isBuffer(viaPool.der)).toBe(true);
    expect(viaPool.publicKey.equals(keyPair.publicKey)).toBe(true);
  });

  it("signs leaves that openssl verifies against the issuer, with the attested identity and the CSR's key", async () => {
    const keyPair = generateKeyPair();
    const csr = await pool.parseCsr(await createCsr({ keyPair }));
    const now = new Date();
    const leaf = await pool.sign({ csr, identity, signer: first.issuer, policy, now });
    const cert = new X509Certificate(leaf.der);
    expect(cert.checkIssued(first.issuer.certificate)).toBe(true);
    expect(cert.verify(first.issuer.certificate.publicKey)).toBe(true);
    expect(cert.publicKey.equals(keyPair.publicKey)).toBe(true);
    expect(cert.subjectAltName).toBe(`URI:${identity.spiffeId}`);
    expect(cert.serialNumber).toBe(leaf.serial);
    expect(leaf.notAfter.getTime()).toBe(now.getTime() + policy.workloadTtlMs);
    expect(leaf.notBefore.getTime()).toBe(now.getTime() - policy.clockSkewMs);

    const leafFile = join(work, "leaf.pem");
    const issuerFile = join(work, "issuer.pem");
    writeFileSync(leafFile, toPem(leaf.der, "CERTIFICATE"));
    writeFileSync(issuerFile, toPem(first.issuer.der, "CERTIFICATE"));
    const verified = await exec("openssl", ["verify", "-CAfile", first.layout.bundle, "-untrusted", issuerFile, leafFile]);
    expect(verified.stdout + verified.stderr).toContain(": OK");
  });

  it("refuses bad CSRs with the same codes and messages as the calling thread", async () => {
    const keyPair = generateKeyPair();
    const good = await createCsr({ keyPair });
    const der = pemBlocks(good)[0]!.der;
    const tampered = Buffer.from(der);
    tampered[tampered.length - 3]! ^= 0x01;
    const cases: (string | Uint8Array)[] = ["not a csr", toPem(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]), "CERTIFICATE REQUEST"), toPem(tampered, "CERTIFICATE REQUEST")];
    const codes: string[] = [];
    for (const input of cases) {
      const [viaPool, inline] = await Promise.all([failure(pool.parseCsr(input)), failure(inlineSigning.parseCsr(input))]);
      expect(viaPool).toEqual(inline);
      codes.push(viaPool.code);
    }
    expect(codes).toEqual(["E_CSR_INVALID", "E_CSR_INVALID", "E_CSR_SIGNATURE"]);
  });

  it("refuses signing-policy violations with the same codes, messages and details", async () => {
    const otherId = await pool.parseCsr(await createCsr({ keyPair: generateKeyPair(), spiffeId: `spiffe://${TD}/ns/shop/other` }));
    const input = { csr: otherId, identity, signer: first.issuer, policy, now: new Date() };
    const [viaPool, inline] = await Promise.all([failure(pool.sign(input)), failure(inlineSigning.sign(input))]);
    expect(viaPool).toEqual(inline);
    expect(viaPool.code).toBe("E_CSR_IDENTITY_MISMATCH");
    expect(viaPool.details).toEqual({ requested: `spiffe://${TD}/ns/shop/other`, attested: identity.spiffeId });

    const expired = await failure(pool.sign({ ...input, csr: await pool.parseCsr(await createCsr({ keyPair: generateKeyPair() })), now: new Date(Date.now() + 2 * 365 * 86_400_000) }));
    expect(expired.code).toBe("E_ISSUER_EXPIRED");
  });

  it("issue (check + sign in one trip) gives what parseCsr + sign give, and the same refusals", async () => {
    const keyPair = generateKeyPair();
    const pem = await createCsr({ keyPair, spiffeId: identity.spiffeId });
    const now = new Date();
    const leaf = await pool.issue({ csr: pem, identity, signer: first.issuer, policy, now });
    const cert = new X509Certificate(leaf.der);
    expect(Buffer.isBuffer(leaf.der)).toBe(true);
    expect(cert.verify(first.issuer.certificate.publicKey)).toBe(true);
    expect(cert.publicKey.equals(keyPair.publicKey)).toBe(true);
    expect(cert.subjectAltName).toBe(`URI:${identity.spiffeId}`);
    expect(leaf.notAfter.getTime()).toBe(now.getTime() + policy.workloadTtlMs);

    const tampered = Buffer.from(pemBlocks(pem)[0]!.der);
    tampered[tampered.length - 3]! ^= 0x01;
    const other = await createCsr({ keyPair: generateKeyPair(), spiffeId: `spiffe://${TD}/ns/shop/other` });
    const codes: string[] = [];
    for (const csr of ["not a csr", toPem(tampered, "CERTIFICATE REQUEST"), other]) {
      const input = { csr, identity, signer: first.issuer, policy, now };
      const [viaPool, inline] = await Promise.all([failure(pool.issue(input)), failure(inlineSigning.issue(input))]);
      expect(viaPool).toEqual(inline);
      codes.push(viaPool.code);
    }
    expect(codes).toEqual(["E_CSR_INVALID", "E_CSR_SIGNATURE", "E_CSR_IDENTITY_MISMATCH"]);
  });

  it("signs with whichever issuer the request carries, also when issuers alternate under load (rotation)", async () => {
    const csrs = await Promise.all(Array.from({ length: 24 }, async () => pool.parseCsr(await createCsr({ keyPair: generateKeyPair() }))));
    const signers = csrs.map((_, i) => (i % 3 === 0 ? second : first));
    const leaves = await Promise.all(csrs.map((csr, i) => pool.sign({ csr, identity, signer: signers[i]!.issuer, policy, now: new Date() })));
    leaves.forEach((leaf, i) => {
      const cert = new X509Certificate(leaf.der);
      const expected = signers[i]!.issuer.certificate;
      const other = (signers[i] === first ? second : first).issuer.certificate;
      expect(cert.verify(expected.publicKey), `leaf ${i}`).toBe(true);
      expect(cert.verify(other.publicKey), `leaf ${i}`).toBe(false);
    });
  });

  it("stops every worker on close() and refuses work afterwards", async () => {
    const own = new SigningPool(3);
    const csr = await own.parseCsr(await createCsr({ keyPair: generateKeyPair() }));
    expect(own.running).toBe(3);
    const inFlight = own.sign({ csr, identity, signer: first.issuer, policy, now: new Date() }).then(
      () => "signed",
      (error: unknown) => (isMeshwardError(error) ? error.code : "other"),
    );
    await own.close();
    expect(own.running).toBe(0);
    // A job already running either finished before the close or was refused; never left hanging.
    expect(["signed", "E_SIGNING_CLOSED"]).toContain(await inFlight);
    expect((await failure(own.parseCsr("x"))).code).toBe("E_SIGNING_CLOSED");
  });
});

// Review ca-api MEDIUM-3: a cancelled call's job still ran in the pool, and nothing bounded the
// jobs waiting there: 100 calls sent and reset in 2.7 s delayed the next issuance by 33 s.
describe("signing pool: jobs of callers that left, and the queue's bound", () => {
  const cancelled = () => new MeshwardError("E_REQUEST_CANCELLED", "the client reset the stream");
  let pem: string;
  let dir: string;
  let anchors: LoadedAnchors;
  beforeAll(async () => {
    pem = await createCsr({ keyPair: generateKeyPair() });
    dir = mkdtempSync(join(tmpdir(), "meshward-signing-pool-cancel-"));
    await initAnchors({ dir: join(dir, "a"), trustDomain: TD, now: new Date() });
    anchors = loadAnchors({ dir: join(dir, "a") });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const outcome = (promise: Promise<unknown>) => promise.then(() => "ok", (error: unknown) => (isMeshwardError(error) ? error.code : String(error)));

  it("drops a job whose caller leaves before it is posted: it never reaches a worker, and the caller gets the abort's reason", async () => {
    const own = new SigningPool(1);
    try {
      await own.parseCsr(pem);
      const ranBefore = own.stats.ran;
      const gone = new AbortController();
      const kept = own.parseCsr(pem);
      const dropped = own.parseCsr(pem, gone.signal);
      gone.abort(cancelled());
      expect(await outcome(dropped)).toBe("E_REQUEST_CANCELLED");
      expect(await outcome(kept)).toBe("ok");
      expect(own.stats).toEqual({ queued: 0, ran: ranBefore + 1, droppedBeforePosting: 1, skippedInWorker: 0, refusedBusy: 0 });
      // A caller already gone is refused before anything is queued (sign and issue alike).
      const signal = AbortSignal.abort(cancelled());
      expect(await outcome(own.issue({ csr: pem, identity, signer: anchors.issuer, policy, now: new Date(), signal }))).toBe("E_REQUEST_CANCELLED");
      expect(await outcome(own.parseCsr(pem, signal))).toBe("E_REQUEST_CANCELLED");
      expect(own.stats).toMatchObject({ queued: 0, ran: ranBefore + 1, droppedBeforePosting: 1 });
    } finally {
      await own.close();
    }
  });

  it("refuses a posted job's caller at once when it leaves, and frees its place once the worker has answered", async () => {
    const own = new SigningPool(1, { maxQueuedJobs: 2 });
    try {
      await own.parseCsr(pem);
      const ranBefore = own.stats.ran;
      const gone = new AbortController();
      const posted = own.parseCsr(pem, gone.signal);
      await new Promise((resolve) => setImmediate(resolve)); // the outbox went to the worker
      gone.abort(cancelled());
      expect(await outcome(posted)).toBe("E_REQUEST_CANCELLED");
      // The worker answers in order: once this one is done, the abandoned job was skipped or run.
      expect(await outcome(own.parseCsr(pem))).toBe("ok");
      const { ran, skippedInWorker, droppedBeforePosting, queued } = own.stats;
      expect({ done: ran + skippedInWorker - ranBefore, droppedBeforePosting, queued }).toEqual({ done: 2, droppedBeforePosting: 0, queued: 0 });
      expect(await Promise.all([outcome(own.parseCsr(pem)), outcome(own.parseCsr(pem))])).toEqual(["ok", "ok"]);
    } finally {
      await own.close();
    }
  });

  it("a worker skips a posted job whose caller left (its shared flag is set) and runs the others in order", () => {
    const flags = new Int32Array(new SharedArrayBuffer(3 * Int32Array.BYTES_PER_ELEMENT));
    Atomics.store(flags, 1, 1);
    const ran: number[] = [];
    const batch: WorkerRequest[] = [
      { type: "cancellations", flags },
      { type: "parse", id: 10, slot: 0, csr: "a" },
      { type: "parse", id: 11, slot: 1, csr: "b" },
      { type: "parse", id: 12, slot: 2, csr: "c" },
    ];
    const replies = runBatch(batch, {}, () => undefined, (job) => (ran.push(job.id), job.id));
    expect(ran).toEqual([10, 12]);
    expect(replies).toEqual([
      { id: 10, ok: true, value: 10 },
      { id: 11, ok: false, skipped: true, error: { code: "E_REQUEST_CANCELLED", message: expect.stringMatching(/not done/) } },
      { id: 12, ok: true, value: 12 },
    ]);
  });

  it("holds at most maxQueuedJobs (default MAX_QUEUED_JOBS_PER_WORKER per worker): past it a job is refused E_CA_BUSY at once", async () => {
    expect(MAX_QUEUED_JOBS_PER_WORKER).toBe(128);
    expect(caConfigSchema.shape.signingWorkers.description).toContain(`at most ${MAX_QUEUED_JOBS_PER_WORKER} requests each`);
    const own = new SigningPool(1, { maxQueuedJobs: 3 });
    try {
      const results = await Promise.all(Array.from({ length: 5 }, () => outcome(own.parseCsr(pem))));
      expect(results).toEqual(["ok", "ok", "ok", "E_CA_BUSY", "E_CA_BUSY"]);
      expect(own.stats).toMatchObject({ queued: 0, ran: 3, refusedBusy: 2 });
      expect(await outcome(own.parseCsr(pem))).toBe("ok");
    } finally {
      await own.close();
    }
  });
});

