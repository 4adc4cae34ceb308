import type { Worker } from "node:worker_threads";
import { MeshwardError, type ErrorCode } from "../errors.ts";
import { startMeshwardWorker } from "../util/worker-thread.ts";
import type { IssuanceRecord } from "./store.ts";

/** Messages between SqliteWriter and sqlite-writer-worker.ts. */
export type WriterRequest = { readonly type: "record"; readonly batch: readonly { readonly id: number; readonly record: IssuanceRecord }[] };
export type WriterReply =
  | { readonly type: "ready" }
  | { readonly type: "results"; readonly results: readonly { readonly id: number; readonly error?: { readonly code?: ErrorCode; readonly message: string } }[] };

interface Pending {
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Records issuances through a second connection owned by a worker thread, so the fsync of
 * each group commit (synchronous=FULL) blocks that thread instead of the CA's event loop.
 * The worker runs a SqliteStore of its own: same group commit, same durability, same errors
 * (E_STORE_CONFLICT for a duplicate serial, to that caller only); a caller's promise resolves
 * only after its row is committed, so a read on the main connection sees it (WAL).
 */
export class SqliteWriter {
  readonly #worker: Worker;
  /** Settles once the thread has opened its connection. */
  readonly started: Promise<void>;
  readonly #pending = new Map<number, Pending>();
  #queue: { id: number; record: IssuanceRecord }[] = [];
  #nextId = 1;
  #failure: Error | undefined;
  #closing: Promise<void> | undefined;

  constructor(path: string) {
    this.#worker = startWriterWorker(path);
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
        if (result.error === undefined) pending.resolve();
        else pending.reject(result.error.code === undefined ? new Error(result.error.message) : new MeshwardError(result.error.code, result.error.message));
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

  record(record: IssuanceRecord): Promise<void> {
    if (this.#closing !== undefined) return Promise.reject(new MeshwardError("E_STORE_CLOSED", "the store was closed before the issuance was recorded"));
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      if (this.#pending.size === 0) this.#worker.ref();
      this.#pending.set(id, { resolve, reject });
      // One message per turn of the event loop carries every issuance of that turn.
      this.#queue.push({ id, record });
      if (this.#queue.length === 1) setImmediate(() => this.#send());
    });
  }

  /** Waits for every recorded issuance to be answered, then stops the thread. */
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
    this.#worker.postMessage({ type: "record", batch } satisfies WriterRequest);
  }
}

function startWriterWorker(path: string): Worker {
  return startMeshwardWorker(import.meta.url, "sqlite-writer-worker", { workerData: { path } });
}
