import { MeshwardError } from "../errors.ts";
import { identityFromPem, trustRootsFromPem } from "../dashboard/certs.ts";
import { createStatusRecorder, type StatusComponent, type StatusProvider, type StatusRecorder } from "../dashboard/feed.ts";
import { statusTokenRequired } from "../dashboard/routes.ts";
import type { IdentitySource } from "../identity/source.ts";
import type { Health } from "../telemetry/health.ts";
import { readTextFile } from "./options.ts";

/**
 * Status page feed for a component that holds one workload identity: its certificate,
 * the trust bundle, rotations (recorded from the identity's events) and health.
 */
export function identityStatus(options: { component: StatusComponent; name: string; source: IdentitySource; health: Health }): { provider: StatusProvider; recorder: StatusRecorder; stop: () => void } {
  const recorder = createStatusRecorder();
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
      rotations: recorder.rotations(),
      handshakeFailures: recorder.handshakeFailures(),
      denials: recorder.denials(),
      refusals: recorder.refusals(),
      health: { ok: report.ok, checks: report.checks },
    };
  };
  return { provider, recorder, stop };
}

/** The status token: required (at least 16 characters) when the status port is not on loopback. */
export function statusToken(host: string, tokenFile: string | undefined): string | undefined {
  const token = tokenFile === undefined ? process.env.MESHWARD_STATUS_TOKEN : readTextFile(tokenFile, "status token file").trim();
  if (statusTokenRequired(host) && (token === undefined || token === "")) {
    throw new MeshwardError(
      "E_STATUS_TOKEN_REQUIRED",
      `the status port ${host} is not on loopback, so its page needs a token: --status-token-file FILE or MESHWARD_STATUS_TOKEN (generate one with 'openssl rand -hex 32')`,
    );
  }
  return token === "" ? undefined : token;
}
