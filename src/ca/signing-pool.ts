import type { KeyObject } from "node:crypto";
import { availableParallelism } from "node:os";
import type { Worker } from "node:worker_threads";
import { isMeshwardError, MeshwardError, type ErrorCode } from "../errors.ts";
import { parseCsr, type ParsedCsr } from "../pki/csr.ts";
import type { Signer } from "../pki/signer.ts";
import { throwIfCancelled } from "../util/abort.ts";
import { startMeshwardWorker } from "../util/worker-thread.ts";
import type { AttestedIdentity } from "./attest/attestor.ts";
import { signWorkloadCertificate, type SignedLeaf, type SigningPolicy } from "./issuer.ts";

export interface SignInput {
  readonly csr: ParsedCsr;
  readonly identity: AttestedIdentity;
  readonly signer: Signer;
  readonly policy: SigningPolicy;
  readonly now: Date;
  /** The caller's lifetime (SignRequest.signal): once aborted, the job is dropped wherever it waits. */
  readonly signal?: AbortSignal;
}

/** SignInput with the CSR as the workload sent it: checked and signed in one step. */
export interface IssueInput extends Omit<SignInput, "csr"> {
  readonly csr: string | Uint8Array;
}

/**
 * The CPU-heavy half of issuance (CSR proof-of-possession check, leaf signing), same errors wherever it runs.
 * A job whose `signal` has aborted is refused with the abort's reason (E_REQUEST_CANCELLED,
 * E_REQUEST_TIMEOUT) and its work is not done, if it has not started yet.
 */
export interface CsrSigning {
  parseCsr(csr: string | Uint8Array, signal?: AbortSignal): Promise<ParsedCsr>;
  sign(input: SignInput): Promise<SignedLeaf>;
  /** parseCsr then sign, in one trip to a worker (half the messages of the two calls). */
  issue(input: IssueInput): Promise<SignedLeaf>;
  close(): Promise<void>;
}

/** On the calling thread: for tests, tiny deployments and `signingWorkers: 0`. */
export const inlineSigning: CsrSigning = {
  parseCsr: async (csr, signal) => (throwIfCancelled(signal), parseCsr(csr)),
  sign: async ({ signal, ...input }) => (throwIfCancelled(signal), signWorkloadCertificate(input)),
  issue: async ({ signal, ...input }) => (throwIfCancelled(signal), signWorkloadCertificate({ ...input, csr: parseCsr(input.csr) })),
  close: async () => undefined,
};

// ---------------------------------------------------------------- messages (shared with signing-worker.ts)
// The pool posts WorkerRequest[] (in order), the worker answers each batch with WorkerReply[].

export interface SignJob {
  readonly type: "sign";
  readonly id: number;
  /** Index in the worker's cancellation flags (see WorkerRequest "cancellations"). */
  readonly slot: number;
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
  /** Once, first: flags over shared memory, one per job slot; 1 = the job's caller is gone, skip it. */
  | { readonly type: "cancellations"; readonly flags: Int32Array }
  | { readonly type: "parse"; readonly id: number; readonly slot: number; readonly csr: string | Uint8Array }
  | SignJob
  | IssueJob;

export interface SerializedError {
  readonly code?: ErrorCode;
  readonly message: string;
  readonly details?: Readonly<Record<string, unknown>>;
}

export type WorkerReply =
  | { readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly id: number; readonly ok: false; readonly error: SerializedError; readonly skipped?: true };

export type WorkerJob = Extract<WorkerRequest, { readonly id: number }>;

/**
 * What a worker does with one batch (signing-worker.ts; here so that it can be tested on its own).
 * A job whose flag is set is answered `skipped` without being run.
 */
export function runBatch(messages: readonly WorkerRequest[], state: { flags?: Int32Array }, handle: (message: WorkerRequest) => void, run: (job: WorkerJob) => unknown): WorkerReply[] {
  const replies: WorkerReply[] = [];
  for (const message of messages) {
    if (message.type === "cancellations") {
      state.flags = message.flags;
      continue;
    }
    if (message.type === "signer") {
      handle(message);
      continue;
    }
    if (state.flags !== undefined && Atomics.load(state.flags, message.slot) !== 0) {
      replies.push({ id: message.id, ok: false, skipped: true, error: { code: "E_REQUEST_CANCELLED", message: "the caller gave up before the signing worker reached this job; it was not done" } });
      continue;
    }
    try {
      replies.push({ id: message.id, ok: true, value: run(message) });
    } catch (error) {
      replies.push({ id: message.id, ok: false, error: serializeError(error) });
    }
  }
  return replies;
}

export function serializeError(error: unknown): SerializedError {
  if (isMeshwardError(error)) {
    return { code: error.code, message: error.message, ...(error.details !== undefined ? { details: error.details } : {}) };
  }
  return { message: error instanceof Error ? error.message : String(error) };
}

// ---------------------------------------------------------------- pool

interface PendingJob {
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
  readonly slot: number;
  /** The message, while it waits in the outbox (undefined once posted). */
  queued: WorkerJob | undefined;
  /** The caller gave up after it was posted: its promise is settled, the reply only frees the slot. */
  abandoned: boolean;
  readonly forget: () => void;
}

interface PoolThread {
  readonly worker: Worker;
  readonly started: Promise<void>;
  readonly pending: Map<number, PendingJob>;
  /** One flag per job slot, shared with the worker; a slot is free again once the worker answered its job. */
  readonly flags: Int32Array;
  readonly freeSlots: number[];
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
 * Jobs the pool holds at most per worker, waiting or running; past it a request is refused
 * RESOURCE_EXHAUSTED (E_CA_BUSY) at once, and the client retries with backoff. At 0.2–5 ms a job
 * (P-256 to RSA-4096 CSRs), a full queue is at most ~0.6 s of work, well inside daprd's 3 s per
 * attempt; without a bound, calls sent and reset at will queued tens of seconds of work.
 */
export const MAX_QUEUED_JOBS_PER_WORKER = 128;

export interface SigningPoolOptions {
  /** Jobs held at once, all workers together (default: MAX_QUEUED_JOBS_PER_WORKER per worker). */
  readonly maxQueuedJobs?: number;
}

/** What became of the pool's jobs (for tests and the status page). */
export interface SigningPoolStats {
  /** Jobs held now, waiting or running. */
  readonly queued: number;
  /** Jobs a worker ran (done or refused by the CSR/policy checks). */
  readonly ran: number;
  /** Jobs whose caller left before they were posted: never sent to a worker. */
  readonly droppedBeforePosting: number;
  /** Jobs whose caller left after they were posted: the worker skipped them. */
  readonly skippedInWorker: number;
  /** Jobs refused E_CA_BUSY because the pool held maxQueuedJobs. */
  readonly refusedBusy: number;
}

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
  readonly #maxQueued: number;
  #queued = 0;
  #stats = { ran: 0, droppedBeforePosting: 0, skippedInWorker: 0, refusedBusy: 0 };

  constructor(size: number, options: SigningPoolOptions = {}) {
    if (!Number.isInteger(size) || size < 1) throw new MeshwardError("E_CONFIG_INVALID", `the signing pool needs at least one worker (got ${size})`);
    this.size = size;
    this.#maxQueued = options.maxQueuedJobs ?? MAX_QUEUED_JOBS_PER_WORKER * size;
    if (!Number.isInteger(this.#maxQueued) || this.#maxQueued < 1) throw new MeshwardError("E_CONFIG_INVALID", `the signing pool must hold at least one job (got ${this.#maxQueued})`);
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

  get stats(): SigningPoolStats {
    return { queued: this.#queued, ...this.#stats };
  }

  async parseCsr(csr: string | Uint8Array, signal?: AbortSignal): Promise<ParsedCsr> {
    const parsed = (await this.#run((id, slot) => ({ type: "parse", id, slot, csr }), signal)) as ParsedCsr;
    return { ...parsed, der: toBuffer(parsed.der) };
  }

  async sign(input: SignInput): Promise<SignedLeaf> {
    const { csr, identity, policy, now } = input;
    return await this.#signLeaf(input.signer, input.signal, (id, slot, generation) => ({ type: "sign", id, slot, generation, csr, identity, policy, now }));
  }

  async issue(input: IssueInput): Promise<SignedLeaf> {
    const { csr, identity, policy, now } = input;
    return await this.#signLeaf(input.signer, input.signal, (id, slot, generation) => ({ type: "issue", id, slot, generation, csr, identity, policy, now }));
  }

  /** Stops every worker; jobs still running are refused with E_SIGNING_CLOSED. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const threads = this.#threads.splice(0);
    for (const thread of threads) this.#failPending(thread, new MeshwardError("E_SIGNING_CLOSED", "the CA is shutting down; retry against a running CA"));
    await Promise.all(threads.map((thread) => thread.worker.terminate()));
  }

  async #signLeaf(signer: Signer, signal: AbortSignal | undefined, job: (id: number, slot: number, generation: number) => SignJob | IssueJob): Promise<SignedLeaf> {
    throwIfCancelled(signal);
    if (signer !== this.#signer) this.#useSigner(signer);
    const generation = this.#generation;
    const leaf = (await this.#run((id, slot) => job(id, slot, generation), signal)) as SignedLeaf;
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
    const hasJob = thread.outbox.some((message) => message.type !== "signer" && message.type !== "cancellations");
    if (hasJob && thread.inFlight >= MAX_BATCHES_IN_FLIGHT) return;
    if (hasJob) thread.inFlight += 1;
    for (const message of thread.outbox) {
      if (message.type === "signer" || message.type === "cancellations") continue;
      const entry = thread.pending.get(message.id);
      if (entry !== undefined) entry.queued = undefined;
    }
    thread.worker.postMessage(thread.outbox);
    thread.outbox = [];
  }

  #run(job: (id: number, slot: number) => WorkerJob, signal: AbortSignal | undefined): Promise<unknown> {
    if (this.#closed) return Promise.reject(new MeshwardError("E_SIGNING_CLOSED", "the CA is shutting down; retry against a running CA"));
    if (this.#broken !== undefined) return Promise.reject(this.#broken);
    try {
      throwIfCancelled(signal);
    } catch (error) {
      return Promise.reject(error);
    }
    let thread = this.#threads[0]!;
    for (const candidate of this.#threads) if (candidate.pending.size < thread.pending.size) thread = candidate;
    const slot = thread.freeSlots.pop();
    if (this.#queued >= this.#maxQueued || slot === undefined) {
      if (slot !== undefined) thread.freeSlots.push(slot);
      this.#stats.refusedBusy += 1;
      return Promise.reject(new MeshwardError("E_CA_BUSY", `the CA's signing workers already hold ${this.#queued} requests; retry with backoff`));
    }
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      if (thread.pending.size === 0) thread.worker.ref();
      const message = job(id, slot);
      const onAbort = () => this.#cancel(thread, id, signal!);
      const entry: PendingJob = { resolve, reject, slot, queued: message, abandoned: false, forget: () => signal?.removeEventListener("abort", onAbort) };
      Atomics.store(thread.flags, slot, 0);
      thread.pending.set(id, entry);
      this.#queued += 1;
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#post(thread, message);
    });
  }

  /** The caller of job `id` is gone: drop the job from the outbox, or have the worker skip it; its promise is refused now. */
  #cancel(thread: PoolThread, id: number, signal: AbortSignal): void {
    const entry = thread.pending.get(id);
    if (entry === undefined || entry.abandoned) return;
    let reason: unknown;
    try {
      throwIfCancelled(signal);
    } catch (error) {
      reason = error;
    }
    if (entry.queued !== undefined) {
      const index = thread.outbox.indexOf(entry.queued);
      if (index >= 0) thread.outbox.splice(index, 1);
      this.#settle(thread, id, entry);
      this.#stats.droppedBeforePosting += 1;
    } else {
      Atomics.store(thread.flags, entry.slot, 1);
      entry.abandoned = true;
      entry.forget();
    }
    entry.reject(reason);
  }

  /** Forgets job `id`: its slot is free again and it no longer counts against maxQueuedJobs. */
  #settle(thread: PoolThread, id: number, entry: PendingJob): void {
    thread.pending.delete(id);
    thread.freeSlots.push(entry.slot);
    this.#queued -= 1;
    entry.forget();
    if (thread.pending.size === 0) thread.worker.unref();
  }

  #spawn(): PoolThread {
    const worker = startWorker();
    this.#running += 1;
    let started!: () => void;
    let failed!: (error: Error) => void;
    const slots = this.#maxQueued;
    const flags = new Int32Array(new SharedArrayBuffer(slots * Int32Array.BYTES_PER_ELEMENT));
    const freeSlots = Array.from({ length: slots }, (_, i) => slots - 1 - i);
    const thread: PoolThread = { worker, started: new Promise((resolve, reject) => ((started = resolve), (failed = reject))), pending: new Map(), flags, freeSlots, outbox: [], inFlight: 0, ready: false };
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
        this.#settle(thread, reply.id, job);
        if (!reply.ok && reply.skipped === true) this.#stats.skippedInWorker += 1;
        else this.#stats.ran += 1;
        if (job.abandoned) continue;
        if (reply.ok) job.resolve(reply.value);
        else job.reject(reviveError(reply.error));
      }
    });
    worker.on("error", (error) => this.#lost(thread, error));
    worker.on("exit", (code) => {
      this.#running -= 1;
      this.#lost(thread, new Error(`signing worker exited with code ${code}`));
    });
    thread.outbox.push({ type: "cancellations", flags });
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
    const jobs = [...thread.pending.entries()];
    for (const [id, job] of jobs) this.#settle(thread, id, job);
    thread.outbox = thread.outbox.filter((message) => message.type === "signer" || message.type === "cancellations");
    for (const [, job] of jobs) if (!job.abandoned) job.reject(error);
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
