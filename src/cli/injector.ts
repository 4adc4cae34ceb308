import { Option, type Command } from "commander";
import { MeshwardError } from "../errors.ts";
import { createIdentity } from "../identity/ca-source.ts";
import { readBundleFile } from "../identity/bundle-file.ts";
import { instrumentIdentity } from "../identity/instrument.ts";
import { createMeshMetrics, createMetrics } from "../telemetry/metrics.ts";
import { createInjectorMetrics } from "../inject/metrics.ts";
import { syncWebhookCaBundle } from "../inject/webhook-ca-bundle.ts";
import { DEFAULT_WEBHOOK_MAX_CONNECTIONS, DEFAULT_WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS } from "../inject/webhook-limits.ts";
import { startWebhookServer } from "../inject/webhook-server.ts";
import { parseDuration } from "../util/duration.ts";
import { parseHostPort } from "../util/address.ts";
import { DEFAULT_AUDIENCE, defaultImage } from "./inject.ts";
import { cliLogger, collect, logFormatOption, logLevelOption, untilSignal, wholeNumber } from "./options.ts";

interface InjectorOptions {
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

export function registerInjectorCommand(program: Command): void {
  program
    .command("injector")
    .description(
      "run the sidecar injector: a mutating admission webhook (AdmissionReview v1, JSONPatch on POST /mutate) doing what 'meshward inject' does, over TLS with a certificate from the CA for its Service's DNS name. Prints one ready line.",
    )
    .requiredOption("--ca <addr>", "the CA (HOST:PORT)")
    .requiredOption("--bundle <file>", "bootstrap trust bundle (the CA's bundle.pem); injected pods get the CA's current bundle")
    .requiredOption("--token-file <file>", "the injector's projected service-account token (audience: the CA's)")
    .option("--listen <addr>", "HOST:PORT for the webhook", "0.0.0.0:8443")
    .option("--namespace <ns>", "the injector's own namespace, whose pods are never mutated (default: $POD_NAMESPACE)")
    .option("--app-id <id>", "the injector's ServiceAccount (and Service) name", "meshward-injector")
    .option("--dns-name <name>", "DNS name in the serving certificate (repeatable) [default: <app-id>.<namespace>.svc]", collect)
    .option("--image <image>", "sidecar image", defaultImage())
    .option("--ca-address <host:port>", "the CA as injected sidecars dial it [default: --ca]")
    .option("--audience <aud>", "audience of the projected service-account token in injected pods", DEFAULT_AUDIENCE)
    .option("--webhook-config <name>", "keep this MutatingWebhookConfiguration's caBundle equal to the CA's current bundle (needs get and patch on it)")
    .option("--api-server <url>", "the Kubernetes API server, for --webhook-config", "https://kubernetes.default.svc")
    .option("--api-token-file <file>", "service-account token for the API server", "/var/run/secrets/kubernetes.io/serviceaccount/token")
    .option("--api-ca-file <file>", "PEM roots of the API server's certificate", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
    .option("--bundle-refresh-interval <duration>", "how often the trust bundle is fetched from the CA", "60s")
    .option("--max-connections <n>", `webhook connections open at once; more are reset on accept, before any TLS work [default: ${DEFAULT_WEBHOOK_MAX_CONNECTIONS}]`)
    .option("--max-connections-per-address <n>", `webhook connections open at once from one source address (the API server's) [default: ${DEFAULT_WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS}]`)
    .addOption(logFormatOption())
    .addOption(logLevelOption())
    .action(async (opts: InjectorOptions) => {
      const namespace = opts.namespace ?? process.env.POD_NAMESPACE;
      if (namespace === undefined || namespace === "") {
        throw new MeshwardError("E_USAGE", "the injector's namespace is needed (its own pods are never mutated): --namespace or POD_NAMESPACE");
      }
      const listen = parseHostPort(opts.listen, "--listen");
      const maxConnections = atLeastOne(wholeNumber(opts.maxConnections, "--max-connections"), "--max-connections");
      const maxConnectionsPerAddress = atLeastOne(wholeNumber(opts.maxConnectionsPerAddress, "--max-connections-per-address"), "--max-connections-per-address");
      parseHostPort(opts.caAddress ?? opts.ca, "--ca-address");
      const logger = cliLogger("injector", opts);
      const identity = createIdentity({
        ca: opts.ca,
        bundlePem: readBundleFile(opts.bundle),
        namespace,
        appId: opts.appId,
        tokenFile: opts.tokenFile,
        validator: "KUBERNETES",
        dnsNames: opts.dnsName ?? [`${opts.appId}.${namespace}.svc`],
        bundleRefreshMs: parseDuration(opts.bundleRefreshInterval, "--bundle-refresh-interval"),
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
    });
}

function atLeastOne(value: number | undefined, flag: string): number | undefined {
  if (value === 0) throw new MeshwardError("E_USAGE", `${flag} must be at least 1 (0 would refuse every connection)`);
  return value;
}
