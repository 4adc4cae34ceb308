/**
 * One thread of the signing pool: verifies CSRs and signs leaves off the CA's event loop.
 * It holds the active issuer's key as a KeyObject handed over by postMessage (a handle to the
 * same in-memory key, never serialised) and nothing else between jobs.
 */
import { X509Certificate } from "node:crypto";
import { parentPort } from "node:worker_threads";
import { parseCsr, type ParsedCsr } from "../pki/csr.ts";
import type { Signer } from "../pki/signer.ts";
import { signWorkloadCertificate } from "./issuer.ts";
import { runBatch, type SignJob, type WorkerJob, type WorkerRequest } from "./signing-pool.ts";

const port = parentPort;
if (port === null) throw new Error("signing-worker.ts runs only as a worker thread (see signing-pool.ts)");

let signer: { readonly generation: number; readonly signer: Signer } | undefined;
const state: { flags?: Int32Array } = {};

port.on("message", (messages: readonly WorkerRequest[]) => {
  const replies = runBatch(messages, state, useSigner, run);
  if (replies.length > 0) port.postMessage(replies);
});
port.postMessage("ready");

function useSigner(message: WorkerRequest): void {
  if (message.type !== "signer") return;
  const der = Buffer.from(message.der);
  signer = { generation: message.generation, signer: { certificate: new X509Certificate(der), der, privateKey: message.privateKey } };
}

function run(message: WorkerJob): unknown {
  return message.type === "parse" ? parseCsr(message.csr) : message.type === "issue" ? sign({ ...message, type: "sign", csr: parseCsr(message.csr) }) : sign(message);
}

function sign(message: SignJob) {
  if (signer === undefined || signer.generation !== message.generation) {
    throw new Error(`signing worker holds issuer generation ${signer?.generation ?? "none"}, the job needs ${message.generation}`);
  }
  // Structured clone turns Buffers into Uint8Arrays (a CSR parsed here already has a Buffer).
  const csr: ParsedCsr = Buffer.isBuffer(message.csr.der) ? message.csr : { ...message.csr, der: Buffer.from(message.csr.der) };
  return signWorkloadCertificate({ csr, identity: message.identity, signer: signer.signer, policy: message.policy, now: message.now });
}
