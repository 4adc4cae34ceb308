import { statSync } from "node:fs";
import { describeError } from "../errors.ts";
import type { Clock, ClockTimer } from "../util/clock.ts";
import type { CaLayout, LoadedAnchors } from "./anchors.ts";

export interface AnchorWatcherOptions {
  readonly layout: CaLayout;
  readonly intervalMs: number;
  readonly clock: Clock;
  readonly load: () => LoadedAnchors;
  readonly onChange: (anchors: LoadedAnchors) => void;
  /** A changed set of files that does not load (bad issuer, key/cert mismatch, …); the old anchors stay. */
  readonly onRefused: (error: unknown) => void;
  /**
   * anchorFilesSignature() taken before the anchors in use were loaded: files changed since (by
   * another process on the same directory, while this one started) are picked up at the first poll.
   */
  readonly loadedSignature?: string;
}

/** What the watcher compares between polls: the anchor files' mtime, size and inode. */
export function anchorFilesSignature(layout: CaLayout): string {
  return [layout.state, layout.bundle, layout.issuerCert, layout.issuerKey, layout.previousIssuerCert, layout.previousIssuerKey, layout.retiredIssuers]
    .map((file) => {
      try {
        const s = statSync(file);
        return `${s.mtimeMs}:${s.size}:${s.ino}`;
      } catch {
        return "missing";
      }
    })
    .join("|");
}

/**
 * Picks up trust-anchor files changed on disk (by `meshward ca rotate-*`, cert-manager,
 * Vault or a person) while the CA serves. Files are polled (cheap stat calls) because
 * watchers miss atomic renames on some filesystems. A set that fails to load is reported
 * only if it is still the same on the next poll, so a writer's short window between the
 * key and the certificate is not mistaken for a bad file.
 */
export function watchAnchors(options: AnchorWatcherOptions): { check(): void; close(): void } {
  const signature = () => anchorFilesSignature(options.layout);
  let loaded = options.loadedSignature ?? signature();
  let failedOnce: string | undefined;
  let timer: ClockTimer | undefined;
  let closed = false;

  const check = () => {
    const current = signature();
    if (current === loaded) return;
    try {
      const anchors = options.load();
      loaded = current;
      failedOnce = undefined;
      options.onChange(anchors);
    } catch (error) {
      if (failedOnce === current) {
        loaded = current;
        options.onRefused(error);
      } else {
        failedOnce = current;
      }
    }
  };
  const schedule = () => {
    if (closed) return;
    timer = options.clock.setTimeout(() => {
      try {
        check();
      } catch (error) {
        options.onRefused(new Error(describeError(error)));
      }
      schedule();
    }, options.intervalMs);
  };
  schedule();
  return {
    check,
    close() {
      closed = true;
      if (timer) options.clock.clearTimeout(timer);
    },
  };
}
