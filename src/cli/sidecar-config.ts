import { LineCounter, parseDocument } from "yaml";
import { keyNodeIn } from "../config/load.ts";
import { sidecarConfigSchema } from "../config/sidecar.ts";
import type { SidecarConfig } from "../config/sidecar.ts";
import { validatorEnumName } from "../config/validator-names.ts";
import { MeshwardError } from "../errors.ts";
import { excessiveNestingMessage } from "../util/yaml-depth.ts";
import { readTextFile } from "./options.ts";
import { INPUT_LIMITS } from "../util/read-input.ts";
import { SCALAR_FLAGS } from "./sidecar.ts";

function splitPair(value: string, flag: string): [string, string] {
  const eq = value.indexOf("=");
  if (eq <= 0 || eq === value.length - 1) throw new MeshwardError("E_USAGE", `${flag} takes APPID=HOST:PORT, got ${JSON.stringify(value)}`);
  return [value.slice(0, eq), value.slice(eq + 1)];
}

function parseEgressFlag(value: string): Record<string, unknown> {
  const entry: Record<string, unknown> = {};
  for (const part of value.split(",")) {
    const [k, v] = splitPair(part, "--egress");
    // As the config file's schema: a boolean, nothing else (mtls=True or a typo is not false).
    if (k === "mtls" && v !== "true" && v !== "false") throw new MeshwardError("E_USAGE", `--egress: mtls takes true or false, got ${JSON.stringify(v)}`);
    entry[k] = k === "mtls" ? v === "true" : v;
  }
  return entry;
}

/** The config file (if any) with flags on top, validated; errors name file:line:column or the flag. */
export function buildSidecarConfig(opts: Record<string, unknown>): SidecarConfig {
  let raw: Record<string, unknown> = {};
  let locate: (path: readonly PropertyKey[]) => string | undefined = () => undefined;
  let locateKey: (path: readonly PropertyKey[], key: string) => string | undefined = () => undefined;
  const file = opts.config as string | undefined;
  if (file !== undefined) {
    const text = readTextFile(file, "sidecar config", INPUT_LIMITS.config);
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
    locateKey = (path, key) => {
      const mapping = path.length === 0 ? doc.contents : doc.getIn(path as unknown[], true);
      const range = (keyNodeIn(mapping, key) as { range?: [number, number, number] } | undefined)?.range;
      if (range === undefined) return undefined;
      const pos = lineCounter.linePos(range[0]);
      return `${file}:${pos.line}:${pos.col}`;
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
  for (const [key, flag] of [["mode", "--mode"], ["protocol", "--protocol"], ["escapedSlashes", "--escaped-slashes"], ["headersWithUnderscores", "--headers-with-underscores"], ["validator", "--validator"], ["logLevel", "--log-level"], ["logFormat", "--log-format"]] as const) {
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
    // An unknown key is shown where it is written, not at the mapping holding it.
    const unknownKey = issue.code === "unrecognized_keys" ? issue.keys[0] : undefined;
    const where = flag ?? (unknownKey === undefined ? undefined : locateKey(path, unknownKey)) ?? locate(path) ?? "config";
    const field = path.length > 0 ? path.join(".") : "(config)";
    const missing = issue.code === "invalid_type" && issue.message.includes("undefined");
    return `${where}: ${field}: ${missing ? `required (give --${String(path[0]).replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} or set it in --config)` : issue.message}`;
  });
  // Only the command line at fault (no --config, or every issue names a flag): a usage error
  // (exit 2, src/cli/usage.ts); anything from the --config file: exit 1.
  const onlyFlags = file === undefined || result.error.issues.every((issue) => {
    const path = issue.path.map(String);
    return (fromFlag.get(path.slice(0, 2).join(".")) ?? fromFlag.get(String(path[0]))) !== undefined;
  });
  throw new MeshwardError("E_CONFIG_INVALID", messages.join("\n"), onlyFlags ? { details: { usage: true } } : {});
}
