/** The writer thread of SqliteWriter: a SqliteStore of its own that only records issuances. */
import { parentPort, workerData } from "node:worker_threads";
import { isMeshwardError } from "../errors.ts";
import { openSqliteStore } from "./sqlite.ts";
import type { WriterReply, WriterRequest } from "./sqlite-writer.ts";

const port = parentPort;
if (port === null) throw new Error("sqlite-writer-worker.ts runs only as a worker thread (see sqlite-writer.ts)");
const store = openSqliteStore((workerData as { path: string }).path, { writerThread: false });

port.on("message", (message: WriterRequest) => {
  // Every record() of this message joins the store's group commit: one transaction, one fsync.
  void Promise.all(
    message.batch.map(({ id, record }) =>
      store.recordIssuance(record).then(
        () => ({ id }),
        (error: unknown) => ({ id, error: isMeshwardError(error) ? { code: error.code, message: error.message } : { message: error instanceof Error ? error.message : String(error) } }),
      ),
    ),
  ).then((results) => port.postMessage({ type: "results", results } satisfies WriterReply));
});
port.postMessage({ type: "ready" } satisfies WriterReply);
