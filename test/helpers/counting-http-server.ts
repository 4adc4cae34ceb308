import { Worker } from "node:worker_threads";

/**
 * A loopback HTTP server that answers every request with `body` and counts the TCP connections it
 * accepts: the "remote" a test proves was (or was not) reached. It runs in a worker thread, so it
 * answers while the test's main thread blocks on a child process (`kubectl kustomize` run with
 * execFileSync).
 */
export interface CountingHttpServer {
  readonly port: number;
  /** Connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

export async function startCountingHttpServer(body: string): Promise<CountingHttpServer> {
  const counter = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `
    const { parentPort, workerData } = require("node:worker_threads");
    const http = require("node:http");
    const connections = new Int32Array(workerData.buffer);
    const server = http.createServer((request, response) => response.end(workerData.body));
    server.on("connection", () => Atomics.add(connections, 0, 1));
    server.listen(0, "127.0.0.1", () => parentPort.postMessage(server.address().port));
  `,
    { eval: true, workerData: { buffer: counter.buffer, body } },
  );
  const port = await new Promise<number>((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });
  return {
    port,
    connections: () => Atomics.load(counter, 0),
    close: async () => {
      await worker.terminate();
    },
  };
}
