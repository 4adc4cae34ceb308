// What `meshward injector` does; what it accepts (its flags, its help) is ../injector.ts.
import { MeshwardError } from "../../errors.ts";
import { createIdentity } from "../../identity/ca-source.ts";
import { readBundleFile } from "../../identity/bundle-file.ts";
import { instrumentIdentity } from "../../identity/instrument.ts";
import { createMeshMetrics, createMetrics } from "../../telemetry/metrics.ts";
import { createInjectorMetrics } from "../../inject/metrics.ts";
import { syncWebhookCaBundle } from "../../inject/webhook-ca-bundle.ts";
import { startWebhookServer } from "../../inject/webhook-server.ts";
import { parseHostPort } from "../../util/address.ts";
import { cliLogger } from "../logger.ts";
import { bundleRefreshInterval } from "../duration-flags.ts";
import { untilSignal, wholeNumber } from "../options.ts";

export interface InjectorOptions {
  listen: string;
  ca: string;
  bundle: string;
  tokenFile: string;
  namespace?: string;
  appId: string;
  dnsName?: string[];
  image: string;
  caAddress?: string;
  audience: string;
  webhookConfig?: string;
  apiServer: string;
  apiTokenFile: string;
  apiCaFile: string;
  bundleRefreshInterval: string;
  maxConnections?: string;
  maxConnectionsPerAddress?: string;
  logFormat: string;
  logLevel: string;
}

/** `meshward injector`: the admission webhook, until SIGTERM or SIGINT. */
export async function runInjector(opts: InjectorOptions): Promise<void> {
  const namespace = opts.namespace ?? process.env.POD_NAMESPACE;
  if (namespace === undefined || namespace === "") {
    throw new MeshwardError("E_USAGE", "the injector's namespace is needed (its own pods are never mutated): --namespace or POD_NAMESPACE");
  }
  const listen = parseHostPort(opts.listen, "--listen");
  const maxConnections = atLeastOne(wholeNumber(opts.maxConnections, "--max-connections"), "--max-connections");
  const maxConnectionsPerAddress = atLeastOne(wholeNumber(opts.maxConnectionsPerAddress, "--max-connections-per-address"), "--max-connections-per-address");
  parseHostPort(opts.caAddress ?? opts.ca, "--ca-address");
  // As for identity and sidecar: 0 would fetch the bundle and CRL from the CA in a tight loop.
  const bundleRefreshMs = bundleRefreshInterval(opts.bundleRefreshInterval);
  const logger = cliLogger("injector", opts);
  const identity = createIdentity({
    ca: opts.ca,
    // It exits when ready() rejects (startWebhookServer waits on it): every such failure also stops the identity.
    stopsWhenReadyRejects: true,
    bundlePem: readBundleFile(opts.bundle),
    namespace,
    appId: opts.appId,
    tokenFile: opts.tokenFile,
    validator: "KUBERNETES",
    dnsNames: opts.dnsName ?? [`${opts.appId}.${namespace}.svc`],
    bundleRefreshMs,
    logger,
  });
  // GET /metrics on the webhook port: the serving certificate's expiry and renewals (the
  // workload certificate alerts), reviews, refused connections and caBundle syncs.
  const metrics = createMetrics({ processMetrics: true });
  const stopInstrumenting = instrumentIdentity(identity, createMeshMetrics(metrics));
  const injectorMetrics = createInjectorMetrics(metrics);
  // Before the first certificate: with the CA down it retries, and SIGTERM then stops it cleanly.
  const stopped = untilSignal();
  let server;
  try {
    const starting = startWebhookServer({
      listen,
      identity,
      inject: { image: opts.image, caAddress: opts.caAddress ?? opts.ca, audience: opts.audience },
      ownNamespace: namespace,
      logger,
      metrics,
      ...(maxConnections !== undefined ? { maxConnections } : {}),
      ...(maxConnectionsPerAddress !== undefined ? { maxConnectionsPerAddress } : {}),
    });
    starting.catch(() => undefined); // stopped first: closing the identity rejects it
    server = await Promise.race([starting, stopped.then(() => undefined)]);
  } catch (error) {
    stopInstrumenting();
    await identity.close();
    throw error;
  }
  if (server === undefined) {
    logger.info({ event: "stopped" }, "stopped before the first certificate arrived");
    stopInstrumenting();
    await identity.close();
    return;
  }
  const caBundle =
    opts.webhookConfig === undefined
      ? undefined
      : syncWebhookCaBundle({
          api: { apiServer: opts.apiServer, tokenFile: opts.apiTokenFile, caFile: opts.apiCaFile },
          webhookConfiguration: opts.webhookConfig,
          identity,
          logger,
          onResult: (result) => injectorMetrics.caBundleSync(result),
        });
  const snapshot = identity.current();
  process.stdout.write(`meshward injector ready: id=${snapshot?.svid.spiffeId ?? "?"} listen=${server.address}\n`);
  const signal = await stopped;
  logger.info({ event: "signal", signal }, "shutting down");
  caBundle?.stop();
  await server.close();
  stopInstrumenting();
  await identity.close();
}

function atLeastOne(value: number | undefined, flag: string): number | undefined {
  if (value === 0) throw new MeshwardError("E_USAGE", `${flag} must be at least 1 (0 would refuse every connection)`);
  return value;
}
