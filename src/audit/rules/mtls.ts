import { asText, durationSeconds, get, isDict, isFalsy, isTruthy, lookup } from "../shape.ts";
import type { Hit, MeshwardCaConfig, Rule } from "../types.ts";
import { defineRule, redactConnectionString } from "./helpers.ts";

const DAY = 86_400;
const HOUR = 3_600;

const daprConfig = (mtls: string): string => `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: appconfig
spec:
  mtls:
${mtls}`;

const caConfig = (body: string): string => `trustDomain: prod.example.org
listen: 127.0.0.1:8443
${body}`;

const JWKS = "defaultValidator: jwks\njwks:\n  jwksUrl: URL://issuer.example.org/.well-known/jwks.json\n  issuer: https://issuer.example.org\n  audience: meshward\n";

/** Names of the CA validators however they are written: list of names, list of objects, or a map. */
export function validatorNames(config: Record<string, unknown>): { name: string; path: (string | number)[] }[] {
  const entry = lookup(config, "validators");
  if (entry === undefined) return [];
  const names: { name: string; path: (string | number)[] }[] = [];
  if (Array.isArray(entry.value)) {
    entry.value.forEach((item, index) => {
      const name = isDict(item) ? asText(item["type"] ?? item["name"] ?? item["kind"]) : asText(item);
      if (name !== "") names.push({ name: name.toLowerCase(), path: [entry.key, index] });
    });
  } else if (isDict(entry.value)) {
    for (const [key, value] of Object.entries(entry.value)) {
      if (value === false || isFalsy(value)) continue;
      const enabled = get(value, "enabled");
      if (enabled !== undefined && !isTruthy(enabled)) continue;
      names.push({ name: key.toLowerCase(), path: [entry.key, key] });
    }
  }
  return names;
}

function caDuration(ca: MeshwardCaConfig, name: string, limit: number, unit: string): Hit[] {
  const entry = lookup(ca.config, name);
  const seconds = durationSeconds(entry?.value);
  if (entry === undefined || seconds === undefined || seconds <= limit) return [];
  return [{ path: [entry.key], evidence: `${entry.key}: ${asText(entry.value)}`, detail: `It is over ${unit}.` }];
}

export const mtlsRules: Rule[] = [
  defineRule({
    id: "MW-MTLS-001",
    family: "mtls",
    severity: "high",
    title: "Dapr mTLS is disabled",
    why: "With `spec.mtls.enabled: false` Dapr sidecars talk to each other in plaintext and cannot tell which app is calling, so access policies and traffic confidentiality are gone for every app using this Configuration.",
    fix: "Set `spec.mtls.enabled: true` (the Dapr default) and let Sentry issue workload certificates.",
    example: { file: "config.yaml", bad: daprConfig("    enabled: false\n"), good: daprConfig("    enabled: true\n") },
    appliesTo: ["dapr-configuration"],
    check(configuration) {
      const enabled = get(configuration.spec, "mtls", "enabled");
      if (enabled === undefined || !isFalsy(enabled)) return [];
      return [{ path: ["spec", "mtls", "enabled"], evidence: `mtls.enabled: ${asText(enabled)}` }];
    },
  }),
  defineRule({
    id: "MW-MTLS-002",
    family: "mtls",
    severity: "medium",
    title: "Workload certificates live longer than 24h",
    why: "A stolen workload certificate stays usable until it expires; Dapr and meshward revoke by expiry, so long TTLs widen the window an attacker has.",
    fix: "Set `spec.mtls.workloadCertTTL` to 24h or less (Dapr's default is 24h).",
    example: {
      file: "config.yaml",
      bad: daprConfig("    enabled: true\n    workloadCertTTL: \"720h\"\n"),
      good: daprConfig("    enabled: true\n    workloadCertTTL: \"24h\"\n"),
    },
    appliesTo: ["dapr-configuration"],
    check(configuration) {
      const ttl = get(configuration.spec, "mtls", "workloadCertTTL");
      const seconds = durationSeconds(ttl);
      if (seconds === undefined || seconds <= DAY) return [];
      return [{ path: ["spec", "mtls", "workloadCertTTL"], evidence: `workloadCertTTL: ${asText(ttl)}` }];
    },
  }),
  defineRule({
    id: "MW-MTLS-003",
    family: "mtls",
    severity: "medium",
    title: "Allowed clock skew is over 1h",
    why: "Certificates are backdated by the allowed clock skew, so a large skew lets expired or not-yet-valid certificates through and stretches every certificate's real lifetime.",
    fix: "Set `spec.mtls.allowedClockSkew` to 15m (Dapr's default) or at most 1h, and keep clocks in sync with NTP.",
    example: {
      file: "config.yaml",
      bad: daprConfig("    enabled: true\n    allowedClockSkew: 4h\n"),
      good: daprConfig("    enabled: true\n    allowedClockSkew: 15m\n"),
    },
    appliesTo: ["dapr-configuration"],
    check(configuration) {
      const skew = get(configuration.spec, "mtls", "allowedClockSkew");
      const seconds = durationSeconds(skew);
      if (seconds === undefined || seconds <= HOUR) return [];
      return [{ path: ["spec", "mtls", "allowedClockSkew"], evidence: `allowedClockSkew: ${asText(skew)}` }];
    },
  }),
  defineRule({
    id: "MW-MTLS-004",
    family: "mtls",
    severity: "high",
    title: "meshward sidecar accepts plaintext (PERMISSIVE mode)",
    why: "In PERMISSIVE mode the inbound port also accepts plaintext connections that carry no identity, so any process that reaches the port can call the app. It is meant for a migration window only.",
    fix: "Set `mode: strict` (the default) once every caller has a sidecar; watch the plaintext connection counter reach zero first.",
    example: {
      file: "sidecar.yaml",
      bad: "appId: orders\nnamespace: prod\nca: ca.prod.svc:8443\ninbound: 0.0.0.0:15006\napp: 127.0.0.1:8080\npolicy: policy.yaml\nmode: permissive\n",
      good: "appId: orders\nnamespace: prod\nca: ca.prod.svc:8443\ninbound: 0.0.0.0:15006\napp: 127.0.0.1:8080\npolicy: policy.yaml\nmode: strict\n",
    },
    appliesTo: ["meshward-sidecar"],
    check(sidecar) {
      const mode = lookup(sidecar.config, "mode");
      if (mode === undefined || !/^permissive$/i.test(asText(mode.value).trim())) return [];
      return [{ path: [mode.key], evidence: `${mode.key}: ${asText(mode.value)}` }];
    },
  }),
  defineRule({
    id: "MW-MTLS-005",
    family: "mtls",
    severity: "high",
    title: "meshward CA accepts the insecure validator",
    why: "The `insecure` validator (`defaultValidator: insecure`) issues an identity to any caller that asks for it, without attestation: anyone who can reach the CA can become any workload.",
    fix: "Set `defaultValidator` to `join-token` or `jwks` (and remove `insecure` from a legacy `validators` list); attest workloads with join tokens or JWTs.",
    example: {
      file: "ca.yaml",
      bad: caConfig("defaultValidator: insecure\n"),
      good: caConfig("defaultValidator: join-token\n"),
    },
    appliesTo: ["meshward-ca"],
    check(ca) {
      const hits: Hit[] = validatorNames(ca.config)
        .filter((validator) => validator.name === "insecure")
        .map((validator) => ({ path: validator.path, evidence: `validator: ${validator.name}` }));
      const fallback = lookup(ca.config, "defaultValidator");
      if (fallback !== undefined && /^insecure$/i.test(asText(fallback.value).trim())) {
        hits.push({ path: [fallback.key], evidence: `${fallback.key}: ${asText(fallback.value)}` });
      }
      return hits;
    },
  }),
  defineRule({
    id: "MW-MTLS-006",
    family: "mtls",
    severity: "medium",
    title: "meshward CA issues workload certificates for longer than 24h",
    why: "Leaf SVIDs are not revoked one by one in practice; their lifetime is the window a stolen key stays useful.",
    fix: "Set `workloadTtl` to 24h or less; workloads renew at half their lifetime automatically.",
    example: { file: "ca.yaml", bad: caConfig("workloadTtl: 168h\n"), good: caConfig("workloadTtl: 24h\n") },
    appliesTo: ["meshward-ca"],
    check: (ca) => caDuration(ca, "workloadTtl", DAY, "24h"),
  }),
  defineRule({
    id: "MW-MTLS-007",
    family: "mtls",
    severity: "medium",
    title: "meshward CA allows more than 1h of clock skew",
    why: "NotBefore is backdated by the clock skew, so a large value extends every certificate's validity into the past and hides clock problems.",
    fix: "Set `clockSkew` to 15m (the default) or at most 1h.",
    example: { file: "ca.yaml", bad: caConfig("clockSkew: 6h\n"), good: caConfig("clockSkew: 15m\n") },
    appliesTo: ["meshward-ca"],
    check: (ca) => caDuration(ca, "clockSkew", HOUR, "1h"),
  }),
  defineRule({
    id: "MW-MTLS-008",
    family: "mtls",
    severity: "high",
    title: "meshward CA runs with allowInsecureDev",
    why: "`allowInsecureDev` unlocks development shortcuts (the insecure validator, plaintext API) that must never reach a shared environment.",
    fix: "Remove `allowInsecureDev` or set it to false outside a developer laptop.",
    example: { file: "ca.yaml", bad: caConfig("allowInsecureDev: true\n"), good: caConfig("allowInsecureDev: false\n") },
    appliesTo: ["meshward-ca"],
    check(ca) {
      const entry = lookup(ca.config, "allowInsecureDev");
      if (entry === undefined || !isTruthy(entry.value)) return [];
      return [{ path: [entry.key], evidence: `${entry.key}: ${asText(entry.value)}` }];
    },
  }),
  defineRule({
    id: "MW-MTLS-009",
    family: "mtls",
    severity: "high",
    title: "meshward CA fetches JWKS over plaintext HTTP",
    why: "The JWKS decides which JWTs the CA trusts; fetched over `http://`, anyone on the path can swap in their own keys and mint workload identities.",
    fix: "Use an `https://` JWKS URL (or a local file) for the jwks validator.",
    example: {
      file: "ca.yaml",
      bad: caConfig(JWKS.replace("URL", "http")),
      good: caConfig(JWKS.replace("URL", "https")),
    },
    appliesTo: ["meshward-ca"],
    check(ca) {
      const hits: Hit[] = [];
      const visit = (value: unknown, path: (string | number)[]): void => {
        if (typeof value === "string" && /^http:\/\//i.test(value.trim())) hits.push({ path, evidence: redactConnectionString(value.trim()) });
        else if (Array.isArray(value)) value.forEach((item, index) => visit(item, [...path, index]));
        else if (isDict(value)) for (const [key, child] of Object.entries(value)) visit(child, [...path, key]);
      };
      // `jwks.jwksUrl` (the CA's schema), and URLs in a legacy `validators` list.
      for (const name of ["jwks", "validators"]) {
        const entry = lookup(ca.config, name);
        if (entry !== undefined) visit(entry.value, [entry.key]);
      }
      return hits.filter((hit) => !/(issuer|audience)$/i.test(String(hit.path?.[hit.path.length - 1] ?? "")));
    },
  }),
];
