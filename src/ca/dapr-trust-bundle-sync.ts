import { X509Certificate } from "node:crypto";
import type { Logger } from "pino";
import { describeError, isMeshwardError, MeshwardError } from "../errors.ts";
import { certificatesFromPem } from "../pki/pem.ts";
import type { KubeApiConnection } from "./attest/kube-api.ts";
import { DAPR_TRUST_ANCHORS_KEY, DAPR_TRUST_BUNDLE_LABELS, DAPR_TRUST_BUNDLE_NAME, daprTrustAnchorsPem } from "./dapr-trust-bundle.ts";

/**
 * Keeps Dapr's `dapr-trust-bundle` ConfigMap equal to the CA's trust bundle, as Dapr Sentry does
 * for itself (upstream dapr/dapr `pkg/sentry/server/ca/kube.go`: it reads the ConfigMap, sets
 * `ca.crt` to the trust anchors and updates it). The object is the one `meshward ca
 * dapr-trust-bundle` prints: `data.ca.crt` = the PEM of every root in the bundle, label
 * `app: dapr-sentry`. Only `ca.crt` is this CA's: other data keys and metadata are kept, and
 * nothing but certificates is ever written (no Secret, no issuer key). Sentry also writes the
 * `dapr-trust-bundle` Secret (`kube.go` store: ca.crt, issuer.crt, issuer.key), but only Sentry
 * reads it; Dapr >= 1.12's injector (`pkg/injector/service/config.go` DAPR_TRUST_ANCHORS_FILE, the
 * ConfigMap mounted) and operator (`pkg/operator/trustbundlesync.go`, copying the ConfigMap to
 * every Dapr namespace) read the ConfigMap: docs/migrating-from-dapr-sentry.md, "What Dapr reads".
 *
 * Each pass reads the ConfigMap and writes only when it differs: a PUT carrying the
 * resourceVersion it read (so a concurrent writer, another CA replica, makes it fail with 409
 * rather than be overwritten), or a POST when there is none. A 409 (a conflicting update, or
 * another replica created it first) is followed by a new read, at most
 * DAPR_TRUST_BUNDLE_CONFLICT_RETRIES times. Every replica converges on the set it serves; a
 * replica that has not adopted a rotation yet could write its older set back: with a replicated
 * store each write carries the CA state version of its roots (annotation
 * DAPR_TRUST_BUNDLE_VERSION_ANNOTATION), and a replica leaves alone a ConfigMap stamped with a
 * newer one ("behind": it writes once it has adopted that state) — only when the store confirms a
 * state that new exists: a stamp beyond the store's head (edited by hand or by someone allowed to
 * edit the ConfigMap, a store restored from a backup) is overwritten and logged, or one edit
 * would stop every replica from writing for good. A CA directory has no version: one CA serves it
 * (its lock), so there is no older replica to guard against.
 * A failed pass is logged with the API server's status and reason, counted, and retried with
 * backoff; it never stops the CA.
 */
export interface DaprTrustBundleSyncOptions {
  /** Dapr's control-plane namespace. */
  readonly namespace: string;
  readonly connection: KubeApiConnection;
  /** The roots of the CA's trust bundle now. */
  readonly roots: () => readonly X509Certificate[];
  readonly logger: Logger;
  /** The CA state version `roots` belong to (a replicated store's; undefined for a CA directory). */
  readonly stateVersion?: () => number | undefined;
  /** The replicated store's head state version (read when a ConfigMap's stamp is newer than stateVersion). */
  readonly storeVersion?: () => Promise<number>;
  /** A pass this often even without a change (the ConfigMap may have been edited or recreated). */
  readonly resyncMs: number;
  /** After a failed pass, the next one in `initialMs`, doubling up to `maxMs` (defaults 1 s and 5 min), ±20 % jitter. */
  readonly backoff?: { readonly initialMs?: number; readonly maxMs?: number };
  /** Told of each pass's result (meshward_ca_dapr_trust_bundle_syncs_total). */
  readonly onResult?: (result: DaprTrustBundleSyncResult) => void;
  /** The time recorded in status() (tests). */
  readonly clock?: () => Date;
}

export const DAPR_TRUST_BUNDLE_SYNC_RESULTS = ["created", "updated", "unchanged", "behind", "error"] as const;
/** The CA state version of the roots a write carried (replicated store only). */
export const DAPR_TRUST_BUNDLE_VERSION_ANNOTATION = "meshward.io/ca-state-version";
export type DaprTrustBundleSyncResult = (typeof DAPR_TRUST_BUNDLE_SYNC_RESULTS)[number];

/** 409 answers (a write lost to another writer) followed by a new read within one pass. */
export const DAPR_TRUST_BUNDLE_CONFLICT_RETRIES = 5;
const DEFAULT_BACKOFF_MS = 1_000;
const DEFAULT_MAX_BACKOFF_MS = 5 * 60_000;

/**
 * Where the sync stands, for the CA's status page and status.json (never for /readyz: a failing
 * sync never makes the CA unready, as Sentry's readiness does not follow its ConfigMap either).
 */
export interface DaprTrustBundleSyncStatus {
  readonly namespace: string;
  readonly configMap: string;
  /** pending: no pass has ended yet; in-step: the last pass left the ConfigMap equal to the bundle; behind: left alone for a newer CA state; failing: the last pass failed (retried). */
  readonly state: "pending" | "in-step" | "behind" | "failing";
  readonly lastResult?: DaprTrustBundleSyncResult;
  readonly lastAttemptAt?: Date;
  /** The end of the last pass that did not fail. */
  readonly lastSuccessAt?: Date;
  /** The last write (create or update) and the resourceVersion the API server gave the object it wrote. */
  readonly lastWriteAt?: Date;
  readonly resourceVersion?: string;
  /** Passes failed in a row (0 once one succeeds). */
  readonly failures: number;
  /** The last failure, kept after a recovery (its time tells). */
  readonly lastError?: { readonly at: Date; readonly code: string; readonly status?: number; readonly reason?: string; readonly message: string };
  /** When the next attempt after a failure is due. */
  readonly retryAt?: Date;
}

export interface DaprTrustBundleSync {
  /** One pass now (or right after the one running); never rejects. */
  sync(): Promise<DaprTrustBundleSyncResult>;
  /** Where it stands now (a copy). */
  status(): DaprTrustBundleSyncStatus;
  /** Stops the timers; a pass running finishes. */
  close(): void;
}

interface ConfigMapObject {
  readonly metadata?: { readonly labels?: Readonly<Record<string, string>>; readonly annotations?: Readonly<Record<string, string>>; readonly resourceVersion?: string; readonly [key: string]: unknown };
  readonly data?: Readonly<Record<string, string>>;
  readonly [key: string]: unknown;
}

export function syncDaprTrustBundle(options: DaprTrustBundleSyncOptions): DaprTrustBundleSync {
  const { logger, namespace, connection } = options;
  const initialMs = options.backoff?.initialMs ?? DEFAULT_BACKOFF_MS;
  const maxMs = options.backoff?.maxMs ?? DEFAULT_MAX_BACKOFF_MS;
  const name = `${namespace}/${DAPR_TRUST_BUNDLE_NAME}`;
  const objectPath = `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps/${DAPR_TRUST_BUNDLE_NAME}`;
  const collectionPath = `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`;
  let closed = false;
  let failures = 0;
  let retryTimer: NodeJS.Timeout | undefined;
  let running: Promise<DaprTrustBundleSyncResult> | undefined;
  let again: Promise<DaprTrustBundleSyncResult> | undefined;
  const clock = options.clock ?? (() => new Date());
  let current: DaprTrustBundleSyncStatus = { namespace, configMap: DAPR_TRUST_BUNDLE_NAME, state: "pending", failures: 0 };
  /** The resourceVersion of the object the last successful write returned. */
  let writtenVersion: string | undefined;

  const reconcile = async (): Promise<DaprTrustBundleSyncResult> => {
    const roots = options.roots();
    const pem = daprTrustAnchorsPem(roots);
    const ours = roots.map((root) => root.fingerprint256);
    const version = options.stateVersion?.();
    const stamp = version !== undefined ? { [DAPR_TRUST_BUNDLE_VERSION_ANNOTATION]: String(version) } : {};
    for (let conflicts = 0; ; conflicts += 1) {
      const read = await connection.call("GET", objectPath);
      let answer: { status: number; json: unknown };
      let verb: "create" | "update";
      if (read.status === 404) {
        verb = "create";
        answer = await connection.call("POST", collectionPath, {
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: { name: DAPR_TRUST_BUNDLE_NAME, namespace, labels: { ...DAPR_TRUST_BUNDLE_LABELS }, ...(version !== undefined ? { annotations: stamp } : {}) },
          data: { [DAPR_TRUST_ANCHORS_KEY]: pem },
        });
      } else if (read.status === 200) {
        const existing = read.json as ConfigMapObject;
        const written = Number(existing.metadata?.annotations?.[DAPR_TRUST_BUNDLE_VERSION_ANNOTATION]);
        if (version !== undefined && Number.isSafeInteger(written) && written > version) {
          const head = await options.storeVersion?.();
          if (head !== undefined && written <= head) {
            logger.info(
              { event: "dapr-trust-bundle-behind", namespace, configMap: DAPR_TRUST_BUNDLE_NAME, stateVersion: version, written },
              `ConfigMap ${name} holds the roots of CA state ${written}, newer than this replica's ${version}: left alone until this replica adopts it`,
            );
            return "behind";
          }
          logger.warn(
            { event: "dapr-trust-bundle-stamp-unknown", namespace, configMap: DAPR_TRUST_BUNDLE_NAME, stateVersion: version, written, ...(head !== undefined ? { storeVersion: head } : {}) },
            `ConfigMap ${name} is stamped with CA state ${written}, which the store does not hold (its newest is ${head ?? "unknown"}): edited by hand, or the store was restored; written with this replica's roots`,
          );
        }
        const current = existing.data?.[DAPR_TRUST_ANCHORS_KEY];
        const labelled = Object.entries(DAPR_TRUST_BUNDLE_LABELS).every(([key, value]) => existing.metadata?.labels?.[key] === value);
        if (current === pem && labelled) return "unchanged";
        verb = "update";
        // Same object, same resourceVersion: the API server refuses it (409) if someone wrote in between.
        answer = await connection.call("PUT", objectPath, {
          ...existing,
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: {
            ...existing.metadata,
            labels: { ...existing.metadata?.labels, ...DAPR_TRUST_BUNDLE_LABELS },
            ...(version !== undefined || existing.metadata?.annotations !== undefined ? { annotations: { ...existing.metadata?.annotations, ...stamp } } : {}),
          },
          data: { ...existing.data, [DAPR_TRUST_ANCHORS_KEY]: pem },
        });
        if (answer.status === 200 || answer.status === 201) reportReplaced(current, ours);
      } else {
        throw apiFailure("read", read);
      }
      if (answer.status === 200 || answer.status === 201) {
        const written = (answer.json as ConfigMapObject | undefined)?.metadata?.resourceVersion;
        writtenVersion = typeof written === "string" ? written.slice(0, 64) : undefined;
        logger.info(
          { event: verb === "create" ? "dapr-trust-bundle-created" : "dapr-trust-bundle-updated", namespace, configMap: DAPR_TRUST_BUNDLE_NAME, roots: ours },
          `${verb === "create" ? "created" : "updated"} ConfigMap ${name} with the CA's ${ours.length} root${ours.length === 1 ? "" : "s"}: daprd sidecars created from now on trust ${ours.length === 1 ? "it" : "them"}`,
        );
        return verb === "create" ? "created" : "updated";
      }
      if (answer.status !== 409 || conflicts >= DAPR_TRUST_BUNDLE_CONFLICT_RETRIES) throw apiFailure(verb, answer, answer.status === 409 ? conflicts + 1 : undefined);
      logger.debug({ event: "dapr-trust-bundle-conflict", namespace, verb, conflicts: conflicts + 1 }, `another writer changed ConfigMap ${name} first (409): reading it again`);
    }
  };

  /** Anchors the ConfigMap held that are not the CA's, now replaced by the CA's bundle alone. */
  const reportReplaced = (current: string | undefined, ours: readonly string[]) => {
    if (current === undefined || current.trim() === "") return;
    let theirs: string[];
    try {
      theirs = certificatesFromPem(current).map((der) => new X509Certificate(der).fingerprint256);
    } catch {
      logger.warn({ event: "dapr-trust-bundle-replaced", namespace, configMap: DAPR_TRUST_BUNDLE_NAME, roots: ours }, `ConfigMap ${name} held a ca.crt that is not PEM certificates: replaced by the CA's bundle`);
      return;
    }
    const unknown = theirs.filter((fingerprint) => !ours.includes(fingerprint));
    if (unknown.length === 0) return;
    logger.warn(
      { event: "dapr-trust-bundle-replaced", namespace, configMap: DAPR_TRUST_BUNDLE_NAME, replaced: unknown, roots: ours },
      `ConfigMap ${name} held ${unknown.length} trust anchor${unknown.length === 1 ? "" : "s"} this CA does not know (Dapr Sentry's, a retired root, or written by hand): replaced by the CA's bundle alone, so daprd sidecars created from now on no longer trust ${unknown.length === 1 ? "it" : "them"}`,
    );
  };

  const apiFailure = (verb: "read" | "create" | "update", answer: { status: number; json: unknown }, conflicts?: number): MeshwardError => {
    const body = (answer.json ?? {}) as { reason?: unknown; message?: unknown };
    const reason = typeof body.reason === "string" ? body.reason.slice(0, 64) : undefined;
    const message = typeof body.message === "string" ? body.message.slice(0, 300) : "";
    const hint =
      answer.status === 401
        ? " (the CA's service-account token was not accepted)"
        : answer.status === 403
          ? ` (the CA's service account needs get and update on configmaps/${DAPR_TRUST_BUNDLE_NAME} and create on configmaps in namespace ${namespace}: deploy/kubernetes/components/dapr-trust-bundle)`
          : answer.status === 404
            ? ` (is namespace ${namespace} Dapr's control-plane namespace? daprTrustBundle.namespace, --dapr-trust-bundle-namespace)`
            : conflicts !== undefined
              ? ` (${conflicts} conflicts in a row)`
              : "";
    return new MeshwardError(
      "E_KUBERNETES_UNAVAILABLE",
      `the Kubernetes API refused to ${verb} ConfigMap ${name}: HTTP ${answer.status}${reason !== undefined ? ` ${reason}` : ""}${message !== "" ? `: ${message}` : ""}${hint}`,
      { details: { status: answer.status, ...(reason !== undefined ? { reason } : {}) } },
    );
  };

  const pass = async (): Promise<DaprTrustBundleSyncResult> => {
    clearTimeout(retryTimer);
    retryTimer = undefined;
    let result: DaprTrustBundleSyncResult;
    writtenVersion = undefined;
    try {
      result = await reconcile();
    } catch (error) {
      failures += 1;
      const base = Math.min(maxMs, initialMs * 2 ** Math.min(failures - 1, 30));
      const retryInMs = Math.round(base * (0.8 + 0.4 * Math.random()));
      const details = isMeshwardError(error) ? error.details : undefined;
      logger.warn(
        {
          event: "dapr-trust-bundle-sync-failed",
          namespace,
          configMap: DAPR_TRUST_BUNDLE_NAME,
          ...(details?.status !== undefined ? { status: details.status } : {}),
          ...(details?.reason !== undefined ? { reason: details.reason } : {}),
          error: describeError(error),
          failures,
          retryInMs,
        },
        `could not bring ConfigMap ${name} to the CA's trust bundle; retrying in ${Math.round(retryInMs / 100) / 10} s (daprd sidecars created meanwhile get the anchors it holds)`,
      );
      const at = clock();
      current = {
        ...current,
        state: "failing",
        lastResult: "error",
        lastAttemptAt: at,
        failures,
        lastError: {
          at,
          code: isMeshwardError(error) ? error.code : "E_KUBERNETES_UNAVAILABLE",
          ...(typeof details?.status === "number" ? { status: details.status } : {}),
          ...(typeof details?.reason === "string" ? { reason: details.reason } : {}),
          message: describeError(error).slice(0, 600),
        },
        retryAt: new Date(at.getTime() + retryInMs),
      };
      options.onResult?.("error");
      if (!closed) {
        retryTimer = setTimeout(() => void sync(), retryInMs);
        retryTimer.unref();
      }
      return "error";
    }
    if (failures > 0) logger.info({ event: "dapr-trust-bundle-sync-recovered", namespace, failures }, `ConfigMap ${name} is in step with the CA's trust bundle again after ${failures} failed attempt${failures === 1 ? "" : "s"}`);
    failures = 0;
    const at = clock();
    const { retryAt: _retryAt, ...rest } = current;
    current = {
      ...rest,
      state: result === "behind" ? "behind" : "in-step",
      lastResult: result,
      lastAttemptAt: at,
      lastSuccessAt: at,
      failures: 0,
      ...(writtenVersion !== undefined ? { lastWriteAt: at, resourceVersion: writtenVersion } : {}),
    };
    options.onResult?.(result);
    return result;
  };

  const sync = (): Promise<DaprTrustBundleSyncResult> => {
    if (running === undefined) {
      running = pass().finally(() => {
        running = undefined;
      });
      return running;
    }
    // A change seen while a pass runs gets a pass of its own, after it (one, however many changes).
    again ??= running.then(() => {
      again = undefined;
      return sync();
    });
    return again;
  };

  const resync = setInterval(() => void sync(), options.resyncMs);
  resync.unref();
  void sync();
  return {
    sync,
    status: () => ({ ...current }),
    close() {
      closed = true;
      clearInterval(resync);
      clearTimeout(retryTimer);
    },
  };
}
