// What `meshward identity` does; what it accepts (its flags, its help) is ../identity.ts.
import type { OptionValues } from "commander";
import { createIdentity, type CaIdentitySource } from "../../identity/ca-source.ts";
import { startFileSink } from "../../identity/file-sink.ts";
import type { FileSink } from "../../identity/file-sink.ts";
import { instrumentIdentity, staleCrlWarning } from "../../identity/instrument.ts";
import { listenWorkloadApi, socketPathFrom, type WorkloadApiListener } from "../../identity/workload-api/index.ts";
import { MeshwardError } from "../../errors.ts";
import { createHealth, createOpsServer } from "../../telemetry/health.ts";
import { createMeshMetrics, createMetrics } from "../../telemetry/metrics.ts";
import { parseHostPort } from "../../util/address.ts";
import { formatCertificateTime } from "../../util/duration.ts";
import { reserveAddresses } from "../../util/listen.ts";
import { createStatusRoutes } from "../../dashboard/routes.ts";
import { identityStatus } from "../../dashboard/identity-feed.ts";
import { resolveStatusToken } from "../../dashboard/token.ts";
import { readBundleFile } from "../../identity/bundle-file.ts";
import { groupChangeRefusal, groupLabel, parseKeyFileMode, parseSocketMode, resolveFileOwner, resolveGroup } from "../../util/file-owner.ts";
import { readResumableSvid } from "../../identity/resume.ts";
import { checkSocketDir, outDirMode, prepareOutDir } from "../../identity/local-paths.ts";
import { VALIDATORS } from "../identity.ts";
import { cliLogger } from "../logger.ts";
import { bundleRefreshInterval } from "../duration-flags.ts";
import { checkIdentityFlags } from "../identity-flags.ts";
import { untilSignal, warnTokenOnCommandLine } from "../options.ts";

/** `meshward identity`: runs until SIGTERM or SIGINT. */
export async function runIdentity(opts: OptionValues): Promise<void> {
  if (opts.out === undefined && opts.workloadApiSocket === undefined) {
    throw new MeshwardError("E_USAGE", "say where the identity goes: --out DIR and/or --workload-api-socket PATH");
  }
  if (opts.onRotate !== undefined && opts.out === undefined) throw new MeshwardError("E_USAGE", "--on-rotate needs --out");
  if ((opts.owner !== undefined || opts.mode !== undefined) && opts.out === undefined) throw new MeshwardError("E_USAGE", "--owner and --mode apply to the files in --out; give --out DIR");
  // Resolved before the token is spent: an unknown user or a bad mode must not cost it.
  const owner = opts.owner !== undefined ? resolveFileOwner(opts.owner) : undefined;
  if (owner !== undefined && process.getuid?.() !== 0 && owner.uid !== process.getuid?.()) {
    throw new MeshwardError("E_USAGE", `--owner ${owner.label}: giving files to another user needs root (meshward runs as uid ${process.getuid?.()})`);
  }
  const keyMode = opts.mode !== undefined ? parseKeyFileMode(opts.mode) : undefined;
  if ((opts.workloadApiSocketMode !== undefined || opts.workloadApiSocketGroup !== undefined) && opts.workloadApiSocket === undefined) {
    throw new MeshwardError("E_USAGE", "--workload-api-socket-mode and --workload-api-socket-group apply to the Workload API socket; give --workload-api-socket PATH");
  }
  const socketMode = opts.workloadApiSocketMode !== undefined ? parseSocketMode(opts.workloadApiSocketMode, "--workload-api-socket-mode") : undefined;
  const socketGroup = opts.workloadApiSocketGroup !== undefined ? resolveGroup(opts.workloadApiSocketGroup, "--workload-api-socket-group") : undefined;
  const groupRefusal = socketGroup !== undefined ? groupChangeRefusal(socketGroup) : undefined;
  if (groupRefusal !== undefined) {
    throw new MeshwardError(
      "E_USAGE",
      `--workload-api-socket-group ${String(opts.workloadApiSocketGroup).trim()}: the socket cannot be given to group ${groupLabel(socketGroup!)}: ${groupRefusal}. Run meshward as a member of that group (or as root), or choose one of its groups`,
    );
  }
  const token = opts.token ?? (opts.tokenFile === undefined ? process.env.MESHWARD_TOKEN : undefined);
  const logger = cliLogger("identity", opts);
  if (opts.token !== undefined) warnTokenOnCommandLine(logger);
  // Local checks first: nothing may spend a single-use token and then fail on this host.
  checkIdentityFlags(opts);
  // Created for a server run as another user (--owner): it must be able to reach its files (they stay 0600, its own).
  const outDir = opts.out !== undefined ? prepareOutDir(opts.out, "--out", outDirMode(owner?.uid), owner?.uid) : undefined;
  if (opts.workloadApiSocket !== undefined) checkSocketDir(socketPathFrom(opts.workloadApiSocket), "--workload-api-socket");
  const resume = outDir !== undefined ? readResumableSvid(outDir, { namespace: opts.namespace, appId: opts.appId, now: new Date(), logger, ...(owner !== undefined ? { filesOwner: owner.uid } : {}) }) : undefined;
  if (token === undefined && opts.tokenFile === undefined && resume === undefined) {
    throw new MeshwardError("E_USAGE", `a token is needed: --token, --token-file or MESHWARD_TOKEN${outDir !== undefined ? ` (or a valid certificate and key from an earlier run in ${opts.out})` : ""}`);
  }
  // Checked before anything starts: a status page off loopback needs a token.
  const statusBind = opts.status !== undefined ? parseHostPort(opts.status, "--status") : undefined;
  const statusPageToken = statusBind !== undefined ? resolveStatusToken(statusBind.host, opts.statusTokenFile) : undefined;
  const bundleRefreshMs = bundleRefreshInterval(opts.bundleRefreshInterval);
  // Held from now on: a port in use must fail before the CA is asked (and a token spent).
  const reserved = await reserveAddresses(statusBind === undefined ? [] : [{ at: statusBind, what: "the status endpoints" }]);
  const closers: (() => Promise<void>)[] = [() => reserved.release()];
  let source: CaIdentitySource | undefined;
  let stopInstrumenting = (): void => undefined;
  let statusAddress: string | undefined;
  try {
    // Bound before the CA is asked, answering UNAVAILABLE until the first certificate: a live
    // or stale socket, a file in the way or a path too long must not cost the token.
    let api: WorkloadApiListener | undefined;
    if (opts.workloadApiSocket !== undefined) {
      api = await listenWorkloadApi({
        socketPath: opts.workloadApiSocket,
        logger,
        ...(socketMode !== undefined ? { socketMode } : {}),
        ...(socketGroup !== undefined ? { socketGroup } : {}),
      });
      closers.push(() => api!.close());
    }
    const metrics = createMetrics({ processMetrics: true });
    const mesh = createMeshMetrics(metrics);
    const identity = createIdentity({
      ca: opts.ca,
      // It exits when ready() rejects: every such failure also stops the identity ("not retrying").
      stopsWhenReadyRejects: true,
      bundlePem: readBundleFile(opts.bundle),
      validator: VALIDATORS[opts.validator as keyof typeof VALIDATORS],
      bundleRefreshMs,
      logger,
      ...(token !== undefined ? { token } : {}),
      ...(opts.tokenFile !== undefined ? { tokenFile: opts.tokenFile } : {}),
      ...(opts.namespace !== undefined ? { namespace: opts.namespace } : {}),
      ...(opts.appId !== undefined ? { appId: opts.appId } : {}),
      ...(opts.dnsName !== undefined ? { dnsNames: opts.dnsName } : {}),
      ...(resume !== undefined ? { resume } : {}),
    });
    source = identity;
    stopInstrumenting = instrumentIdentity(identity, mesh);
    api?.serve(identity);
    // Installed before the first certificate: with the CA down, only unref'd retry timers
    // run, and the process would exit (code 13) instead of waiting for the CA.
    const stopped = untilSignal();
    const snapshot = await Promise.race([identity.ready(), stopped.then(() => undefined)]);
    if (snapshot === undefined) {
      logger.info({ event: "stopped" }, "stopped before the first certificate arrived");
      return;
    }
    let sink: FileSink | undefined;
    if (opts.out !== undefined) {
      const files = startFileSink({
        source: identity,
        dir: outDir ?? opts.out,
        logger,
        ...(opts.onRotate !== undefined ? { onRotate: opts.onRotate } : {}),
        ...(owner !== undefined ? { owner } : {}),
        ...(keyMode !== undefined ? { keyMode } : {}),
      });
      sink = files;
      closers.push(() => files.close());
      await files.ready();
    }
    if (statusBind !== undefined) {
      const health = createHealth();
      health.register("identity", () => {
        const current = identity.current();
        const problem = identity.problem();
        if (current === undefined) return { ok: false, detail: problem ?? "no valid certificate (expired or not yet issued)" };
        if (problem !== undefined) return { ok: false, detail: problem };
        const stale = staleCrlWarning(current.bundle, Date.now());
        return { ok: true, detail: `${current.svid.spiffeId} valid until ${formatCertificateTime(current.svid.notAfter)}${stale === undefined ? "" : `; ${stale}`}` };
      });
      if (sink !== undefined) {
        const files = sink;
        health.register("files", () => {
          const problem = files.problem();
          return problem === undefined ? { ok: true, detail: `${files.paths.cert} holds the current certificate` } : { ok: false, detail: problem };
        });
      }
      const { host, port } = statusBind;
      await reserved.release();
      const page = identityStatus({ component: "identity", name: snapshot.svid.spiffeId, source: identity, health });
      closers.push(async () => page.stop());
      const ops = createOpsServer({ host, port, metrics, health, logger, extraRoutes: createStatusRoutes(page.provider, statusPageToken === undefined ? {} : { token: statusPageToken }).routes });
      const bound = await ops.start();
      closers.push(() => ops.close());
      statusAddress = `${bound.host}:${bound.port}`;
      logger.info({ event: "status-listening", address: statusAddress }, "status endpoints listening");
    }
    process.stdout.write(`meshward identity ready: ${snapshot.svid.spiffeId} (serial ${snapshot.svid.serial}, valid until ${formatCertificateTime(snapshot.svid.notAfter)})${statusAddress ? ` status=${statusAddress}` : ""}\n`);
    const reason = await stopped;
    logger.info({ event: "identity-stopping", signal: reason }, "stopping");
  } finally {
    stopInstrumenting();
    for (const close of closers.reverse()) await close();
    await source?.close();
  }
  // Said once everything is closed (the files stay in --out; the Workload API socket is removed).
  logger.info({ event: "stopped" }, "identity stopped");
}
