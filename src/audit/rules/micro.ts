import { isTruthy } from "../shape.ts";
import type { Hit, MicroSettings, Rule } from "../types.ts";
import { defineRule, hostOf, isLoopbackHost } from "./helpers.ts";

const TLS_SWITCHES = ["enabletls", "tlsenable", "tlsenabled", "transportsecure", "secure", "tls"];
const CA_KEYS = ["tlscafile", "tlsca", "tlscacert", "cafile", "transporttlsca"];
const CLIENT_CA_KEYS = ["tlsclientcafile", "tlsclientca", "clientcafile"];
const INSECURE_KEYS = ["tlsinsecure", "insecureskipverify", "tlsskipverify", "transportinsecure", "tlsinsecureskipverify"];

function first(settings: MicroSettings, keys: readonly string[]): { key: string; value: string; path: (string | number)[] } | undefined {
  for (const key of keys) {
    const entry = settings.settings.get(key);
    if (entry !== undefined) return { key, value: entry.value, path: [...entry.path] };
  }
  return undefined;
}

function has(settings: MicroSettings, keys: readonly string[]): boolean {
  const entry = first(settings, keys);
  return entry !== undefined && entry.value.trim() !== "";
}

export function microTlsEnabled(settings: MicroSettings): boolean {
  const switchEntry = first(settings, TLS_SWITCHES);
  if (switchEntry !== undefined) return isTruthy(switchEntry.value);
  return has(settings, ["tlscertfile", "tlscert"]);
}

function anchor(settings: MicroSettings): (string | number)[] {
  const entry = first(settings, TLS_SWITCHES) ?? first(settings, ["tlscertfile", "tlscert"]);
  if (entry !== undefined) return entry.path;
  const any = settings.settings.values().next();
  return any.done === true ? [] : [...any.value.path];
}

const env = (lines: string): string => `MICRO_SERVER_ADDRESS=:8080\nMICRO_REGISTRY=kubernetes\n${lines}`;
const SECURE = "MICRO_ENABLE_TLS=true\nMICRO_TLS_CERT_FILE=/etc/micro/tls.crt\nMICRO_TLS_KEY_FILE=/etc/micro/tls.key\nMICRO_TLS_CA_FILE=/etc/micro/ca.crt\nMICRO_TLS_CLIENT_CA_FILE=/etc/micro/ca.crt\n";

export const microRules: Rule[] = [
  defineRule({
    id: "MW-MICRO-001",
    family: "micro",
    severity: "high",
    title: "micro service transport without TLS",
    why: "go-micro's transports and servers are plaintext unless TLS is switched on: requests, responses and any tokens in metadata cross the network unencrypted.",
    fix: "Set `MICRO_ENABLE_TLS=true` with `MICRO_TLS_CERT_FILE`, `MICRO_TLS_KEY_FILE`, `MICRO_TLS_CA_FILE` (or `transport.secure: true` plus the files in micro.yaml). The same variables apply in docker-compose `environment:` and Kubernetes container `env:`.",
    example: { file: "service.env", bad: env("MICRO_ENABLE_TLS=false\n"), good: env(SECURE) },
    appliesTo: ["micro-settings"],
    check(settings) {
      if (microTlsEnabled(settings)) return [];
      // `MICRO_TLS_INSECURE=true` is a TLS setting: MW-MICRO-003 reports it, and saying
      // "no TLS" about the same file would contradict that finding.
      const insecure = first(settings, INSECURE_KEYS);
      if (insecure !== undefined && isTruthy(insecure.value)) return [];
      const entry = first(settings, TLS_SWITCHES);
      return [{ path: anchor(settings), evidence: entry === undefined ? "no TLS setting (plaintext default)" : `${entry.key}=${entry.value}` }];
    },
  }),
  defineRule({
    id: "MW-MICRO-002",
    family: "micro",
    severity: "high",
    title: "micro secure transport without a CA (self-signed)",
    why: "With `secure` on but no certificate and CA, go-micro generates a self-signed certificate and its clients skip verification: traffic is encrypted but anyone can impersonate the server.",
    fix: "Give the service a certificate from your CA (`MICRO_TLS_CERT_FILE`/`MICRO_TLS_KEY_FILE`) and the CA to verify peers (`MICRO_TLS_CA_FILE`).",
    example: {
      file: "micro.yaml",
      bad: "server:\n  address: :8080\ntransport:\n  secure: true\n",
      good: "server:\n  address: :8080\ntransport:\n  secure: true\ntls:\n  cert_file: /etc/micro/tls.crt\n  key_file: /etc/micro/tls.key\n  ca_file: /etc/micro/ca.crt\n  client_ca_file: /etc/micro/ca.crt\n",
    },
    appliesTo: ["micro-settings"],
    check(settings) {
      if (!microTlsEnabled(settings) || has(settings, CA_KEYS)) return [];
      const missing = has(settings, ["tlscertfile", "tlscert"]) ? "no CA file" : "no certificate and no CA file";
      return [{ path: anchor(settings), evidence: missing }];
    },
  }),
  defineRule({
    id: "MW-MICRO-003",
    family: "micro",
    severity: "high",
    title: "micro TLS verification disabled",
    why: "`MICRO_TLS_INSECURE=true` (InsecureSkipVerify) accepts any server certificate: a man in the middle can read and change every call.",
    fix: "Remove `MICRO_TLS_INSECURE` and set `MICRO_TLS_CA_FILE` to the CA that signs your services' certificates.",
    example: { file: "service.env", bad: env(`${SECURE}MICRO_TLS_INSECURE=true\n`), good: env(`${SECURE}MICRO_TLS_INSECURE=false\n`) },
    appliesTo: ["micro-settings"],
    check(settings) {
      const entry = first(settings, INSECURE_KEYS);
      if (entry === undefined || !isTruthy(entry.value)) return [];
      return [{ path: entry.path, evidence: `${entry.key}=${entry.value}` }];
    },
  }),
  defineRule({
    id: "MW-MICRO-004",
    family: "micro",
    severity: "medium",
    title: "micro server does not authenticate clients (no client CA)",
    why: "Without a client CA the server accepts any TLS client: encryption without mutual authentication, so any workload can call it.",
    fix: "Set `MICRO_TLS_CLIENT_CA_FILE` so the server requires and verifies client certificates.",
    example: { file: "service.env", bad: env(SECURE.replace("MICRO_TLS_CLIENT_CA_FILE=/etc/micro/ca.crt\n", "")), good: env(SECURE) },
    appliesTo: ["micro-settings"],
    check(settings) {
      if (!microTlsEnabled(settings) || has(settings, CLIENT_CA_KEYS)) return [];
      return [{ path: anchor(settings), evidence: "no client CA (MICRO_TLS_CLIENT_CA_FILE)" }];
    },
  }),
  defineRule({
    id: "MW-MICRO-005",
    family: "micro",
    severity: "medium",
    title: "micro broker/registry/transport address is plaintext",
    why: "A `nats://`, `http://`, `amqp://`, `redis://` or `tcp://` broker, registry or store address carries service metadata and messages unencrypted.",
    fix: "Use the TLS form of the address (`tls://`, `https://`, `amqps://`, `rediss://`) and configure its CA.",
    example: { file: "service.env", bad: env(`${SECURE}MICRO_BROKER_ADDRESS=nats://nats.default.svc:4222\n`), good: env(`${SECURE}MICRO_BROKER_ADDRESS=tls://nats.default.svc:4222\n`) },
    appliesTo: ["micro-settings"],
    check(settings) {
      const hits: Hit[] = [];
      for (const [key, entry] of settings.settings) {
        if (!/(address|addrs|addr|url|nodes|endpoint)$/.test(key)) continue;
        const match = /^(nats|http|amqp|redis|tcp|mqtt|ws):\/\//i.exec(entry.value.trim());
        if (match === null) continue;
        const loopback = isLoopbackHost(hostOf(entry.value));
        hits.push({ path: [...entry.path], evidence: `${key}=${(match[1] ?? "").toLowerCase()}://${hostOf(entry.value)}`, ...(loopback ? { severity: "low" as const } : {}) });
      }
      return hits;
    },
  }),
];
