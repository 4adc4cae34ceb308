import { spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { chmodSync, chownSync, existsSync, mkdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import { describeError, MeshwardError } from "../errors.ts";
import { encodePrivateKey } from "../pki/keys.ts";
import { parseCrl } from "../pki/crl.ts";
import { certificatesFromPem, toPem } from "../pki/pem.ts";
import { redactSecrets } from "../telemetry/redact.ts";
import { formatDuration } from "../util/duration.ts";
import { writeFilesTogether } from "../util/files.ts";
import { assertOwnDirectory, outDirMode } from "./local-paths.ts";
import type { IdentityEvent, IdentitySnapshot, IdentitySource } from "./source.ts";

export const CERT_FILE = "cert.pem";
export const KEY_FILE = "key.pem";
export const BUNDLE_FILE = "bundle.pem";
/**
 * Every CRL the identity enforces, PEM blocks one after another: the current issuer's and, after
 * an issuer rotation, the previous issuer's while its certificates may be valid (a CRL per live
 * issuer, docs/rotation.md). OpenSSL (`-CRLfile`, nginx `ssl_crl`, HAProxy `crl-file`) loads every
 * block of such a file and checks each certificate against the CRL of its own issuer.
 */
export const CRL_FILE = "crl.pem";

export interface FileSinkOptions {
  readonly source: IdentitySource;
  /**
   * Created when missing as `meshward identity --out` creates it (0700, or 0755 with `owner`),
   * and again with the mode and owner it had at the start if it is removed while running;
   * refused (E_OUT_DIR_UNSAFE) when another user owns it or group or others can write it.
   */
  readonly dir: string;
  /**
   * Shell command run (via /bin/sh -c) after every write, e.g. "nginx -s reload". It gets
   * MESHWARD_CERT_FILE, MESHWARD_KEY_FILE, MESHWARD_BUNDLE_FILE, MESHWARD_CRL_FILE and MESHWARD_SPIFFE_ID in
   * its environment, and meshward's environment without its secrets (SECRET_ENVIRONMENT).
   * A failure is logged and reported, never fatal.
   */
  readonly onRotate?: string;
  /**
   * Owner of the three files (chown before each rename), e.g. the postgres user, which
   * PostgreSQL requires of its key file. Default: whoever runs the sink.
   */
  readonly owner?: { readonly uid: number; readonly gid: number };
  /** Mode of key.pem (default 0600; 0640 lets the owner's group read it). cert.pem and bundle.pem are 0644. */
  readonly keyMode?: number;
  /** Kill the command after this long (default 30 s). */
  readonly onRotateTimeoutMs?: number;
  /**
   * A failed write or a failed command is tried again after `initial` ms, doubling up to `max`
   * (default 1 s to 60 s), until it succeeds or a newer identity is written; a server must not
   * keep an old certificate until the next rotation, half a lifetime later.
   */
  readonly retryMs?: { readonly initial: number; readonly max: number };
  readonly logger?: Logger;
  /** Called after each write and each command run (for status pages and tests). */
  readonly onEvent?: (event: FileSinkEvent) => void;
}

export type FileSinkEvent =
  | { readonly type: "written"; readonly spiffeId: string; readonly serial: string }
  | { readonly type: "write-failed"; readonly error: Error }
  | { readonly type: "command-finished"; readonly result: CommandResult };

export interface CommandResult {
  readonly ok: boolean;
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly timedOut: boolean;
  /** stdout + stderr, at most the last 4 KiB, private keys, JWTs and bearer values scrubbed. */
  readonly output: string;
}

export interface FileSink {
  /** `crl`: written once the source has a CRL (a CA source always has; a static one may have none). */
  readonly paths: { readonly cert: string; readonly key: string; readonly bundle: string; readonly crl: string };
  /** Resolves after the first complete write (and its command). */
  ready(): Promise<void>;
  /** Resolves when no write or command is pending. */
  idle(): Promise<void>;
  /**
   * Why the files in `dir` do not hold the current identity (the last write failed and is being
   * retried), or undefined when they do. A readiness check: a server reading these files would
   * serve an old, soon expired certificate.
   */
  problem(): string | undefined;
  close(): Promise<void>;
}

const OUTPUT_LIMIT = 4096;

/**
 * Secrets meshward reads from its own environment. They are not passed on to the on-rotate
 * command: it needs none of them, and a hook such as 'runuser -u postgres -- pg_ctl reload'
 * keeps the environment, so they would reach processes of another user.
 */
export const SECRET_ENVIRONMENT = ["MESHWARD_TOKEN", "MESHWARD_STATUS_TOKEN", "MESHWARD_CA_PASSPHRASE"] as const;

/**
 * Keeps `cert.pem` (leaf + intermediates), `key.pem` (0600), `bundle.pem` and `crl.pem` in `dir` equal
 * to the source's identity, for tools that only read files (nginx, haproxy, Redis,
 * PostgreSQL clients), then runs `onRotate`. Each file is replaced atomically.
 */
export function startFileSink(options: FileSinkOptions): FileSink {
  if (options.keyMode !== undefined && ((options.keyMode & 0o400) === 0 || (options.keyMode & ~0o740) !== 0)) {
    throw new MeshwardError("E_USAGE", `key file mode ${options.keyMode.toString(8).padStart(4, "0")} is not private: at most 0640 (owner read/write, group read)`);
  }
  const filesOwner = options.owner?.uid;
  /** Creates the directory if missing (mode as `meshward identity --out`: outDirMode) and checks it; returns its real path. */
  const makeDir = (path: string, mode: number) => {
    mkdirSync(path, { recursive: true, mode });
    return assertOwnDirectory(path, path, filesOwner);
  };
  // Written under its real path from now on: a link on the way is not followed again.
  const dir = makeDir(resolve(options.dir), outDirMode(filesOwner));
  // How it is now (made here, by the CLI or by an operator): what a re-creation restores.
  const made = statSync(dir);
  const dirShape = { mode: made.mode & 0o7777, uid: made.uid, gid: made.gid };
  const paths = { cert: join(dir, CERT_FILE), key: join(dir, KEY_FILE), bundle: join(dir, BUNDLE_FILE), crl: join(dir, CRL_FILE) };
  const { logger } = options;
  let closed = false;
  let pending: IdentitySnapshot | undefined;
  let running: Promise<void> | undefined;
  let lastWritten: { chain: string; roots: string; crls: string } | undefined;
  /** Roots already named in a crl-file-no-root-crl warning. */
  const warnedRoots = new Set<string>();
  /** crl.pem's content for a snapshot: every CRL it holds, PEM ("" when none: crl.pem is left as it is). */
  const crlsPem = (snapshot: IdentitySnapshot) => (snapshot.bundle.crls ?? []).map((der) => toPem(der, "X509 CRL")).join("");
  const isWritten = (snapshot: IdentitySnapshot) =>
    lastWritten?.chain === snapshot.svid.certChainPem && lastWritten.roots === snapshot.bundle.rootsPem && lastWritten.crls === crlsPem(snapshot);
  /** The command for the files now on disk has not succeeded yet (it failed: run it again even though nothing changed). */
  let commandOwed = false;
  let retryTimer: NodeJS.Timeout | undefined;
  let retryDelay = options.retryMs?.initial ?? 1_000;
  let writeProblem: string | undefined;
  let resolveReady!: () => void;
  const readyPromise = new Promise<void>((resolvePromise) => (resolveReady = resolvePromise));

  const report = (event: FileSinkEvent) => {
    try {
      options.onEvent?.(event);
    } catch (error) {
      logger?.error({ event: "file-sink-listener-failed", error: describeError(error) }, "a file sink listener threw");
    }
  };

  const write = (snapshot: IdentitySnapshot): boolean => {
    const { svid, bundle } = snapshot;
    if (isWritten(snapshot)) return false;
    const crls = crlsPem(snapshot);
    // Order: bundle, key, cert. cert.pem is the file readers key on ("did the certificate
    // change?"), so it is renamed last: whoever sees the new certificate also finds its key
    // and the roots it chains to already in place. The reverse order would let a reader pair
    // a new certificate with the old key for as long as the gap between the renames lasts;
    // with this order the only mixed state (new key, old cert) fails a key/cert match check,
    // so careful readers (meshward's file source) wait for cert.pem instead of using it. The
    // bundle goes first because during a root rotation it holds the old and the new root, so
    // the old certificate still verifies against it.
    // All three temp files are written (and fsynced) before the first rename, so a failed write
    // (a full disk, a file size limit, a crash) leaves the old set whole: never a new key beside
    // the old certificate, which readers and a restart (resume.ts) would refuse.
    if (!existsSync(dir)) {
      // Removed while running (a cleanup job, an operator): created again as it was at the start
      // (same mode and owner: an --owner user must still reach its files; review atrest LOW-5),
      // with the same checks, rather than failing every write until a restart.
      if (makeDir(dir, dirShape.mode & 0o777) !== dir) throw new MeshwardError("E_OUT_DIR_UNSAFE", `${dir} is no longer the directory it was (a link now): not writing there`);
      const now = statSync(dir);
      if (now.uid !== dirShape.uid || now.gid !== dirShape.gid) chownSync(dir, dirShape.uid, dirShape.gid);
      // Exactly the old mode, whatever the umask did to mkdir's (chown may also clear setgid).
      chmodSync(dir, dirShape.mode);
      logger?.warn({ event: "out-dir-recreated", dir, mode: dirShape.mode.toString(8).padStart(4, "0"), uid: dirShape.uid, gid: dirShape.gid }, "the output directory was removed; created it again as it was");
    }
    const { owner } = options;
    const keyOwner = owner ?? (options.keyMode === undefined ? undefined : { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 });
    // crl.pem with the bundle, before the certificate: a reader that sees a new certificate (of a
    // new issuer) finds that issuer's CRL already in place. A new CRL alone (a revocation, the
    // re-signing before nextUpdate) rewrites the set too and runs the command: nginx and HAProxy
    // read the CRL file only on (re)load.
    const { removedLeftovers } = writeFilesTogether([
      { path: paths.bundle, data: bundle.rootsPem, mode: 0o644, ...(owner !== undefined ? { owner } : {}) },
      ...(crls !== "" ? [{ path: paths.crl, data: crls, mode: 0o644, ...(owner !== undefined ? { owner } : {}) }] : []),
      { path: paths.key, data: encodePrivateKey(svid.privateKey), mode: options.keyMode ?? 0o600, ...(keyOwner !== undefined ? { owner: keyOwner } : {}) },
      { path: paths.cert, data: svid.certChainPem, mode: 0o644, ...(owner !== undefined ? { owner } : {}) },
    ]);
    lastWritten = { chain: svid.certChainPem, roots: bundle.rootsPem, crls };
    if (removedLeftovers.length > 0) {
      logger?.warn({ event: "write-leftovers-removed", dir, files: removedLeftovers }, "removed what an interrupted earlier write left in the output directory (temp files, links to replaced files)");
    }
    if (crls !== "") {
      const missing = rootWithoutCrl(svid.certChainPem, bundle.rootsPem, bundle.crls ?? []);
      if (missing !== undefined && !warnedRoots.has(missing.fingerprint256)) {
        warnedRoots.add(missing.fingerprint256);
        logger?.warn(
          { event: "crl-file-no-root-crl", dir, root: missing.fingerprint256 },
          `${paths.crl} holds no CRL signed by the root ${missing.subject.replace(/\n/g, ", ")} (the CA does not hold that root's key: an external root, or a CA older than root CRLs). ` +
            "nginx ssl_crl and HAProxy crl-file check a CRL for every certificate of the chain and refuse every peer with this file alone: give them this file followed by your organisation's CRL signed by that root (e.g. concatenated in --on-rotate), or put a meshward sidecar in front (docs/backends.md)",
        );
      }
    }
    logger?.info({ event: "identity-files-written", dir, spiffeId: svid.spiffeId, serial: svid.serial, notAfter: svid.notAfter.toISOString() }, "identity files written");
    report({ type: "written", spiffeId: svid.spiffeId, serial: svid.serial });
    return true;
  };

  const drain = async () => {
    while (pending !== undefined && !closed) {
      const snapshot = pending;
      pending = undefined;
      let changed = false;
      try {
        changed = write(snapshot);
        writeProblem = undefined;
      } catch (error) {
        const retryInMs = retryLater(snapshot);
        writeProblem = `cannot write the identity files in ${dir} (${describeError(error)}); retrying${retryInMs === undefined ? "" : ` in ${formatDuration(retryInMs)}`}: they hold ${lastWritten === undefined ? "no identity yet" : "the previous certificate"}`;
        logger?.error({ event: "identity-files-write-failed", dir, error: describeError(error), retryInMs }, "cannot write the identity files");
        report({ type: "write-failed", error: error as Error });
        continue;
      }
      if ((changed || commandOwed) && options.onRotate !== undefined) {
        const result = await runCommand(options.onRotate, {
          timeoutMs: options.onRotateTimeoutMs ?? 30_000,
          env: { MESHWARD_CERT_FILE: paths.cert, MESHWARD_KEY_FILE: paths.key, MESHWARD_BUNDLE_FILE: paths.bundle, MESHWARD_CRL_FILE: paths.crl, MESHWARD_SPIFFE_ID: snapshot.svid.spiffeId },
        });
        commandOwed = !result.ok;
        const retryInMs = result.ok ? undefined : retryLater(snapshot);
        const fields = { event: "on-rotate-finished", exitCode: result.exitCode, signal: result.signal, timedOut: result.timedOut, output: result.output, retryInMs };
        if (result.ok) logger?.info(fields, "on-rotate command succeeded");
        else logger?.error(fields, result.timedOut ? "on-rotate command timed out and was killed" : "on-rotate command failed");
        report({ type: "command-finished", result });
      }
      if (lastWritten !== undefined) resolveReady();
      if (!commandOwed && isWritten(snapshot)) succeeded();
    }
  };

  /** Schedules another attempt for `snapshot` (unless something newer comes first); returns the delay. */
  const retryLater = (snapshot: IdentitySnapshot): number | undefined => {
    if (closed) return undefined;
    const delay = retryDelay;
    retryDelay = Math.min(retryDelay * 2, options.retryMs?.max ?? 60_000);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      if (pending === undefined) schedule(snapshot);
    }, delay);
    retryTimer.unref();
    return delay;
  };

  const succeeded = () => {
    clearTimeout(retryTimer);
    retryTimer = undefined;
    retryDelay = options.retryMs?.initial ?? 1_000;
  };

  // Coalesces bursts: while a write or a command runs, only the newest snapshot waits.
  const schedule = (snapshot: IdentitySnapshot) => {
    if (closed) return;
    pending = snapshot;
    if (running === undefined) {
      running = drain().finally(() => {
        running = undefined;
        if (pending !== undefined) schedule(pending);
      });
    }
  };

  const unsubscribe = options.source.subscribe((event: IdentityEvent) => {
    if (event.type === "rotated" || event.type === "bundle-updated") schedule(event.snapshot);
    else if (event.type === "expired") {
      logger?.error({ event: "identity-expired", dir, spiffeId: event.spiffeId }, `the identity expired; ${paths.cert} now holds an expired certificate until a new one arrives`);
    }
  });
  const initial = options.source.current();
  if (initial !== undefined) schedule(initial);
  else void options.source.ready().then((snapshot) => schedule(options.source.current() ?? snapshot), () => undefined);

  return {
    paths,
    ready: () => readyPromise,
    problem: () => writeProblem,
    async idle() {
      while (running !== undefined) await running;
    },
    async close() {
      closed = true;
      clearTimeout(retryTimer);
      unsubscribe();
      if (running !== undefined) await running;
    },
  };
}

/**
 * The root the chain rests on when none of `crls` is signed by it (OpenSSL's whole-chain CRL check
 * then refuses the chain: its issuer has no CRL); undefined when one is, or the chain has no issuer below a root.
 */
export function rootWithoutCrl(chainPem: string, rootsPem: string, crls: readonly Buffer[]): X509Certificate | undefined {
  try {
    const chain = certificatesFromPem(chainPem).map((der) => new X509Certificate(der));
    const top = chain[chain.length - 1];
    if (chain.length < 2 || top === undefined) return undefined;
    const root = certificatesFromPem(rootsPem)
      .map((der) => new X509Certificate(der))
      .find((candidate) => top.checkIssued(candidate) && top.verify(candidate.publicKey));
    if (root === undefined) return undefined;
    const signed = crls.some((der) => {
      try {
        parseCrl(der, root);
        return true;
      } catch {
        return false;
      }
    });
    return signed ? undefined : root;
  } catch {
    return undefined;
  }
}

/** Runs `command` with /bin/sh (without meshward's secrets in its environment), collects its output, kills the process group on timeout. */
export function runCommand(command: string, options: { timeoutMs: number; env?: Record<string, string> }): Promise<CommandResult> {
  return new Promise((resolvePromise) => {
    let output = "";
    let timedOut = false;
    const env: NodeJS.ProcessEnv = { ...process.env, ...options.env };
    for (const name of SECRET_ENVIRONMENT) delete env[name];
    const child = spawn("/bin/sh", ["-c", command], { stdio: ["ignore", "pipe", "pipe"], env, detached: true });
    const collect = (chunk: Buffer) => {
      output = (output + chunk.toString("utf8")).slice(-OUTPUT_LIMIT);
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    }, options.timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      resolvePromise({ ok: false, exitCode: null, signal: null, timedOut, output: redactSecrets(`${output}${describeError(error)}`) });
    });
    child.on("close", (exitCode, signal) => {
      clearTimeout(timer);
      resolvePromise({ ok: exitCode === 0 && !timedOut, exitCode, signal, timedOut, output: redactSecrets(output.trim()) });
    });
  });
}
