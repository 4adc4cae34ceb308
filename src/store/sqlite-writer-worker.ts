/** The writer thread of SqliteWriter: a SqliteStore of its own that makes the store's writes. */
import { parentPort, workerData } from "node:worker_threads";
import { isMeshwardError } from "../errors.ts";
import { openSqliteStore } from "./sqlite.ts";
import type { StoredCrl } from "./store.ts";
import type { WriterReply, WriterRequest } from "./sqlite-writer.ts";

const port = parentPort;
if (port === null) throw new Error("sqlite-writer-worker.ts runs only as a worker thread (see sqlite-writer.ts)");
const { path, caDirectory } = workerData as { path: string; caDirectory?: string };
const store = openSqliteStore(path, { writerThread: false, ...(caDirectory !== undefined ? { caDirectory } : {}) });

port.on("message", (message: WriterRequest) => {
  // Every issuance of this message joins the store's group commit: one transaction, one fsync.
  void Promise.all(
    message.batch.map(({ id, method, args }) => {
      // A Buffer arrives as a plain Uint8Array, which SQLite would not bind as a blob.
      if (method === "publishCrl") {
        const crl = args[0] as StoredCrl;
        const blob = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        args = [{ ...crl, der: blob(crl.der), ...(crl.others !== undefined ? { others: crl.others.map(blob) } : {}) }];
      }
      const run = (store[method] as (...a: readonly unknown[]) => Promise<unknown>).bind(store);
      return Promise.resolve()
        .then(() => run(...args))
        .then(
          (value) => ({ id, value }),
          (error: unknown) => ({
            id,
            error: isMeshwardError(error)
              ? { code: error.code, message: error.message, ...(error.details !== undefined ? { details: { ...error.details } } : {}) }
              : { message: error instanceof Error ? error.message : String(error) },
          }),
        );
    }),
  ).then((results) => {
    try {
      port.postMessage({ type: "results", results } satisfies WriterReply);
    } catch {
      // An error's details that do not clone: the callers still get their answers, without them.
      port.postMessage({ type: "results", results: results.map((r) => ("error" in r && r.error !== undefined ? { id: r.id, error: { ...r.error, details: undefined } } : r)) } satisfies WriterReply);
    }
  });
});
port.postMessage({ type: "ready" } satisfies WriterReply);
