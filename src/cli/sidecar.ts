import { InvalidArgumentError, Option, type Command } from "commander";
import { LineCounter, parseDocument } from "yaml";
import { excessiveNestingMessage } from "../util/yaml-depth.ts";
import { sidecarConfigSchema } from "../config/sidecar.ts";
import type { SidecarConfig } from "../config/sidecar.ts";
import { MeshwardError, isMeshwardError } from "../errors.ts";
import { startSidecar } from "../proxy/sidecar.ts";
import { cliLogger, collect, readTextFile, untilSignal, validatorOption, warnTokenOnCommandLine } from "./options.ts";
import { validatorEnumName } from "../config/validator-names.ts";

/** Flag → config field (top level, or limits.<field>). */
const SCALAR_FLAGS: readonly (readonly [flag: string, key: string, path: readonly string[], kind?: "number"])[] = [
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
  ["--max-connection-age <duration>", "maxConnectionAge", ["limits", "maxConnectionAge"]],
  ["--drain-timeout <duration>", "drainTimeout", ["limits", "drainTimeout"]],
  ["--max-connections <n>", "maxConnections", ["limits", "maxConnections"], "number"],
  ["--max-concurrent-streams <n>", "maxConcurrentStreams", ["limits", "maxConcurrentStreams"], "number"],
];

const FIELD_HELP: Record<string, string> = (() => {
  const shape = sidecarConfigSchema.shape as Record<string, { description?: string }>;
  const limits = (shape.limits as unknown as { unwrap(): { shape: Record<string, { description?: string }> } }).unwrap().shape;
  const out: Record<string, string> = {};
  for (const [key, field] of Object.entries(shape)) out[key] = field.description ?? "";
  for (const [key, field] of Object.entries(limits)) out[key] = field.description ?? "";
  return out;
})();

/** Where a flag's help differs from its config field's. */
const FLAG_HELP: Record<string, string> = {
  token: "Join token or JWT for the first certificate; visible to every local user in the process list (warned): prefer --token-file or MESHWARD_TOKEN.",
};

function splitPair(value: string, flag: string): [string, string] {
  const eq = value.indexOf("=");
  if (eq <= 0 || eq === value.length - 1) throw new MeshwardError("E_USAGE", `${flag} takes APPID=HOST:PORT, got ${JSON.stringify(value)}`);
  return [value.slice(0, eq), value.slice(eq + 1)];
}

function parseEgressFlag(value: string): Record<string, unknown> {
  const entry: Record<string, unknown> = {};
  for (const part of value.split(",")) {
    const [k, v] = splitPair(part, "--egress");
    entry[k] = k === "mtls" ? v === "true" : v;
  }
  return entry;
}

/** The config file (if any) with flags on top, validated; errors name file:line:column or the flag. */
export function buildSidecarConfig(opts: Record<string, unknown>): SidecarConfig {
  let raw: Record<string, unknown> = {};
  let locate: (path: readonly PropertyKey[]) => string | undefined = () => undefined;
  const file = opts.config as string | undefined;
  if (file !== undefined) {
    const text = readTextFile(file, "sidecar config");
    const tooDeep = excessiveNestingMessage(text, file);
    if (tooDeep !== undefined) throw new MeshwardError("E_CONFIG_INVALID", tooDeep);
    const lineCounter = new LineCounter();
    const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
    if (doc.errors.length > 0) {
      const pos = lineCounter.linePos(doc.errors[0]!.pos[0]);
      throw new MeshwardError("E_CONFIG_INVALID", `${file}:${pos.line}:${pos.col}: ${doc.errors[0]!.message.split("\n")[0]}`);
    }
    const js: unknown = doc.toJS() ?? {};
    if (typeof js !== "object" || js === null || Array.isArray(js)) throw new MeshwardError("E_CONFIG_INVALID", `${file}: the sidecar config must be a mapping`);
    raw = js as Record<string, unknown>;
    locate = (path) => {
      for (let n = path.length; n > 0; n--) {
        const node = doc.getIn(path.slice(0, n) as unknown[], true) as { range?: [number, number, number] } | undefined;
        if (node?.range !== undefined) {
          const pos = lineCounter.linePos(node.range[0]);
          return `${file}:${pos.line}:${pos.col}`;
        }
      }
      return file;
    };
  }
  // Flags set single limits into the file's `limits`, which must then be a mapping: spread, a
  // scalar there (`limits: 5`) would vanish without a word.
  if (raw.limits !== undefined && raw.limits !== null && (typeof raw.limits !== "object" || Array.isArray(raw.limits))) {
    throw new MeshwardError("E_CONFIG_INVALID", `${locate(["limits"]) ?? "limits"}: limits must be a mapping (maxConnections, idleTimeout, …), got ${JSON.stringify(raw.limits).slice(0, 40)}`);
  }
  const merged: Record<string, unknown> = { ...raw, limits: { ...((raw.limits as Record<string, unknown> | undefined | null) ?? {}) } };
  const fromFlag = new Map<string, string>();
  for (const [flag, key, path, kind] of SCALAR_FLAGS) {
    const value = opts[key];
    if (value === undefined) continue;
    const typed = kind === "number" ? Number(value) : value;
    if (path.length === 1) merged[path[0]!] = typed;
    else (merged.limits as Record<string, unknown>)[path[1]!] = typed;
    fromFlag.set(path.join("."), flag.split(" ")[0]!);
  }
  for (const [key, flag] of [["mode", "--mode"], ["protocol", "--protocol"], ["escapedSlashes", "--escaped-slashes"], ["validator", "--validator"], ["logLevel", "--log-level"], ["logFormat", "--log-format"]] as const) {
    if (opts[key] !== undefined) {
      merged[key] = key === "validator" ? validatorEnumName(String(opts[key])) : opts[key];
      fromFlag.set(key, flag);
    }
  }
  for (const [flag, key, field] of [["--peer", "peer", "peers"], ["--tcp-upstream", "tcpUpstream", "tcpUpstreams"]] as const) {
    const pairs = opts[key] as string[] | undefined;
    if (pairs === undefined) continue;
    const table = { ...((raw[field] as Record<string, string> | undefined) ?? {}) };
    for (const pair of pairs) {
      const [name, address] = splitPair(pair, flag);
      table[name] = address;
    }
    merged[field] = table;
    fromFlag.set(field, flag);
  }
  // commander sets statusPage true unless --no-status-page: only the flag overrides the file.
  if (opts.statusPage === false) {
    merged.statusPage = false;
    fromFlag.set("statusPage", "--no-status-page");
  }
  if (opts.dnsName !== undefined) {
    merged.dnsNames = opts.dnsName;
    fromFlag.set("dnsNames", "--dns-name");
  }
  if (opts.outboundAllowedHost !== undefined) {
    merged.outboundAllowedHosts = opts.outboundAllowedHost;
    fromFlag.set("outboundAllowedHosts", "--outbound-allowed-host");
  }
  if (opts.egress !== undefined) {
    merged.egress = [...((raw.egress as unknown[] | undefined) ?? []), ...(opts.egress as string[]).map(parseEgressFlag)];
    fromFlag.set("egress", "--egress");
  }
  const result = sidecarConfigSchema.safeParse(merged);
  if (result.success) return result.data;
  const messages = result.error.issues.slice(0, 5).map((issue) => {
    const path = issue.path.map((p) => (typeof p === "symbol" ? p.toString() : p));
    const flag = fromFlag.get(path.slice(0, 2).join(".")) ?? fromFlag.get(String(path[0]));
    const where = flag ?? locate(path) ?? "config";
    const field = path.length > 0 ? path.join(".") : "(config)";
    const missing = issue.code === "invalid_type" && issue.message.includes("undefined");
    return `${where}: ${field}: ${missing ? `required (give --${String(path[0]).replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} or set it in --config)` : issue.message}`;
  });
  throw new MeshwardError("E_CONFIG_INVALID", messages.join("\n"));
}

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
      new Option("--mode <mode>", `${FIELD_HELP.mode} (default strict; STRICT and PERMISSIVE, as Istio writes them, are accepted too)`).argParser((value: string) => {
        const mode = value.toLowerCase();
        if (mode !== "strict" && mode !== "permissive") throw new InvalidArgumentError("Allowed: strict, permissive.");
        return mode;
      }),
    )
    .addOption(new Option("--protocol <protocol>", `${FIELD_HELP.protocol} (default http)`).choices(["http", "tcp"]))
    .addOption(new Option("--escaped-slashes <action>", FIELD_HELP.escapedSlashes ?? "").choices(["reject", "unescape", "keep"]))
    .addOption(new Option("--log-format <format>", "log format: json (default) or pretty").choices(["json", "pretty"]))
    .addOption(new Option("--log-level <level>", "log level (default info)").choices(["trace", "debug", "info", "warn", "error"]))
    .action(async (opts: Record<string, unknown>) => {
      const config = buildSidecarConfig(opts);
      const logger = cliLogger("sidecar", { logFormat: config.logFormat, logLevel: config.logLevel });
      // The flag only: a token in the config file is in a file, which is what the warning asks for.
      if (opts.token !== undefined) warnTokenOnCommandLine(logger);
      // Before the first certificate: the CA may be down and the sidecar retrying on unref'd
      // timers only, which would let the process exit (code 13) instead of waiting for it.
      const stopped = untilSignal();
      const stopStarting = new AbortController();
      void stopped.then(() => stopStarting.abort());
      const sidecar = await startSidecar(config, { logger, stopSignal: stopStarting.signal }).catch((error: unknown) => {
        if (isMeshwardError(error) && error.code === "E_STOPPED") return undefined;
        throw error;
      });
      if (sidecar === undefined) {
        logger.info({ event: "stopped" }, "stopped before the first certificate arrived");
        return;
      }
      process.stdout.write(`${sidecar.readyLine()}\n`);
      const signal = await stopped;
      logger.info({ event: "signal", signal }, "shutting down");
      const forced = () => {
        logger.warn({ event: "forced-exit" }, "second signal: closing at once");
        void sidecar.close().then(() => process.exit(1));
      };
      process.once("SIGTERM", forced);
      process.once("SIGINT", forced);
      await sidecar.drain();
      process.off("SIGTERM", forced);
      process.off("SIGINT", forced);
      logger.info({ event: "stopped" }, "sidecar stopped");
    });
}
