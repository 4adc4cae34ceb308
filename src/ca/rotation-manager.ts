import { existsSync } from "node:fs";
import type { Logger } from "pino";
import type { Counter } from "prom-client";
import type { CaConfig } from "../config/ca.ts";
import { describeError, isMeshwardError } from "../errors.ts";
import type { Store } from "../store/store.ts";
import { describeTimeLeft } from "../util/duration.ts";
import { directoryFiles, type AnchorFiles } from "./anchor-files.ts";
import { DEFAULT_ROOT_TTL_MS, loadAnchors, readCaCertificates, readCaState, type LoadedAnchors } from "./anchors.ts";
import { activateRoot, issuerRotationStage, prepareIssuer, prepareRoot, retireRoot, rotateIssuer, type ResumedPrepare } from "./rotation.ts";

const WARN_EVERY_MS = 3_600_000;

/**
 * How long past the end of its retention the previous issuer (issuer.prev.*) is kept: a workload
 * whose clock is behind the CA's may still hold one of its certificates as valid for that long.
 */
export const PREVIOUS_ISSUER_REMOVAL_MARGIN_MS = 5 * 60_000;

export interface RotationManagerOptions {
  readonly dir: string;
  readonly passphrase: string | undefined;
  readonly config: CaConfig;
  readonly store: Store;
  readonly logger: Logger;
  readonly rotations: Counter<"kind" | "result">;
  readonly anchors: () => LoadedAnchors;
  /** Load the files just written (instead of waiting for the watcher's next poll). */
  readonly reload: () => void;
  readonly clock: () => Date;
  /** Told of each failed rotation step (the status page's rotation history). */
  readonly onFailed?: (kind: "issuer" | "root", error: unknown) => void;
  /**
   * Runs a step against the CA's files: the directory by default; with several replicas, the
   * store's shared state, committed in one compare-and-swap (anchor-files.ts transactCaState).
   */
  readonly transact?: <T>(step: (files: AnchorFiles) => Promise<T>) => Promise<T>;
  /** Whether a CA file exists (the shared state's view with several replicas). */
  readonly exists?: (path: string) => boolean;
  /** Run before each check: puts in order what an interrupted writer left (a CA directory: dir-lock.ts). */
  readonly repair?: () => Promise<void>;
}

/** What a step returns when, re-read under the lock, the CA's files no longer call for it (another process did it). */
const NOT_DUE = Symbol("not due");

/**
 * The rotation policy of a running CA: automatic issuer rotation (self-managed), automatic
 * root rotation when enabled, and expiry warnings for what it cannot rotate itself.
 */
export function createRotationManager(options: RotationManagerOptions) {
  const { config, logger } = options;
  const lastWarned = new Map<string, number>();
  let warnings: string[] = [];
  let running: Promise<void> | undefined;

  const warn = (key: string, message: string, fields: object) => {
    const now = options.clock().getTime();
    if (now - (lastWarned.get(key) ?? 0) < WARN_EVERY_MS) return;
    lastWarned.set(key, now);
    logger.warn({ event: "expiry-warning", ...fields }, message);
  };

  const transact = options.transact ?? (<T>(run: (files: AnchorFiles) => Promise<T>) => run(directoryFiles));
  const exists = options.exists ?? existsSync;
  const step = async (kind: "issuer" | "root", what: string, action: (files: AnchorFiles) => Promise<unknown>) => {
    try {
      if ((await transact(action)) === NOT_DUE) {
        logger.info({ event: "rotation-not-due", kind, step: what }, `${kind} rotation: '${what}' was already done by another process`);
        options.reload();
        return;
      }
      options.rotations.inc({ kind, result: "ok" });
      logger.info({ event: "rotation", kind, step: what }, `${kind} rotation: ${what}`);
      options.reload();
    } catch (error) {
      if (isMeshwardError(error, "E_CA_DIR_LOCKED")) {
        // A command holds the CA directory: not a failure; the next check tries again.
        logger.info({ event: "rotation-deferred", kind, step: what, reason: error.message }, `${kind} rotation: '${what}' deferred to the next check`);
        return;
      }
      options.rotations.inc({ kind, result: "error" });
      options.onFailed?.(kind, error);
      logger.error({ event: "rotation-failed", kind, step: what, error: describeError(error) }, `${kind} rotation failed at '${what}'`);
    }
  };

  const checkOnce = async () => {
    await options.repair?.();
    const anchors = options.anchors();
    const now = options.clock();
    const next: string[] = [];
    const selfManaged = anchors.mode === "self-managed";
    const base = { dir: options.dir, now, ...(options.passphrase !== undefined ? { passphrase: options.passphrase } : {}) };

    const issuer = anchors.issuer.certificate;
    const issuerLeft = new Date(issuer.validTo).getTime() - now.getTime();
    if (selfManaged && config.autoRotateIssuer) {
      const stage = issuerRotationStage(issuer, now);
      // Each step looks again at the files it holds (under the lock): a command may have rotated since the anchors in use were loaded.
      const issuerStage = (files: AnchorFiles) => issuerRotationStage(loadAnchors({ ...base, files }).issuer.certificate, now);
      if (stage === "prepare" && !exists(anchors.layout.nextIssuerCert)) {
        await step("issuer", "prepare", async (files) => (issuerStage(files) === "prepare" && !files.exists(anchors.layout.nextIssuerCert) ? prepareIssuer({ ...base, files, issuerTtlMs: config.issuerTtl }) : NOT_DUE));
      } else if (stage === "activate") {
        await step("issuer", "activate", async (files) => (issuerStage(files) === "activate" ? rotateIssuer({ ...base, files, issuerTtlMs: config.issuerTtl }) : NOT_DUE));
      }
    } else if (issuerLeft < config.expiryWarning) {
      const text = `the issuer expires ${describeTimeLeft(new Date(issuer.validTo), now).replace(" left", " from now")}; import a new one with 'meshward ca import-issuer'`;
      next.push(text);
      warn("issuer", text, { kind: "issuer", notAfter: new Date(issuer.validTo).toISOString() });
    }

    const root = anchors.issuerRoot;
    const rootLeft = new Date(root.validTo).getTime() - now.getTime();
    const rotation = anchors.state.rootRotation;
    if (selfManaged && config.autoRotateRoot.enabled && config.autoRotateRoot.prepareBefore >= DEFAULT_ROOT_TTL_MS) {
      // A threshold longer than the life of the roots it generates would rotate back to back, forever.
      const text = "autoRotateRoot.prepareBefore is not shorter than a root's life; automatic root rotation is off until it is";
      next.push(text);
      warn("auto-root-config", text, { kind: "root" });
    } else if (selfManaged && config.autoRotateRoot.enabled) {
      const phase = (files: AnchorFiles) => readCaState(options.dir, files).rootRotation?.phase;
      if (rotation === undefined && rootLeft < config.autoRotateRoot.prepareBefore) {
        const onResume = (resumed: ResumedPrepare) => logger.warn({ event: "rotation-resumed", kind: "root", step: "prepare", ...resumed }, "root rotation: 'prepare' takes up what an interrupted prepare left");
        await step("root", "prepare", async (files) => (phase(files) === undefined ? prepareRoot({ ...base, files, onResume }) : NOT_DUE));
      } else if (rotation?.phase === "prepared" && now.getTime() - Date.parse(rotation.preparedAt) >= config.autoRotateRoot.activateAfter) {
        await step("root", "activate", async (files) => (phase(files) === "prepared" ? activateRoot({ ...base, files, issuerTtlMs: config.issuerTtl }) : NOT_DUE));
      } else if (rotation?.phase === "activated") {
        const remaining = (await options.store.countValidByRoot(now)).get(rotation.previousRootFingerprint) ?? 0;
        if (remaining === 0) await step("root", "retire", async (files) => (phase(files) === "activated" ? retireRoot({ dir: options.dir, store: options.store, now, files }) : NOT_DUE));
      }
    } else if (rootLeft < config.expiryWarning && rotation === undefined) {
      const text = `the root expires ${describeTimeLeft(new Date(root.validTo), now).replace(" left", " from now")}; start a rotation with 'meshward ca rotate-root prepare'`;
      next.push(text);
      warn("root", text, { kind: "root", notAfter: new Date(root.validTo).toISOString() });
    }
    await removePreviousIssuer(anchors, now);
    warnings = next;
  };

  /**
   * The previous issuer (issuer.prev.*, kept by a rotation that was not `--now`) is removed once
   * its retention is over (review crlset LOW-1): the last certificate it signed has expired (the
   * issuance log, as the CRL publisher reads it) or it has itself, plus
   * PREVIOUS_ISSUER_REMOVAL_MARGIN_MS. Nothing needs its key then, and a key that chains to the
   * root must not stay at rest, in memory and in the store's shared state for the rest of its
   * validity. Under the same lock and in the same atomic writes as a rotation step; re-read under
   * the lock, so an issuer.prev.* another rotation put there meanwhile is left alone.
   */
  const removePreviousIssuer = async (anchors: LoadedAnchors, now: Date) => {
    const previous = anchors.previousIssuer?.signer.certificate;
    if (previous === undefined) return;
    const latest = await options.store.latestNotAfterByIssuer(previous.fingerprint256);
    const expires = new Date(previous.validTo).getTime();
    const retainedUntil = Math.min(expires, latest?.getTime() ?? Number.NEGATIVE_INFINITY);
    if (now.getTime() < retainedUntil + PREVIOUS_ISSUER_REMOVAL_MARGIN_MS) return;
    const layout = anchors.layout;
    try {
      const removed = await transact(async (files) => {
        if (!files.exists(layout.previousIssuerCert)) return NOT_DUE;
        if (readCaCertificates(files, layout.previousIssuerCert)[0]!.fingerprint256 !== previous.fingerprint256) return NOT_DUE;
        files.remove(layout.previousIssuerKey);
        files.remove(layout.previousIssuerCert);
        return true;
      });
      if (removed === NOT_DUE) return;
      logger.info(
        { event: "previous-issuer-removed", issuer: previous.fingerprint256, issuerNotAfter: new Date(expires).toISOString(), ...(latest !== undefined ? { lastCertificateNotAfter: latest.toISOString() } : {}) },
        "removed the previous issuer (issuer.prev.*): no certificate it signed is still valid, so its CRL is no longer needed",
      );
      options.reload();
    } catch (error) {
      if (isMeshwardError(error, "E_CA_DIR_LOCKED")) {
        logger.info({ event: "rotation-deferred", kind: "issuer", step: "remove-previous", reason: error.message }, "issuer rotation: removing the previous issuer deferred to the next check");
        return;
      }
      logger.error({ event: "previous-issuer-remove-failed", issuer: previous.fingerprint256, error: describeError(error) }, "could not remove the previous issuer (issuer.prev.*)");
    }
  };

  return {
    /** Runs the policy once; concurrent calls share one run. */
    check(): Promise<void> {
      running ??= checkOnce()
        .catch((error) => logger.error({ event: "rotation-check-failed", error: describeError(error) }, "rotation check failed"))
        .finally(() => {
          running = undefined;
        });
      return running;
    },
    /** Human-readable warnings for /readyz and the status page. */
    warnings: () => warnings,
  };
}
