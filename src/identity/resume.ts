import { closeSync, constants, existsSync, fstatSync, lstatSync, openSync, readFileSync } from "node:fs";
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
 * identity: both files as this process writes them (see `readWrittenFile`), the key matching the
 * certificate, one SPIFFE ID (the expected one, when known), not expired. Anything else is logged
 * and ignored, and the token is used. `filesOwner` is the uid the files are given to (--owner).
 */
export function readResumableSvid(
  dir: string,
  options: { readonly namespace?: string; readonly appId?: string; readonly now: Date; readonly logger?: Logger; readonly filesOwner?: number },
): Svid | undefined {
  const certPath = resolve(dir, CERT_FILE);
  const keyPath = resolve(dir, KEY_FILE);
  if (!present(certPath) || !present(keyPath)) return undefined;
  const owners = new Set([process.getuid?.(), options.filesOwner].filter((uid): uid is number => uid !== undefined));
  const ignore = (reason: string): undefined => {
    options.logger?.warn({ event: "resume-ignored", dir, reason }, "not renewing with the certificate already in the directory; attesting with the token");
    return undefined;
  };
  try {
    const certChainPem = readWrittenFile(certPath, CERT_FILE, owners);
    const chain = certificatesFromPem(certChainPem);
    if (chain.length === 0) return ignore(`${CERT_FILE} holds no certificate`);
    const leaf = inspectCertificate(chain[0] as Buffer);
    const privateKey = decodePrivateKey(readWrittenFile(keyPath, KEY_FILE, owners));
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

/** Present as a name in the directory, whatever it is (a link to nothing included). */
function present(path: string): boolean {
  return existsSync(path) || lstatSync(path, { throwIfNoEntry: false }) !== undefined;
}

/**
 * A file as this process writes it: a regular file under one name only, owned by this process's
 * user or the files' owner. Anything else is refused before a byte is read. Root reads these
 * files in a directory the files' owner may write (--owner): with links (symbolic or hard) to
 * another workload's key and public certificate there, a restart would renew that workload's
 * identity and hand its new key to the files' owner. Opened without following a link and without
 * blocking (a FIFO planted there cannot hang the start), then checked on the open file.
 */
function readWrittenFile(path: string, name: string, owners: ReadonlySet<number>): string {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ELOOP") throw new Error(`${name} is a symbolic link, which this process never writes`);
    throw error;
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new Error(`${name} is not a regular file`);
    if (stat.nlink !== 1) throw new Error(`${name} has ${stat.nlink} names (hard links), which this process never writes`);
    if (owners.size > 0 && !owners.has(stat.uid)) throw new Error(`${name} belongs to uid ${stat.uid}, not to this process's user or the files' owner`);
    return readFileSync(fd, "utf8");
  } finally {
    closeSync(fd);
  }
}
