import { watch } from "node:fs";
import type { FSWatcher } from "node:fs";
import { stat } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import type { Logger } from "pino";
import { describeError, MeshwardError } from "../errors.ts";
import { decodePrivateKey } from "../pki/keys.ts";
import { certificatesFromPem } from "../pki/pem.ts";
import { systemClock, type Clock, type ClockTimer } from "../util/clock.ts";
import { sameCrls, type IdentityEvent, type IdentitySnapshot, type IdentitySource } from "./source.ts";
import { buildSnapshot, verifiedCrls } from "./workload-api/material.ts";
import { holdEventLoopUntilSettled } from "../util/event-loop-hold.ts";
import { INPUT_LIMITS, readInputBytesAsync } from "../util/read-input.ts";

export interface FileIdentityOptions {
  /** Leaf certificate, then intermediates, PEM. */
  readonly certFile: string;
  /** Private key PEM (PKCS#8, SEC1 or PKCS#1; unencrypted). */
  readonly keyFile: string;
  /** Trusted roots, PEM. */
  readonly bundleFile: string;
  /** Optional CRL (PEM or DER) signed by a CA of the chain or bundle; feeds revokedSerials. */
  readonly crlFile?: string;
  /** Poll interval, a fallback for filesystems where fs.watch misses events (default 2000 ms). */
  readonly pollMs?: number;
  /** Quiet time after a change before reading (default 50 ms), so a burst of renames is read once. */
  readonly debounceMs?: number;
  /**
   * How long an inconsistent set may last before it is logged (default 1000 ms): writers such
   * as meshward's file sink replace the files one by one, which briefly pairs a new key
   * with the old certificate.
   */
  readonly settleMs?: number;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/**
 * An identity read from PEM files that another process keeps fresh (meshward's file sink,
 * cert-manager, a person). The files are watched (fs.watch on their directories, plus
 * polling); a new identity is taken only when the whole set is consistent: the key belongs
 * to the certificate, the chain verifies to the bundle now, the leaf is an X509-SVID, and
 * the CRL (when configured) verifies. Anything else (half-written, mismatched, garbage,
 * missing) is ignored: the current identity stays, and the problem is logged once.
 * `expired` is emitted when the current certificate passes notAfter without a replacement.
 */
export function fileIdentitySource(options: FileIdentityOptions): IdentitySource {
  return new FileSource(options);
}

class FileSource implements IdentitySource {
  readonly #options: FileIdentityOptions;
  readonly #files: string[];
  readonly #clock: Clock;
  readonly #logger: Logger | undefined;
  readonly #listeners = new Set<(event: IdentityEvent) => void>();
  readonly #watchers: FSWatcher[] = [];
  #snapshot: IdentitySnapshot | undefined;
  #expired = false;
  #fingerprint = "";
  #loading: Promise<void> | undefined;
  #reloadAgain = false;
  #debounce: NodeJS.Timeout | undefined;
  #poll: NodeJS.Timeout | undefined;
  #settle: NodeJS.Timeout | undefined;
  #expiryTimer: ClockTimer | undefined;
  #problem: { message: string; since: number; logged: boolean } | undefined;
  #closed = false;
  #resolveReady!: (snapshot: IdentitySnapshot) => void;
  #rejectReady!: (error: Error) => void;
  readonly #ready: Promise<IdentitySnapshot>;

  constructor(options: FileIdentityOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#logger = options.logger;
    this.#files = [options.certFile, options.keyFile, options.bundleFile, ...(options.crlFile ? [options.crlFile] : [])].map((file) => resolve(file));
    this.#ready = new Promise((resolvePromise, reject) => {
      this.#resolveReady = resolvePromise;
      this.#rejectReady = reject;
    });
    this.#ready.catch(() => undefined);
    holdEventLoopUntilSettled(this.#ready);
    this.#watch();
    this.#poll = setInterval(() => void this.#pollOnce(), options.pollMs ?? 2000);
    this.#poll.unref();
    this.#reload();
  }

  ready(): Promise<IdentitySnapshot> {
    return this.#ready;
  }

  current(): IdentitySnapshot | undefined {
    if (this.#snapshot === undefined || this.#snapshot.svid.notAfter.getTime() <= this.#clock.now()) return undefined;
    return this.#snapshot;
  }

  subscribe(listener: (event: IdentityEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const watcher of this.#watchers) watcher.close();
    for (const timer of [this.#debounce, this.#poll, this.#settle]) if (timer) clearTimeout(timer);
    if (this.#expiryTimer) this.#clock.clearTimeout(this.#expiryTimer);
    this.#rejectReady(new MeshwardError("E_IDENTITY_CLOSED", "the file identity source was closed before a valid identity was found"));
    this.#listeners.clear();
    await this.#loading;
  }

  /** Watches directories, not files: an atomic rename replaces the file a watch would follow. */
  #watch(): void {
    const byDir = new Map<string, Set<string>>();
    for (const file of this.#files) {
      const dir = dirname(file);
      if (!byDir.has(dir)) byDir.set(dir, new Set());
      byDir.get(dir)!.add(basename(file));
    }
    for (const [dir, names] of byDir) {
      try {
        const watcher = watch(dir, { persistent: false }, (_type, name) => {
          if (name === null || names.has(name.toString())) this.#schedule();
        });
        watcher.on("error", (error) => this.#logger?.warn({ event: "file-watch-failed", dir, error: describeError(error) }, "watching stopped; polling continues"));
        this.#watchers.push(watcher);
      } catch (error) {
        this.#logger?.warn({ event: "file-watch-failed", dir, error: describeError(error) }, `cannot watch ${dir}; relying on polling`);
      }
    }
  }

  #schedule(delay = this.#options.debounceMs ?? 50): void {
    if (this.#closed) return;
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => this.#reload(), delay);
    this.#debounce.unref();
  }

  /** Cheap change check: inode, size and mtime of every file. */
  async #pollOnce(): Promise<void> {
    const fingerprint = await this.#statFingerprint();
    if (fingerprint !== this.#fingerprint) this.#reload();
  }

  async #statFingerprint(): Promise<string> {
    const parts = await Promise.all(
      this.#files.map(async (file) => {
        try {
          const info = await stat(file);
          return `${info.ino}:${info.size}:${info.mtimeMs}`;
        } catch {
          return "missing";
        }
      }),
    );
    return parts.join("|");
  }

  #reload(): void {
    if (this.#closed) return;
    if (this.#loading !== undefined) {
      this.#reloadAgain = true;
      return;
    }
    this.#loading = this.#load().finally(() => {
      this.#loading = undefined;
      if (this.#reloadAgain) {
        this.#reloadAgain = false;
        this.#reload();
      }
    });
  }

  async #load(): Promise<void> {
    const fingerprint = await this.#statFingerprint();
    let snapshot: IdentitySnapshot;
    try {
      snapshot = await this.#read();
    } catch (error) {
      this.#fingerprint = fingerprint;
      this.#noteProblem(describeError(error));
      return;
    }
    this.#fingerprint = fingerprint;
    if (this.#closed) return;
    this.#accept(snapshot);
  }

  async #read(): Promise<IdentitySnapshot> {
    const { certFile, keyFile, bundleFile, crlFile } = this.#options;
    const [certPem, keyPem, bundlePem, crlBytes] = await Promise.all([
      readText(certFile, "certificate"),
      readText(keyFile, "key"),
      readText(bundleFile, "bundle"),
      // A CRL can list many serials: a larger bound than a certificate's.
      crlFile === undefined ? Promise.resolve(undefined) : readInputBytesAsync(crlFile, { what: "CRL file", maxBytes: 8 * INPUT_LIMITS.pem }).catch((error: unknown) => {
        throw new MeshwardError("E_IDENTITY_FILE", `cannot read the CRL file ${crlFile}: ${error instanceof MeshwardError ? error.message : ((error as NodeJS.ErrnoException).code ?? (error as Error).message)}`);
      }),
    ]);
    const chain = certificatesFromPem(certPem);
    const roots = certificatesFromPem(bundlePem);
    const privateKey = decodePrivateKey(keyPem);
    // Every CRL of the file (the file sink's crl.pem holds one per live issuer), each verified.
    const revocations = crlBytes === undefined ? undefined : verifiedCrls([crlBytes], [...chain.slice(1), ...roots]);
    return buildSnapshot({ chain, privateKey, roots, at: new Date(this.#clock.now()), ...(revocations ? { revokedSerials: revocations.revokedSerials, crls: revocations.crls } : {}) });
  }

  #accept(snapshot: IdentitySnapshot): void {
    this.#clearProblem();
    const previous = this.#snapshot;
    const sameSvid = previous !== undefined && previous.svid.certChainPem === snapshot.svid.certChainPem;
    // A CRL re-signed with the same revocations counts: the Workload API hands the CRL itself on,
    // and a consumer that checks its nextUpdate needs the fresh one.
    const sameBundle =
      previous !== undefined &&
      previous.bundle.rootsPem === snapshot.bundle.rootsPem &&
      sameSet(previous.bundle.revokedSerials, snapshot.bundle.revokedSerials) &&
      sameCrls(previous.bundle.crls, snapshot.bundle.crls);
    if (sameSvid && sameBundle && !this.#expired) return;
    this.#snapshot = snapshot;
    this.#expired = false;
    this.#armExpiry(snapshot);
    this.#resolveReady(snapshot);
    if (!sameSvid || previous === undefined) {
      this.#logger?.info({ event: "rotated", spiffeId: snapshot.svid.spiffeId, serial: snapshot.svid.serial, notAfter: snapshot.svid.notAfter.toISOString() }, "identity loaded from files");
      this.#emit({ type: "rotated", snapshot });
    } else {
      this.#logger?.info({ event: "bundle-updated", roots: certificatesFromPem(snapshot.bundle.rootsPem).length, revoked: snapshot.bundle.revokedSerials.size }, "trust bundle reloaded from files");
      this.#emit({ type: "bundle-updated", snapshot });
    }
  }

  #armExpiry(snapshot: IdentitySnapshot): void {
    if (this.#expiryTimer) this.#clock.clearTimeout(this.#expiryTimer);
    this.#expiryTimer = this.#clock.setTimeout(() => {
      if (this.#snapshot !== snapshot || this.#closed) return;
      this.#expired = true;
      this.#logger?.error({ event: "expired", spiffeId: snapshot.svid.spiffeId, certFile: this.#options.certFile }, `the certificate expired at ${snapshot.svid.notAfter.toISOString()} and the files hold no replacement`);
      this.#emit({ type: "expired", spiffeId: snapshot.svid.spiffeId });
    }, snapshot.svid.notAfter.getTime() - this.#clock.now());
  }

  /**
   * Logs a problem once, and only after it has lasted `settleMs` (a writer's rename window
   * is not worth a warning); re-reads then, in case no further file event comes.
   */
  #noteProblem(message: string): void {
    const now = Date.now();
    if (this.#problem === undefined || this.#problem.message !== message) {
      this.#problem = { message, since: now, logged: false };
    }
    const settleMs = this.#options.settleMs ?? 1000;
    if (!this.#problem.logged && now - this.#problem.since >= settleMs) {
      this.#problem.logged = true;
      const keeping = this.#snapshot ? `keeping ${this.#snapshot.svid.spiffeId} (serial ${this.#snapshot.svid.serial})` : "no identity yet";
      this.#logger?.warn({ event: "identity-files-ignored", certFile: this.#options.certFile, problem: message }, `identity files ignored (${keeping}): ${message}`);
    }
    if (!this.#problem.logged && this.#settle === undefined && !this.#closed) {
      this.#settle = setTimeout(() => {
        this.#settle = undefined;
        this.#reload();
      }, settleMs);
      this.#settle.unref();
    }
  }

  #clearProblem(): void {
    this.#problem = undefined;
    if (this.#settle) clearTimeout(this.#settle);
    this.#settle = undefined;
  }

  #emit(event: IdentityEvent): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(event);
      } catch (error) {
        this.#logger?.error({ event: "listener-failed", error: describeError(error) }, "an identity listener threw");
      }
    }
  }
}

/** Read again at every change: bounded, regular files only, never blocking (review files LOW-3). */
async function readText(path: string, what: string): Promise<string> {
  try {
    return (await readInputBytesAsync(path, { what: `${what} file`, maxBytes: INPUT_LIMITS.pem })).toString("utf8");
  } catch (error) {
    throw new MeshwardError("E_IDENTITY_FILE", `cannot read the ${what} file ${path}: ${error instanceof MeshwardError ? error.message : ((error as NodeJS.ErrnoException).code ?? (error as Error).message)}`);
  }
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  return a.size === b.size && [...a].every((value) => b.has(value));
}
