import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { afterAll, describe, expect, it } from "vitest";
import { buildSidecarConfig } from "../../src/cli/sidecar-config.ts";
import { sidecarConfigSchema } from "../../src/config/sidecar.ts";
import { loadPolicyFile } from "../../src/proxy/policy-source.ts";
import { runCli } from "../helpers/cli.ts";

/**
 * What docs/sidecar.md and docs/backends.md show must be what the sidecar accepts: the quick
 * start's policy.yaml, the egress flags and config (issue 15, item 6).
 */
const doc = (name: string) => readFileSync(new URL(`../../docs/${name}`, import.meta.url), "utf8");

describe("docs/sidecar.md and docs/backends.md, as written", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-docs-sidecar-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("the quick start shows the policy.yaml it uses, and that policy decides as its comments say", () => {
    const quickStart = doc("sidecar.md").split("## Quick start")[1]!.split("\n## ")[0]!;
    const heredoc = /cat > policy\.yaml <<'EOF'\n([\s\S]*?)\nEOF\n/.exec(quickStart);
    expect(heredoc, "the quick start writes policy.yaml").not.toBeNull();
    expect(quickStart).toMatch(/--policy \.\/policy\.yaml/);
    const file = join(work, "policy.yaml");
    writeFileSync(file, `${heredoc![1]}\n`);
    const policy = loadPolicyFile(file);
    // The quick start follows getting-started with its CA: one trust domain, named alike in the policy (review newuser M2).
    const trustDomain = /ca init --dir \.\/ca --trust-domain (\S+)/.exec(quickStart)?.[1];
    expect(trustDomain).toBe(/ca init --trust-domain (\S+) --dir \.\/ca/.exec(doc("getting-started.md"))?.[1]);
    expect(policy.appPolicies.map((p) => p.trustDomain)).toEqual([trustDomain, trustDomain]);
    const caller = (appId: string) => ({ trustDomain: trustDomain as string, namespace: "shop", appId });
    expect(policy.decide({ caller: caller("frontend"), operation: "/orders/42", verb: "GET" }).allowed).toBe(true);
    expect(policy.decide({ caller: caller("frontend"), operation: "/orders/42", verb: "POST" }).allowed).toBe(true);
    expect(policy.decide({ caller: caller("frontend"), operation: "/orders/42", verb: "DELETE" }).allowed).toBe(false);
    expect(policy.decide({ caller: caller("frontend"), operation: "/orders/42/items", verb: "GET" }).allowed).toBe(false);
    expect(policy.decide({ caller: caller("payments"), operation: "/refunds/7", verb: "DELETE" }).allowed).toBe(true);
    expect(policy.decide({ caller: caller("stranger"), operation: "/orders/42", verb: "GET" }).allowed).toBe(false);
    expect(policy.decide({ caller: { trustDomain: "evil.org", namespace: "shop", appId: "frontend" }, operation: "/orders/42", verb: "GET" }).allowed).toBe(false);
  });

  it("backends.md no longer says egress has no CLI flag, and its --egress flags and egress: list are accepted", () => {
    const text = doc("backends.md");
    expect(text).not.toMatch(/not yet exported|no CLI flag|not yet .*a CLI flag/i);
    const egress = text.split("## Egress: TLS origination")[1]!;
    const specs = [...egress.matchAll(/--egress (\S+)/g)].map((m) => m[1]!).filter((spec) => spec.startsWith("listen="));
    expect(specs.length).toBeGreaterThanOrEqual(2);
    const fromFlags = buildSidecarConfig({ appId: "reports", ca: "127.0.0.1:8443", bundle: "b.pem", token: "t", egress: specs });
    expect(fromFlags.egress.map((e) => e.protocol ?? "tls")).toContain("postgres");
    expect(fromFlags.app).toBeUndefined();
    const yamlBlock = /```yaml\n(egress:[\s\S]*?)```/.exec(egress);
    expect(yamlBlock).not.toBeNull();
    const fromFile = sidecarConfigSchema.parse({ appId: "reports", ca: "127.0.0.1:8443", bundle: "b.pem", ...(parseYaml(yamlBlock![1]!) as object) });
    expect(fromFile.egress).toEqual(fromFlags.egress.slice(0, fromFile.egress.length));
  });

  it("the sidecar's --egress help names protocol= (CLI process)", async () => {
    const r = await runCli(["sidecar", "--help"]);
    expect(r.code).toBe(0);
    const help = r.stdout.replace(/\s+/g, " ");
    expect(help).toMatch(/--egress <spec> .*\[,protocol=tls\|postgres\]/);
    expect(help).toMatch(/--egress <spec> .*\[,expectSpiffeId=ID\]/);
  });
});
