/**
 * One thread of the signing pool: verifies CSRs and signs leaves off the CA's event loop.
 * It holds the active issuer's key as a KeyObject handed over by postMessage (a handle to the
 * same in-memory key, never serialised) and nothing else between jobs.
 */
import { X509Certificate } from "node:crypto";
import { parentPort } from "node:worker_threads";
import { isMeshwardError } from "../errors.ts";
import { parseCsr, type ParsedCsr } from "../pki/csr.ts";
import type { Signer } from "../pki/signer.ts";
import { signWorkloadCertificate } from "./issuer.ts";
import type { SerializedError, SignJob, WorkerReply, WorkerRequest } from "./signing-pool.ts";

const port = parentPort;
if (port === null) throw new Error("signing-worker.ts runs only as a worker thread (see signing-pool.ts)");

let signer: { readonly generation: number; readonly signer: Signer } | undefined;

port.on("message", (messages: readonly WorkerRequest[]) => {
  const replies: WorkerReply[] = [];
  for (const message of messages) {
    if (message.type === "signer") {
      const der = Buffer.from(message.der);
      signer = { generation: message.generation, signer: { certificate: new X509Certificate(der), der, privateKey: message.privateKey } };
      continue;
    }
    try {
      const value = message.type === "parse" ? parseCsr(message.csr) : message.type === "issue" ? sign({ ...message, type: "sign", csr: parseCsr(message.csr) }) : sign(message);
      replies.push({ id: message.id, ok: true, value });
    } catch (error) {
      replies.push({ id: message.id, ok: false, error: serializeError(error) });
    }
  }
  if (replies.length > 0) port.postMessage(replies);
});
port.postMessage("ready");

function sign(message: SignJob) {
  if (signer === undefined || signer.generation !== message.generation) {
    throw new Error(`signing worker holds issuer generation ${signer?.generation ?? "none"}, the job needs ${message.generation}`);
  }
  // Structured clone turns Buffers into Uint8Arrays (a CSR parsed here already has a Buffer).
  const csr: ParsedCsr = Buffer.isBuffer(message.csr.der) ? message.csr : { ...message.csr, der: Buffer.from(message.csr.der) };
  return signWorkloadCertificate({ csr, identity: message.identity, signer: signer.signer, policy: message.policy, now: message.now });
}

function serializeError(error: unknown): SerializedError {
  if (isMeshwardError(error)) {
    return { code: error.code, message: error.message, ...(error.details !== undefined ? { details: error.details } : {}) };
  }
  return { message: error instanceof Error ? error.message : String(error) };
}
