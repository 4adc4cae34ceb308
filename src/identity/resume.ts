import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { Logger } from "pino";
import { describeError } from "../errors.ts";
import { inspectCertificate, toX509 } from "../pki/inspect.ts";
import { decodePrivateKey, keysMatch } from "../pki/keys.ts";
import { certificatesFromPem } from "../pki/pem.ts";
import { parseWorkloadId } from "../spiffe/id.ts";
import { CERT_FILE, KEY_FILE } from "./file-sink.ts";
import type { Svid } from "./source.ts";

/**
 * The certificate and key an earlier run left in `dir`, when they can still renew the
 * identity: both files present, the key matching the certificate, one SPIFFE ID (the expected
 * one, when known), not expired. Anything else is logged and ignored, and the token is used.
 */
export function readResumableSvid(
  dir: string,
  options: { readonly namespace?: string; readonly appId?: string; readonly now: Date; readonly logger?: Logger },
): Svid | undefined {
  const certPath = resolve(dir, CERT_FILE);
  const keyPath = resolve(dir, KEY_FILE);
  if (!existsSync(certPath) || !existsSync(keyPath)) return undefined;
  const ignore = (reason: string): undefined => {
    options.logger?.warn({ event: "resume-ignored", dir, reason }, "not renewing with the certificate already in the directory; attesting with the token");
    return undefined;
  };
  try {
    const certChainPem = readFileSync(certPath, "utf8");
    const chain = certificatesFromPem(certChainPem);
    if (chain.length === 0) return ignore(`${CERT_FILE} holds no certificate`);
    const leaf = inspectCertificate(chain[0] as Buffer);
    const privateKey = decodePrivateKey(readFileSync(keyPath, "utf8"));
    if (!keysMatch(privateKey, toX509(chain[0] as Buffer).publicKey)) return ignore(`${KEY_FILE} is not the key of ${CERT_FILE}`);
    const spiffeId = leaf.uris[0];
    if (spiffeId === undefined || leaf.uris.length !== 1) return ignore(`${CERT_FILE} does not carry exactly one SPIFFE ID`);
    const workload = parseWorkloadId(spiffeId);
    if ((options.namespace !== undefined && workload.namespace !== options.namespace) || (options.appId !== undefined && workload.appId !== options.appId)) {
      return ignore(`${CERT_FILE} is ${spiffeId}, not namespace ${options.namespace ?? "(any)"} app ${options.appId ?? "(any)"}`);
    }
    if (leaf.notAfter.getTime() <= options.now.getTime()) return ignore(`${CERT_FILE} expired at ${leaf.notAfter.toISOString()}`);
    return { spiffeId, certChainPem, privateKey, notBefore: leaf.notBefore, notAfter: leaf.notAfter, serial: leaf.serial };
  } catch (error) {
    return ignore(describeError(error));
  }
}
