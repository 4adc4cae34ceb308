// What `meshward ca serve` does (its flags are in ../ca.ts): kept apart from ./ca.ts so that the
// short `ca` subcommands do not load the CA server and what it brings (gRPC, undici, jose,
// prom-client, pino, the config schema), about 0.1 s of CPU at each start.
import type { OptionValues } from "commander";
import { parse as parseYaml } from "yaml";
import { caConfigSchema, type CaConfig } from "../../config/ca.ts";
import { loadYamlConfig } from "../../config/load.ts";
import { startCaServer } from "../../ca/server.ts";
import { MeshwardError } from "../../errors.ts";
import { INPUT_LIMITS } from "../../util/read-input.ts";
import { cliLogger } from "../logger.ts";
import { readPassphrase, readTextFile, untilSignal, wholeNumber } from "../options.ts";

/** `meshward ca serve`. */
export async function caServe(opts: OptionValues): Promise<void> {
  const config = resolveCaConfig(opts);
  const logger = cliLogger("ca", opts);
  const passphrase = readPassphrase(opts.passphraseFile);
  const server = await startCaServer({ dir: opts.dir, config, logger, ...(passphrase !== undefined ? { passphrase } : {}) });
  const stopped = untilSignal();
  process.stdout.write(`meshward CA listening on ${server.address} as ${server.spiffeId}\n`);
  if (server.status !== undefined) process.stdout.write(`status page: ${server.status.url}/\n`);
  const signal = await stopped;
  logger.info({ event: "ca-stopping", signal }, "stopping");
  await server.close();
}

/** `ca serve` flags by the config key they set (for naming them in errors). */
const CA_SERVE_FLAGS: Readonly<Record<string, string>> = {
  listen: "--listen",
  store: "--store",
  status: "--status",
  statusTokenFile: "--status-token-file",
  workloadTtl: "--workload-ttl",
  clockSkew: "--clock-skew",
  dnsNames: "--dns-name",
  servingSpiffeId: "--serving-spiffe-id",
  defaultValidator: "--default-validator",
  handshakeTimeout: "--handshake-timeout",
  maxConnections: "--max-connections",
  maxConnectionsPerAddress: "--max-connections-per-address",
  statusMaxConnections: "--status-max-connections",
  statusMaxConnectionsPerAddress: "--status-max-connections-per-address",
  daprTrustBundle: "--dapr-trust-bundle-namespace",
};

/** Config file, then flags on top; both validated by the same zod schema. */
function resolveCaConfig(opts: Record<string, unknown>): CaConfig {
  const flags: Record<string, unknown> = {
    listen: opts.listen,
    store: opts.store,
    status: opts.status,
    statusTokenFile: opts.statusTokenFile,
    workloadTtl: opts.workloadTtl,
    clockSkew: opts.clockSkew,
    dnsNames: opts.dnsName,
    servingSpiffeId: opts.servingSpiffeId,
    defaultValidator: opts.defaultValidator,
    allowInsecureDev: opts.allowInsecureDev === true ? true : undefined,
    handshakeTimeout: opts.handshakeTimeout,
    maxConnections: wholeNumber(opts.maxConnections, "--max-connections"),
    maxConnectionsPerAddress: wholeNumber(opts.maxConnectionsPerAddress, "--max-connections-per-address"),
    statusMaxConnections: wholeNumber(opts.statusMaxConnections, "--status-max-connections"),
    statusMaxConnectionsPerAddress: wholeNumber(opts.statusMaxConnectionsPerAddress, "--status-max-connections-per-address"),
  };
  if (opts.jwksFile !== undefined || opts.jwksUrl !== undefined) {
    flags.jwks = { jwksFile: opts.jwksFile, jwksUrl: opts.jwksUrl, issuer: opts.jwtIssuer, audience: opts.jwtAudience, mapping: opts.jwtMapping };
  }
  let fileValues: Record<string, unknown> = {};
  if (typeof opts.config === "string") {
    // Validate the file alone first so its errors carry file:line:column.
    loadYamlConfig(opts.config, caConfigSchema);
    fileValues = (parseYaml(readTextFile(opts.config, "config file", INPUT_LIMITS.config)) ?? {}) as Record<string, unknown>;
  }
  if (opts.daprTrustBundleNamespace !== undefined) {
    // The flag sets the namespace; the file's other daprTrustBundle fields (apiServer, …) stay.
    const fromFile = fileValues.daprTrustBundle;
    flags.daprTrustBundle = { ...(fromFile !== null && typeof fromFile === "object" && !Array.isArray(fromFile) ? fromFile : {}), namespace: opts.daprTrustBundleNamespace };
  }
  const merged = { ...fileValues, ...dropUndefined(flags) };
  const parsed = caConfigSchema.safeParse(merged);
  if (!parsed.success) {
    // A value given as a flag is named by its flag (`--workload-ttl: workloadTtl: …`), as the sidecar does.
    const flagOf = (key: PropertyKey | undefined) => (typeof key === "string" && flags[key] !== undefined ? CA_SERVE_FLAGS[key] : undefined);
    // Only the command line at fault (no --config, or every issue names a flag): a usage error
    // (exit 2, src/cli/usage.ts); anything from the --config file: exit 1.
    const onlyFlags = typeof opts.config !== "string" || parsed.error.issues.every((i) => flagOf(i.path[0]) !== undefined);
    throw new MeshwardError(
      "E_CONFIG_INVALID",
      parsed.error.issues
        .map((i) => {
          const flag = flagOf(i.path[0]);
          return `${flag !== undefined ? `${flag}: ` : ""}${i.path.join(".") || "config"}: ${i.message}`;
        })
        .join("\n"),
      onlyFlags ? { details: { usage: true } } : {},
    );
  }
  return parsed.data;
}

function dropUndefined(values: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(values)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => [k, v !== null && typeof v === "object" && !Array.isArray(v) ? dropUndefined(v as Record<string, unknown>) : v]),
  );
}
