import type { Command } from "commander";
import { createIdentity, type CaIdentitySource } from "../identity/ca-source.ts";
import { startFileSink } from "../identity/file-sink.ts";
import { instrumentIdentity } from "../identity/instrument.ts";
import { listenWorkloadApi, socketPathFrom, type WorkloadApiListener } from "../identity/workload-api/index.ts";
import { MeshwardError } from "../errors.ts";
import { createHealth, createOpsServer } from "../telemetry/health.ts";
import { createMeshMetrics, createMetrics } from "../telemetry/metrics.ts";
import { parseHostPort } from "../util/address.ts";
import { reserveAddresses } from "../util/listen.ts";
import { parseDuration } from "../util/duration.ts";
import { createStatusRoutes } from "../dashboard/routes.ts";
import { identityStatus } from "../dashboard/identity-feed.ts";
import { resolveStatusToken } from "../dashboard/token.ts";
import { readBundleFile } from "../identity/bundle-file.ts";
import { parseKeyFileMode, resolveFileOwner } from "../util/file-owner.ts";
import { readResumableSvid } from "../identity/resume.ts";
import { checkSocketDir, prepareOutDir } from "../identity/local-paths.ts";
import { cliLogger, collect, logFormatOption, logLevelOption, untilSignal, validatorOption, warnTokenOnCommandLine } from "./options.ts";

const VALIDATORS = { "join-token": "JOIN_TOKEN", jwks: "JWKS", kubernetes: "KUBERNETES", insecure: "INSECURE" } as const;

export function registerIdentityCommand(program: Command): void {
  program
    .command("identity")
    .description("keep a workload identity fresh: get it from the CA, renew it before expiry, and hand it to files on disk and the SPIFFE Workload API")
    .requiredOption("--ca <addr>", "CA address HOST:PORT, or the replicas' addresses comma-separated")
    .requiredOption("--bundle <file>", "bootstrap trust bundle (PEM) that the CA's certificate must chain to")
    .option("--token <token>", "join token or JWT for the first certificate; visible to every local user in the process list (warned): prefer --token-file or MESHWARD_TOKEN")
    .option("--token-file <file>", "file holding the token, re-read at each use (Kubernetes projected tokens rotate)")
    .addOption(validatorOption("--validator <name>", "how the CA checks the token", Object.keys(VALIDATORS), "join-token"))
    .option("--namespace <ns>", "namespace to ask for (checked against what the CA issues)")
    .option("--app-id <id>", "app id to ask for (checked against what the CA issues)")
    .option("--dns-name <name>", "DNS name for the certificate (repeatable; the token must allow it)", collect)
    .option("--out <dir>", "write cert.pem, key.pem (0600) and bundle.pem here on every rotation (created 0700 when missing; refused when another user can write to it); a valid certificate left here by an earlier run renews the identity without a new token")
    .option("--owner <user[:group]>", "owner of the files written to --out (e.g. postgres, whose server requires its key file to be its own); needs root unless it is you")
    .option("--mode <octal>", "mode of key.pem in --out: 0600 (default), 0400, 0640 or 0440 (group-readable, e.g. --owner root:postgres --mode 0640)")
    .option("--on-rotate <command>", "shell command run after each write, retried with backoff while it fails (e.g. 'nginx -s reload'; as root for a server run as another user: 'runuser -u postgres -- pg_ctl reload -D DATA')")
    .option("--workload-api-socket <path>", "serve the SPIFFE Workload API on this unix socket")
    .option("--status <addr>", "serve /metrics, /healthz, /readyz and the status page (/) on HOST:PORT")
    .option("--status-token-file <file>", "token for the status page (required when --status is not on loopback; or MESHWARD_STATUS_TOKEN)")
    .option("--bundle-refresh-interval <duration>", "how often the trust bundle and CRL are fetched from the CA", "60s")
    .addOption(logFormatOption())
    .addOption(logLevelOption())
    .action(async (opts) => {
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
      const token = opts.token ?? (opts.tokenFile === undefined ? process.env.MESHWARD_TOKEN : undefined);
      const logger = cliLogger("identity", opts);
      if (opts.token !== undefined) warnTokenOnCommandLine(logger);
      // Local checks first: nothing may spend a single-use token and then fail on this host.
      // Created for a server run as another user (--owner): it must be able to reach its files (they stay 0600, its own).
      const outDir = opts.out !== undefined ? prepareOutDir(opts.out, "--out", owner === undefined ? 0o700 : 0o755, owner?.uid) : undefined;
      if (opts.workloadApiSocket !== undefined) checkSocketDir(socketPathFrom(opts.workloadApiSocket), "--workload-api-socket");
      const resume = outDir !== undefined ? readResumableSvid(outDir, { namespace: opts.namespace, appId: opts.appId, now: new Date(), logger, ...(owner !== undefined ? { filesOwner: owner.uid } : {}) }) : undefined;
      if (token === undefined && opts.tokenFile === undefined && resume === undefined) {
        throw new MeshwardError("E_USAGE", `a token is needed: --token, --token-file or MESHWARD_TOKEN${outDir !== undefined ? ` (or a valid certificate and key from an earlier run in ${opts.out})` : ""}`);
      }
      // Checked before anything starts: a status page off loopback needs a token.
      const statusBind = opts.status !== undefined ? parseHostPort(opts.status, "--status") : undefined;
      const statusPageToken = statusBind !== undefined ? resolveStatusToken(statusBind.host, opts.statusTokenFile) : undefined;
      const bundleRefreshMs = parseDuration(opts.bundleRefreshInterval, "--bundle-refresh-interval");
      if (bundleRefreshMs < 1000) throw new MeshwardError("E_USAGE", "--bundle-refresh-interval: at least 1s");
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
          api = await listenWorkloadApi({ socketPath: opts.workloadApiSocket, logger });
          closers.push(() => api!.close());
        }
        const metrics = createMetrics({ processMetrics: true });
        const mesh = createMeshMetrics(metrics);
        const identity = createIdentity({
          ca: opts.ca,
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
        if (opts.out !== undefined) {
          const sink = startFileSink({
            source: identity,
            dir: outDir ?? opts.out,
            logger,
            ...(opts.onRotate !== undefined ? { onRotate: opts.onRotate } : {}),
            ...(owner !== undefined ? { owner } : {}),
            ...(keyMode !== undefined ? { keyMode } : {}),
          });
          closers.push(() => sink.close());
          await sink.ready();
        }
        if (statusBind !== undefined) {
          const health = createHealth();
          health.register("identity", () => {
            const current = identity.current();
            return current ? { ok: true, detail: `${current.svid.spiffeId} valid until ${current.svid.notAfter.toISOString()}` } : { ok: false, detail: "no valid certificate (expired or not yet issued)" };
          });
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
        process.stdout.write(`meshward identity ready: ${snapshot.svid.spiffeId} (serial ${snapshot.svid.serial}, valid until ${snapshot.svid.notAfter.toISOString()})${statusAddress ? ` status=${statusAddress}` : ""}\n`);
        await stopped;
      } finally {
        stopInstrumenting();
        for (const close of closers.reverse()) await close();
        await source?.close();
      }
    });
}
