import type { Worker } from "node:worker_threads";
import { MeshwardError, type ErrorCode } from "../errors.ts";
import { startMeshwardWorker } from "../util/worker-thread.ts";
import type { Store } from "./store.ts";

/** The store's writes, which SqliteWriter runs on its thread (reads stay on the caller's connection). */
export const WRITER_METHODS = [
  "recordIssuance",
  "recordIssuanceSpendingToken",
  "consumeToken",
  "createToken",
  "revoke",
  "revokeLineage",
  "nextCrlNumber",
  "raiseCrlNumber",
  "writeCaFiles",
  "publishCrl",
  "probeWrite",
] as const satisfies readonly (keyof Store)[];
export type WriterMethod = (typeof WRITER_METHODS)[number];
type Args<M extends WriterMethod> = Parameters<NonNullable<Store[M]>>;
type Result<M extends WriterMethod> = Awaited<ReturnType<NonNullable<Store[M]>>>;

/** Messages between SqliteWriter and sqlite-writer-worker.ts. */
export type WriterRequest = { readonly type: "calls"; readonly batch: readonly { readonly id: number; readonly method: WriterMethod; readonly args: readonly unknown[] }[] };
export type WriterReply =
  | { readonly type: "ready" }
  | {
      readonly type: "results";
      readonly results: readonly { readonly id: number; readonly value?: unknown; readonly error?: { readonly code?: ErrorCode; readonly message: string; readonly details?: Record<string, unknown> } }[];
    };

interface Pending {
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Runs the store's writes through a second connection owned by a worker thread, so that neither
 * the fsync of a commit (synchronous=FULL) nor a wait for the write lock (another process holds
 * it: an admin command, another CA process; up to the busy timeout, 5 s) blocks the CA's event
 * loop: bundle, CRL, health and other sign requests are answered meanwhile. The worker runs a
 * SqliteStore of its own: same group commit for issuances, same durability, same errors
 * (E_STORE_CONFLICT for a duplicate serial, to that caller only); a caller's promise settles only
 * after its transaction committed or failed, so a read on the main connection then sees it (WAL).
 */
export class SqliteWriter {
  readonly #worker: Worker;
  /** Settles once the thread has opened its connection. */
  readonly started: Promise<void>;
  readonly #pending = new Map<number, Pending>();
  #queue: { id: number; method: WriterMethod; args: readonly unknown[] }[] = [];
  #nextId = 1;
  #failure: Error | undefined;
  #closing: Promise<void> | undefined;

  /** `caDirectory`: as the store's (SqliteStoreOptions), so that the thread's connection is checked by the same rule. */
  constructor(path: string, caDirectory?: string) {
    this.#worker = startWriterWorker(path, caDirectory);
    this.#worker.unref();
    this.started = new Promise((resolve, reject) => {
      this.#worker.once("message", () => resolve());
      this.#worker.once("error", reject);
      this.#worker.once("exit", (code) => reject(new Error(`exit code ${code}`)));
    });
    this.started.catch(() => undefined);
    this.#worker.on("message", (reply: WriterReply) => {
      if (reply.type !== "results") return;
      for (const result of reply.results) {
        const pending = this.#pending.get(result.id);
        if (pending === undefined) continue;
        this.#pending.delete(result.id);
        const error = result.error;
        if (error === undefined) pending.resolve(result.value);
        else pending.reject(error.code === undefined ? new Error(error.message) : new MeshwardError(error.code, error.message, error.details === undefined ? {} : { details: error.details }));
      }
      if (this.#pending.size === 0) this.#worker.unref();
    });
    const lost = (cause: Error) => {
      this.#failure = new MeshwardError("E_STORE_WRITE", `the store's writer thread stopped (${cause.message}); restart the CA`, { cause });
      const pending = [...this.#pending.values()];
      this.#pending.clear();
      for (const p of pending) p.reject(this.#failure);
    };
    this.#worker.on("error", lost);
    this.#worker.on("exit", (code) => lost(new Error(`exit code ${code}`)));
  }

  /** Runs the store's `method` on the writer thread; settles once its transaction has committed (or failed). */
  call<M extends WriterMethod>(method: M, ...args: Args<M>): Promise<Result<M>> {
    if (this.#closing !== undefined) return Promise.reject(new MeshwardError("E_STORE_CLOSED", "the store was closed before the write was made"));
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      if (this.#pending.size === 0) this.#worker.ref();
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      // One message per turn of the event loop carries every write of that turn (issuances of
      // one turn share a transaction there).
      this.#queue.push({ id, method, args });
      if (this.#queue.length === 1) setImmediate(() => this.#send());
    });
  }

  record(record: Args<"recordIssuance">[0]): Promise<void> {
    return this.call("recordIssuance", record);
  }

  /** Waits for every write to be answered, then stops the thread. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#send();
      while (this.#pending.size > 0 && this.#failure === undefined) await new Promise((resolve) => setTimeout(resolve, 5));
      await this.#worker.terminate();
    })();
    return this.#closing;
  }

  #send(): void {
    const batch = this.#queue;
    if (batch.length === 0) return;
    this.#queue = [];
    this.#worker.postMessage({ type: "calls", batch } satisfies WriterRequest);
  }
}

function startWriterWorker(path: string, caDirectory: string | undefined): Worker {
  return startMeshwardWorker(import.meta.url, "sqlite-writer-worker", { workerData: { path, caDirectory } });
}
