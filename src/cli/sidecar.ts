import { InvalidArgumentError, Option, type Command, type OptionValues } from "commander";
import { SIDECAR_FIELD_HELP, SIDECAR_LIMIT_HELP } from "../config/sidecar-fields.ts";
import { collect, validatorOption } from "./options.ts";

// What `meshward sidecar` accepts; what it does is in ./actions/sidecar.ts, loaded when it runs.
const actions = () => import("./actions/sidecar.ts");

/** Flag → config field (top level, or limits.<field>). */
export const SCALAR_FLAGS: readonly (readonly [flag: string, key: string, path: readonly string[], kind?: "number"])[] = [
  ["--app-id <id>", "appId", ["appId"]],
  ["--namespace <ns>", "namespace", ["namespace"]],
  ["--trust-domain <td>", "trustDomain", ["trustDomain"]],
  ["--ca <addr>", "ca", ["ca"]],
  ["--bundle <file>", "bundle", ["bundle"]],
  ["--token <token>", "token", ["token"]],
  ["--token-file <file>", "tokenFile", ["tokenFile"]],
  ["--out <dir>", "out", ["out"]],
  ["--inbound <addr>", "inbound", ["inbound"]],
  ["--app <addr>", "app", ["app"]],
  ["--outbound <addr>", "outbound", ["outbound"]],
  ["--peer-template <template>", "peerTemplate", ["peerTemplate"]],
  ["--peer-port <port>", "peerPort", ["peerPort"], "number"],
  ["--policy <file>", "policy", ["policy"]],
  ["--status <addr>", "status", ["status"]],
  ["--status-token-file <file>", "statusTokenFile", ["statusTokenFile"]],
  ["--policy-reload-interval <duration>", "policyReloadInterval", ["policyReloadInterval"]],
  ["--bundle-refresh-interval <duration>", "bundleRefreshInterval", ["bundleRefreshInterval"]],
  ["--max-header-bytes <n>", "maxHeaderBytes", ["limits", "maxHeaderBytes"], "number"],
  ["--headers-timeout <duration>", "headersTimeout", ["limits", "headersTimeout"]],
  ["--handshake-timeout <duration>", "handshakeTimeout", ["limits", "handshakeTimeout"]],
  ["--idle-timeout <duration>", "idleTimeout", ["limits", "idleTimeout"]],
  ["--upgrade-idle-timeout <duration>", "upgradeIdleTimeout", ["limits", "upgradeIdleTimeout"]],
  ["--max-connection-age <duration>", "maxConnectionAge", ["limits", "maxConnectionAge"]],
  ["--drain-timeout <duration>", "drainTimeout", ["limits", "drainTimeout"]],
  ["--max-connections <n>", "maxConnections", ["limits", "maxConnections"], "number"],
  ["--max-connections-per-address <n>", "maxConnectionsPerAddress", ["limits", "maxConnectionsPerAddress"], "number"],
  ["--status-max-connections <n>", "statusMaxConnections", ["limits", "statusMaxConnections"], "number"],
  ["--status-max-connections-per-address <n>", "statusMaxConnectionsPerAddress", ["limits", "statusMaxConnectionsPerAddress"], "number"],
  ["--max-concurrent-streams <n>", "maxConcurrentStreams", ["limits", "maxConcurrentStreams"], "number"],
  ["--max-held-request-bytes <n>", "maxHeldRequestBytes", ["limits", "maxHeldRequestBytes"], "number"],
  ["--max-handshake-bytes <n>", "maxHandshakeBytes", ["limits", "maxHandshakeBytes"], "number"],
];

const FIELD_HELP: Record<string, string> = { ...SIDECAR_FIELD_HELP, ...SIDECAR_LIMIT_HELP };

/** Where a flag's help differs from its config field's. */
const FLAG_HELP: Record<string, string> = {
  token: "Join token or JWT for the first certificate; visible to every local user in the process list (warned): prefer --token-file or MESHWARD_TOKEN.",
};

export function registerSidecarCommand(program: Command): void {
  const command = program
    .command("sidecar")
    .description(
      "run the meshward sidecar: mTLS in front of an app (inbound), mTLS to other apps' sidecars (outbound), access policy, TLS origination (egress). Prints one ready line with the bound addresses on stdout.",
    )
    .option("--config <file>", "sidecar YAML config; flags override its fields");
  for (const [flag, key] of SCALAR_FLAGS) command.option(flag, FLAG_HELP[key] ?? FIELD_HELP[key] ?? key);
  command
    .addOption(validatorOption("--validator <name>", "how the CA checks the token", ["join-token", "jwks", "kubernetes", "insecure"]))
    .option("--dns-name <name>", `${FIELD_HELP.dnsNames} Repeatable.`, collect)
    .option("--outbound-allowed-host <name>", `${FIELD_HELP.outboundAllowedHosts} Repeatable.`, collect)
    .option("--peer <APPID=HOST:PORT>", `${FIELD_HELP.peers} Repeatable.`, collect)
    .option("--tcp-upstream <APPID=HOST:PORT>", `${FIELD_HELP.tcpUpstreams} Repeatable.`, collect)
    .option(
      "--egress <spec>",
      `${FIELD_HELP.egress} spec: listen=HOST:PORT,backend=HOST:PORT[,serverName=N][,caFile=F][,mtls=true][,expectSpiffeId=ID][,protocol=tls|postgres] (protocol=postgres for PostgreSQL's SSLRequest). Repeatable.`,
      collect,
    )
    .option("--no-status-page", "turn the status page (/ and /status.json) off on the status port: only /healthz, /readyz and /metrics are served, and no status token is needed off loopback (Kubernetes probes)")
    .addOption(
      new Option("--mode <mode>", `${FIELD_HELP.mode} STRICT and PERMISSIVE, as Istio writes them, are accepted too (default: strict)`).argParser((value: string) => {
        const mode = value.toLowerCase();
        if (mode !== "strict" && mode !== "permissive") throw new InvalidArgumentError("Allowed: strict, permissive.");
        return mode;
      }),
    )
    .addOption(new Option("--protocol <protocol>", `${FIELD_HELP.protocol} (default: http)`).choices(["http", "tcp"]))
    .addOption(new Option("--escaped-slashes <action>", `${FIELD_HELP.escapedSlashes ?? ""} (default: reject)`).choices(["reject", "unescape", "keep"]))
    .option("--headers-with-underscores <action>", `${FIELD_HELP.headersWithUnderscores ?? ""} reject, drop or allow (default: reject)`)
    .addOption(new Option("--log-format <format>", "log format: json (for machines) or pretty (for people) (default: json)").choices(["json", "pretty"]))
    .addOption(new Option("--log-level <level>", "log level (default: info)").choices(["trace", "debug", "info", "warn", "error"]))
    .action(async (opts: OptionValues) => (await actions()).runSidecar(opts));
}
