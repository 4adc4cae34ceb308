import type { KeyObject } from "node:crypto";
import { availableParallelism } from "node:os";
import type { Worker } from "node:worker_threads";
import { MeshwardError, type ErrorCode } from "../errors.ts";
import { parseCsr, type ParsedCsr } from "../pki/csr.ts";
import type { Signer } from "../pki/signer.ts";
import { startMeshwardWorker } from "../util/worker-thread.ts";
import type { AttestedIdentity } from "./attest/attestor.ts";
import { signWorkloadCertificate, type SignedLeaf, type SigningPolicy } from "./issuer.ts";

export interface SignInput {
  readonly csr: ParsedCsr;
  readonly identity: AttestedIdentity;
  readonly signer: Signer;
  readonly policy: SigningPolicy;
  readonly now: Date;
}

/** SignInput with the CSR as the workload sent it: checked and signed in one step. */
export interface IssueInput extends Omit<SignInput, "csr"> {
  readonly csr: string | Uint8Array;
}

/** The CPU-heavy half of issuance (CSR proof-of-possession check, leaf signing), same errors wherever it runs. */
export interface CsrSigning {
  parseCsr(csr: string | Uint8Array): Promise<ParsedCsr>;
  sign(input: SignInput): Promise<SignedLeaf>;
  /** parseCsr then sign, in one trip to a worker (half the messages of the two calls). */
  issue(input: IssueInput): Promise<SignedLeaf>;
  close(): Promise<void>;
}

/** On the calling thread: for tests, tiny deployments and `signingWorkers: 0`. */
export const inlineSigning: CsrSigning = {
  parseCsr: async (csr) => parseCsr(csr),
  sign: async (input) => signWorkloadCertificate(input),
  issue: async (input) => signWorkloadCertificate({ ...input, csr: parseCsr(input.csr) }),
  close: async () => undefined,
};

// ---------------------------------------------------------------- messages (shared with signing-worker.ts)
// The pool posts WorkerRequest[] (in order), the worker answers each batch with WorkerReply[].

export interface SignJob {
  readonly type: "sign";
  readonly id: number;
  readonly generation: number;
  readonly csr: ParsedCsr;
  readonly identity: AttestedIdentity;
  readonly policy: SigningPolicy;
  readonly now: Date;
}

export interface IssueJob extends Omit<SignJob, "type" | "csr"> {
  readonly type: "issue";
  readonly csr: string | Uint8Array;
}

export type WorkerRequest =
  | { readonly type: "signer"; readonly generation: number; readonly der: Uint8Array; readonly privateKey: KeyObject }
  | { readonly type: "parse"; readonly id: number; readonly csr: string | Uint8Array }
  | SignJob
  | IssueJob;

export interface SerializedError {
  readonly code?: ErrorCode;
  readonly message: string;
  readonly details?: Readonly<Record<string, unknown>>;
}

export type WorkerReply =
  | { readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly id: number; readonly ok: false; readonly error: SerializedError };

// ---------------------------------------------------------------- pool

interface PendingJob {
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

interface PoolThread {
  readonly worker: Worker;
  readonly started: Promise<void>;
  readonly pending: Map<number, PendingJob>;
  /** Messages not posted yet, in order: those of this turn of the event loop, or all since the worker got busy. */
  outbox: WorkerRequest[];
  /** Batches with at least one job posted and not answered yet (the worker answers each such batch once). */
  inFlight: number;
  ready: boolean;
}

/**
 * Batches a worker holds at most: one it works on and one queued behind it, so it never waits
 * for the event loop between batches. Jobs that come while both are out wait in the outbox and
 * go together when the first answer comes back: under load the batches grow instead of the
 * wake-ups (on 2 cores, 64 clients: ~5 jobs a batch made the worker spend 190 µs a certificate
 * against 144 µs with large batches). An idle worker still gets a job in the same turn.
 */
const MAX_BATCHES_IN_FLIGHT = 2;

/**
 * Worker threads that verify CSRs and sign leaves, so the CA's event loop keeps only TLS,
 * HTTP/2, attestation and the store. The issuer travels to the workers as a KeyObject
 * (postMessage shares the in-memory key; nothing is written anywhere); a request signed with
 * a different Signer than the last one (anchors rotated) re-sends it first, and each worker
 * handles its messages in order, so a job always finds the issuer it was meant for.
 */
export class SigningPool implements CsrSigning {
  readonly size: number;
  readonly #threads: PoolThread[] = [];
  #nextId = 1;
  #signer: Signer | undefined;
  #generation = 0;
  #closed = false;
  #broken: Error | undefined;
  #running = 0;
  #flushScheduled = false;

  constructor(size: number) {
    if (!Number.isInteger(size) || size < 1) throw new MeshwardError("E_CONFIG_INVALID", `the signing pool needs at least one worker (got ${size})`);
    this.size = size;
    for (let i = 0; i < size; i++) this.#threads.push(this.#spawn());
  }

  /** Resolves once every worker has loaded its code (jobs posted earlier wait for that anyway). */
  async ready(): Promise<void> {
    await Promise.all(this.#threads.map((thread) => thread.started));
  }

  /** Worker threads started and not yet exited (0 once close() has resolved). */
  get running(): number {
    return this.#running;
  }

  async parseCsr(csr: string | Uint8Array): Promise<ParsedCsr> {
    const parsed = (await this.#run((id) => ({ type: "parse", id, csr }))) as ParsedCsr;
    return { ...parsed, der: toBuffer(parsed.der) };
  }

  async sign(input: SignInput): Promise<SignedLeaf> {
    const { csr, identity, policy, now } = input;
    return await this.#signLeaf(input.signer, (id, generation) => ({ type: "sign", id, generation, csr, identity, policy, now }));
  }

  async issue(input: IssueInput): Promise<SignedLeaf> {
    const { csr, identity, policy, now } = input;
    return await this.#signLeaf(input.signer, (id, generation) => ({ type: "issue", id, generation, csr, identity, policy, now }));
  }

  /** Stops every worker; jobs still running are refused with E_SIGNING_CLOSED. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const threads = this.#threads.splice(0);
    for (const thread of threads) this.#failPending(thread, new MeshwardError("E_SIGNING_CLOSED", "the CA is shutting down; retry against a running CA"));
    await Promise.all(threads.map((thread) => thread.worker.terminate()));
  }

  async #signLeaf(signer: Signer, job: (id: number, generation: number) => SignJob | IssueJob): Promise<SignedLeaf> {
    if (signer !== this.#signer) this.#useSigner(signer);
    const generation = this.#generation;
    const leaf = (await this.#run((id) => job(id, generation))) as SignedLeaf;
    return { ...leaf, der: toBuffer(leaf.der) };
  }

  #useSigner(signer: Signer): void {
    this.#signer = signer;
    this.#generation += 1;
    for (const thread of this.#threads) this.#sendSigner(thread);
  }

  #sendSigner(thread: PoolThread): void {
    if (this.#signer === undefined) return;
    this.#post(thread, { type: "signer", generation: this.#generation, der: this.#signer.der, privateKey: this.#signer.privateKey });
  }

  #post(thread: PoolThread, message: WorkerRequest): void {
    thread.outbox.push(message);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      for (const each of this.#threads) this.#flush(each);
    });
  }

  /** Posts the outbox unless the worker already holds MAX_BATCHES_IN_FLIGHT batches of jobs. */
  #flush(thread: PoolThread): void {
    if (thread.outbox.length === 0) return;
    const hasJob = thread.outbox.some((message) => message.type !== "signer");
    if (hasJob && thread.inFlight >= MAX_BATCHES_IN_FLIGHT) return;
    if (hasJob) thread.inFlight += 1;
    thread.worker.postMessage(thread.outbox);
    thread.outbox = [];
  }

  #run(job: (id: number) => WorkerRequest): Promise<unknown> {
    if (this.#closed) return Promise.reject(new MeshwardError("E_SIGNING_CLOSED", "the CA is shutting down; retry against a running CA"));
    if (this.#broken !== undefined) return Promise.reject(this.#broken);
    let thread = this.#threads[0]!;
    for (const candidate of this.#threads) if (candidate.pending.size < thread.pending.size) thread = candidate;
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      if (thread.pending.size === 0) thread.worker.ref();
      thread.pending.set(id, { resolve, reject });
      this.#post(thread, job(id));
    });
  }

  #spawn(): PoolThread {
    const worker = startWorker();
    this.#running += 1;
    let started!: () => void;
    let failed!: (error: Error) => void;
    const thread: PoolThread = { worker, started: new Promise((resolve, reject) => ((started = resolve), (failed = reject))), pending: new Map(), outbox: [], inFlight: 0, ready: false };
    thread.started.catch(() => undefined);
    worker.unref();
    worker.once("error", (error) => failed(error));
    worker.once("exit", (code) => failed(new Error(`signing worker exited with code ${code} while starting`)));
    worker.on("message", (replies: readonly WorkerReply[] | "ready") => {
      if (replies === "ready") {
        thread.ready = true;
        started();
        return;
      }
      // The worker answers each batch that held a job with exactly one message.
      thread.inFlight = Math.max(0, thread.inFlight - 1);
      this.#flush(thread);
      for (const reply of replies) {
        const job = thread.pending.get(reply.id);
        if (job === undefined) continue;
        thread.pending.delete(reply.id);
        if (reply.ok) job.resolve(reply.value);
        else job.reject(reviveError(reply.error));
      }
      if (thread.pending.size === 0) worker.unref();
    });
    worker.on("error", (error) => this.#lost(thread, error));
    worker.on("exit", (code) => {
      this.#running -= 1;
      this.#lost(thread, new Error(`signing worker exited with code ${code}`));
    });
    this.#sendSigner(thread);
    return thread;
  }

  #lost(thread: PoolThread, cause: Error): void {
    this.#failPending(thread, new Error(`a signing worker stopped: ${cause.message}`, { cause }));
    const index = this.#threads.indexOf(thread);
    if (index < 0 || this.#closed) return;
    if (!thread.ready) {
      // It never started (e.g. its module failed to load): a replacement would fail the same way.
      this.#broken = new Error(`the signing workers cannot start: ${cause.message}`, { cause });
      return;
    }
    this.#threads[index] = this.#spawn();
  }

  #failPending(thread: PoolThread, error: Error): void {
    const jobs = [...thread.pending.values()];
    thread.pending.clear();
    for (const job of jobs) job.reject(error);
  }
}

/**
 * The pool size when the configuration names none: one worker per CPU beside the one the event
 * loop needs (TLS, HTTP/2, attestation). Measured on 2 cores: 1 worker signs as fast as 2 and
 * costs less CPU per certificate; on 1 core the messages cost more than they save (0: inline).
 */
export function defaultSigningWorkers(): number {
  return availableParallelism() - 1;
}

function reviveError(error: SerializedError): Error {
  if (error.code === undefined) return new Error(error.message);
  return new MeshwardError(error.code, error.message, error.details === undefined ? {} : { details: { ...error.details } });
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function startWorker(): Worker {
  return startMeshwardWorker(import.meta.url, "signing-worker");
}
