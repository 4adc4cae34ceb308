import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { describe, expect, it } from "vitest";
import { compilePolicy, operationsNeverApplyingToTcp, parseAccessControl } from "../../src/policy/index.ts";
import { watchPolicy } from "../../src/proxy/policy-source.ts";

// A TCP-mode sidecar judges a connection as the operation "/" without a verb (docs/sidecar.md):
// per-path and HTTP-verb-only allow operations of a Dapr accessControl policy never apply.

const POLICY = `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: orders
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
      - appId: checkout
        namespace: default
        defaultAction: deny
        operations:
          - { name: /admin/**, httpVerb: ["*"], action: deny }
          - { name: /orders/**, httpVerb: [GET], action: allow }
          - { name: /**, httpVerb: [GET], action: allow }
          - { name: /pkg.Svc/Get, action: allow }
      - appId: billing
        namespace: default
        operations:
          - { name: /**, action: allow }
          - { name: /, httpVerb: [POST], action: deny }
`;

const checkout = { caller: { appId: "checkout", namespace: "default", trustDomain: "public" }, operation: "/", verb: "" };

describe("operations a TCP-mode sidecar never applies", () => {
  it("lists the per-path operations and the HTTP-verb-only allows on /, not what decides a connection", () => {
    const config = parseAccessControl(parseYaml(POLICY));
    expect(operationsNeverApplyingToTcp(config).map((operation) => `${operation.appId}:${operation.name}:${operation.why}@${operation.operationIndex}`)).toEqual([
      "checkout:/admin/**:path@0",
      "checkout:/orders/**:path@1",
      "checkout:/**:verbs@2",
      "checkout:/pkg.Svc/Get:path@3",
    ]);
    // What the engine does with a connection agrees: checkout's allows do not let it connect.
    const policy = compilePolicy(config);
    expect(policy.decide(checkout)).toMatchObject({ allowed: false, rule: "app:checkout/default:default-action" });
    expect(policy.decide({ ...checkout, caller: { ...checkout.caller, appId: "billing" } }).allowed).toBe(false);
  });

  it("a TCP policy written as the docs say (defaultAction, /** without verbs) has none", () => {
    const config = parseAccessControl({ accessControl: { defaultAction: "deny", policies: [{ appId: "checkout", namespace: "default", defaultAction: "allow" }, { appId: "billing", namespace: "default", operations: [{ name: "/**", action: "allow" }, { name: "/*", httpVerb: ["*"], action: "deny" }] }] } });
    expect(operationsNeverApplyingToTcp(config)).toEqual([]);
  });

  it("the sidecar warns once per load in TCP mode (structured, with file:line), never in HTTP mode", () => {
    const dir = mkdtempSync(join(tmpdir(), "meshward-policy-tcp-"));
    try {
      const path = join(dir, "policy.yaml");
      writeFileSync(path, POLICY);
      const logger = { info: () => undefined, warn: () => undefined, error: () => undefined };
      const warned: { fields: Record<string, unknown>; message: string }[] = [];
      const tcp = watchPolicy(path, { intervalMs: 50, logger, warn: (fields, message) => warned.push({ fields, message }), protocol: "tcp" });
      tcp.close();
      const tcpWarnings = warned.filter((warning) => warning.fields["event"] === "policy-operations-never-apply-tcp");
      expect(tcpWarnings).toHaveLength(1);
      expect(tcpWarnings[0]!.fields["operations"]).toEqual([
        { appId: "checkout", namespace: "default", trustDomain: "public", name: "/admin/**", why: "path", at: `${path}:14:13` },
        { appId: "checkout", namespace: "default", trustDomain: "public", name: "/orders/**", why: "path", at: `${path}:15:13` },
        { appId: "checkout", namespace: "default", trustDomain: "public", name: "/**", why: "verbs", at: `${path}:16:13` },
        { appId: "checkout", namespace: "default", trustDomain: "public", name: "/pkg.Svc/Get", why: "path", at: `${path}:17:13` },
      ]);
      expect(tcpWarnings[0]!.message).toMatch(new RegExp(`^the access policy ${path}: in TCP mode a connection has no path and no verb: .*these 4 operations never apply: /admin/\\*\\* \\(app policy checkout in default\\), .*/\\*\\* \\(app policy checkout in default, allowed for HTTP verbs only\\)`));
      warned.length = 0;
      const http = watchPolicy(path, { intervalMs: 50, logger, warn: (fields, message) => warned.push({ fields, message }), protocol: "http" });
      http.close();
      expect(warned.filter((warning) => warning.fields["event"] === "policy-operations-never-apply-tcp")).toEqual([]);
      // Without a structured warn, the logger's warn gets the event name first.
      const plain: string[] = [];
      watchPolicy(path, { intervalMs: 50, logger: { ...logger, warn: (message: string) => plain.push(message) }, protocol: "tcp" }).close();
      expect(plain.filter((line) => line.startsWith("policy-operations-never-apply-tcp: the access policy "))).toHaveLength(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
