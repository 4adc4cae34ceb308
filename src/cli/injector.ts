import type { Command } from "commander";
import { DEFAULT_WEBHOOK_MAX_CONNECTIONS, DEFAULT_WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS } from "../inject/webhook-limits.ts";
import type { InjectorOptions } from "./actions/injector.ts";
import { DEFAULT_AUDIENCE, defaultImage } from "./inject.ts";
import { collect, logFormatOption, logLevelOption } from "./options.ts";

// What `meshward injector` accepts; what it does is in ./actions/injector.ts, loaded when it runs.
const actions = () => import("./actions/injector.ts");

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
    .option("--dns-name <name>", "DNS name in the serving certificate (repeatable) (default: <app-id>.<namespace>.svc)", collect)
    .option("--image <image>", "sidecar image", defaultImage())
    .option("--ca-address <host:port>", "the CA as injected sidecars dial it (default: --ca)")
    .option("--audience <aud>", "audience of the projected service-account token in injected pods", DEFAULT_AUDIENCE)
    .option("--webhook-config <name>", "keep this MutatingWebhookConfiguration's caBundle equal to the CA's current bundle (needs get and patch on it)")
    .option("--api-server <url>", "the Kubernetes API server, for --webhook-config", "https://kubernetes.default.svc")
    .option("--api-token-file <file>", "service-account token for the API server", "/var/run/secrets/kubernetes.io/serviceaccount/token")
    .option("--api-ca-file <file>", "PEM roots of the API server's certificate", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
    .option("--bundle-refresh-interval <duration>", "how often the trust bundle is fetched from the CA (at least 1s)", "60s")
    .option("--max-connections <n>", `webhook connections open at once; more are reset on accept, before any TLS work (default: ${DEFAULT_WEBHOOK_MAX_CONNECTIONS})`)
    .option("--max-connections-per-address <n>", `webhook connections open at once from one source address (the API server's) (default: ${DEFAULT_WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS})`)
    .addOption(logFormatOption())
    .addOption(logLevelOption())
    .action(async (opts: InjectorOptions) => (await actions()).runInjector(opts));
}
