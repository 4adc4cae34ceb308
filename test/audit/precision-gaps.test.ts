import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { auditSources, loadSources } from "../../src/audit/audit.ts";
import { collectPosture, compareEnvironments } from "../../src/audit/drift.ts";

// Precision gaps of fix-audit (items 1–3), on the fixtures in fixtures/precision-gaps/.

const FIXTURES = join(import.meta.dirname, "fixtures", "precision-gaps");
const findings = (name: string): string[] => {
  const file = join(FIXTURES, name);
  return auditSources([{ file, text: readFileSync(file, "utf8") }]).findings.map((finding) => `${finding.ruleId}@${finding.line}:${finding.severity} ${finding.evidence}`);
};

describe("Redis TLS options in container env (redis-env.yaml)", () => {
  // StackExchange.Redis ConfigurationOptions: `sslProtocols` is an SslProtocols flags value, several
  // joined by `|` (ParseSslProtocols: "Flags expect commas as separators, but we need to use '|'");
  // `checkCertificateRevocation` defaults to true. go-redis ParseURL: `skip_verify` sets
  // TLSConfig.InsecureSkipVerify on a rediss:// URL.
  it("reports TLS 1.0/1.1-only sslProtocols (MW-TLS-010, low on loopback), checkCertificateRevocation=false (MW-TLS-009, low) and skip_verify=true (MW-TLS-009); quiet for Tls12|Tls13, revocation on, skip_verify=false", () => {
    // The same file's Lettuce URLs are the next test's.
    expect(findings("redis-env.yaml").filter((line) => !/verifyPeer/i.test(line))).toEqual([
      "MW-TLS-010@14:medium ConnectionStrings__Weak: sslProtocols=Tls|Tls11 (StackExchange.Redis: cache.prod.internal:6380)",
      "MW-TLS-009@18:low ConnectionStrings__Revocation: checkCertificateRevocation=false (StackExchange.Redis: cache.prod.internal:6380)",
      "MW-TLS-010@22:low ConnectionStrings__LocalWeak: sslProtocols=tls (StackExchange.Redis: localhost:6380)",
      "MW-TLS-009@24:high REDIS_URL: skip_verify=true",
    ]);
  });

  // Lettuce RedisURI (redis/lettuce src/main/java/io/lettuce/core/RedisURI.java): a query parameter
  // whose lower-cased text starts with `verifypeer=` is read by parseVerifyPeer as
  // SslVerifyMode.valueOf(value.toUpperCase()): NONE (no certificate check), CA (the chain is
  // checked, not the host name), FULL (the default). It matters only with TLS (rediss://,
  // redis+ssl://, redis+tls://, rediss-sentinel://).
  // It reads `uri.getQuery()`, which java.net.URI has percent-decoded, split on `&` and `;`, and
  // applies every verifyPeer token in turn: the last non-empty one is the mode the client uses.
  it("reports Lettuce's verifyPeer=NONE (and false, which says the same) as high and verifyPeer=CA as medium on a TLS URL, judging the decoded, last verifyPeer as Lettuce does; FULL (last), or no verifyPeer, is quiet", () => {
    const lettuce = findings("redis-env.yaml").filter((line) => /verifyPeer/i.test(line));
    expect(lettuce).toEqual([
      "MW-TLS-009@29:high SPRING_DATA_REDIS_URL: verifyPeer=NONE",
      "MW-TLS-009@31:medium LETTUCE_CA_ONLY_URL: verifyPeer=CA",
      "MW-TLS-009@33:high LETTUCE_FALSE_URL: verifyPeer=false",
      "MW-TLS-009@40:high LETTUCE_LAST_NONE_URL: verifyPeer=NONE",
      "MW-TLS-009@42:high LETTUCE_LAST_NONE_SEMI_URL: verifyPeer=NONE",
      "MW-TLS-009@44:high LETTUCE_ENCODED_VALUE_URL: verifyPeer=NONE",
      "MW-TLS-009@46:high LETTUCE_ENCODED_NAME_URL: verifyPeer=NONE",
      "MW-TLS-009@50:medium LETTUCE_LAST_CA_URL: verifyPeer=CA",
      "MW-TLS-009@52:high LETTUCE_DECODED_SPLIT_URL: verifyPeer=NONE",
      "MW-TLS-009@54:high LETTUCE_EMPTY_LAST_URL: verifyPeer=NONE",
    ]);
    // Without TLS the option means nothing: a plaintext redis:// URL is the plaintext rule's, not this one's.
    const text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: cart\nspec:\n  containers:\n    - name: cart\n      image: cart:1\n      env:\n        - name: REDIS_URL\n          value: \"redis://cache.prod.internal:6379?verifyPeer=NONE\"\n";
    const plain = auditSources([{ file: "pod.yaml", text }]).findings.map((finding) => finding.ruleId);
    expect(plain).not.toContain("MW-TLS-009");
    expect(plain.length).toBeGreaterThan(0);
  });
});

describe("empty CA bundle variables of Python requests (ca-bundle.yaml)", () => {
  // psf/requests src/requests/sessions.py Session.merge_environment_settings, today:
  //   verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or verify
  // so an empty value changes nothing (tests/test_requests.py test_env_cert_bundles: {"CURL_CA_BUNDLE": ""} → True).
  // Before 2.28.0 the expression had no `or verify`: CURL_CA_BUNDLE="" (REQUESTS_CA_BUNDLE empty or unset)
  // gave verify "", and the adapter then set CERT_NONE. HISTORY.md 2.28.0 (#6074): "Fixed bug where
  // setting CURL_CA_BUNDLE to an empty string would disable cert verification. All Requests 2.x versions
  // before 2.28.0 are affected." An empty REQUESTS_CA_BUNDLE alone fell through to CURL_CA_BUNDLE (None → True).
  it("an empty CURL_CA_BUNDLE with REQUESTS_CA_BUNDLE empty or unset is medium; REQUESTS_CA_BUNDLE alone, or a bundle path, is quiet", () => {
    expect(findings("ca-bundle.yaml")).toEqual([
      'MW-TLS-009@14:medium CURL_CA_BUNDLE: "" (Python requests before 2.28.0: any certificate accepted)',
      'MW-TLS-009@21:medium CURL_CA_BUNDLE: "" (Python requests before 2.28.0: any certificate accepted)',
    ]);
  });
});

describe("dapr.io/sidecar-listen-addresses beyond loopback (listen.yaml)", () => {
  it("MW-K8S-001 reports the pod IP ($(POD_IP), a literal address, an env reference) and all interfaces; loopback (127.0.0.0/8, ::1, localhost) is quiet", () => {
    expect(findings("listen.yaml")).toEqual([
      "MW-K8S-001@13:high dapr.io/sidecar-listen-addresses: $(POD_IP)",
      "MW-K8S-001@30:high dapr.io/sidecar-listen-addresses: 10.244.1.17",
      "MW-K8S-001@47:high dapr.io/sidecar-listen-addresses: ${POD_IP}",
      "MW-K8S-001@64:high dapr.io/sidecar-listen-addresses: 127.0.0.1,$(POD_IP)",
      "MW-K8S-001@81:high dapr.io/sidecar-listen-addresses: 0.0.0.0",
    ]);
  });

  it("drift ranks a pod-IP listen address weaker than loopback, as the scan does", () => {
    const text = readFileSync(join(FIXTURES, "listen.yaml"), "utf8").split("\n---\n");
    const only = (name: string): string => text.find((document) => document.includes(`name: ${name}\n`))?.replace(`name: ${name}\n`, "name: orders\n") ?? "";
    const rows = compareEnvironments([["staging", only("pod-ip-ref")], ["production", only("loopback-8")]].map(([name, yaml]) => {
      const { corpus } = loadSources([{ file: "deploy.yaml", text: yaml ?? "" }]);
      return { name: name ?? "", posture: collectPosture(corpus) };
    })).rows.filter((row) => row.aspect === "sidecar listen").map((row) => `${row.status} ${JSON.stringify(row.values)}`);
    expect(rows).toEqual(['weaker ["$(POD_IP)","127.0.0.2"]']);
  });
});
