import { identityFromPem, trustRootsFromPem } from "./certs.ts";
import { trustBundleVersionOfPem } from "../telemetry/bundle-version.ts";
import { createStatusRecorder, recordedSections, type StatusComponent, type StatusProvider, type StatusRecorder } from "./feed.ts";
import type { IdentitySource } from "../identity/source.ts";
import type { Health } from "../telemetry/health.ts";

/**
 * Status page feed for a component that holds one workload identity: its certificate,
 * the trust bundle, rotations (recorded from the identity's events) and health.
 */
export function identityStatus(options: { component: StatusComponent; name: string; source: IdentitySource; health: Health; recorder?: StatusRecorder }): {
  provider: StatusProvider;
  recorder: StatusRecorder;
  stop: () => void;
} {
  const recorder = options.recorder ?? createStatusRecorder();
  const stop = options.source.subscribe((event) => {
    if (event.type === "rotated") recorder.recordRotation({ kind: "workload", result: "ok", serial: event.snapshot.svid.serial });
    if (event.type === "renewal-failed") recorder.recordRotation({ kind: "workload", result: "error", error: (event.error as { code?: string }).code ?? "E_INTERNAL" });
  });
  const provider: StatusProvider = async () => {
    const current = options.source.current();
    const report = await options.health.run("readiness");
    return {
      component: options.component,
      name: options.name,
      generatedAt: new Date(),
      identities: current ? [identityFromPem(current.svid.certChainPem, "workload")] : [],
      roots: current ? trustRootsFromPem(current.bundle.rootsPem) : [],
      ...(current ? { bundleVersion: trustBundleVersionOfPem(current.bundle.rootsPem) } : {}),
      ...recordedSections(recorder),
      health: { ok: report.ok, checks: report.checks },
    };
  };
  return { provider, recorder, stop };
}
