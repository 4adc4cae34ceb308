import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { describe, expect, it } from "vitest";
import { compilePolicy, operationsNeverApplyingToTcp, parseAccessControl, TCP_REQUEST, tcpInapplicableMessage } from "../../src/policy/index.ts";
import type { Action, TcpInapplicableOperation } from "../../src/policy/index.ts";
import { watchPolicy } from "../../src/proxy/policy-source.ts";

// A TCP-mode sidecar judges a connection as the operation "/" without a verb (docs/sidecar.md):
// only the operation that decides the path "/" (Dapr's: the first declared of those on "/", decide.ts
// rule 8) can decide it; per-path operations, HTTP-verb-only allows and the other operations on "/"
// never apply.

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
          - { name: /, httpVerb: [POST], action: deny }
          - { name: /**, action: allow }
`;

const checkout = { caller: { appId: "checkout", namespace: "default", trustDomain: "public" }, ...TCP_REQUEST };
const listed = (operations: readonly TcpInapplicableOperation[]) => operations.map((operation) => `${operation.appId}:${operation.name}:${operation.why}@${operation.operationIndex}`);

describe("operations a TCP-mode sidecar never applies", () => {
  it("lists the per-path operations, the HTTP-verb-only allows on / and what the operation deciding / shadows, not what decides a connection", () => {
    const config = parseAccessControl(parseYaml(POLICY));
    const found = operationsNeverApplyingToTcp(config);
    expect(listed(found)).toEqual([
      "checkout:/admin/**:path@0",
      "checkout:/orders/**:path@1",
      "checkout:/**:verbs@2",
      "checkout:/pkg.Svc/Get:path@3",
      // billing's /** allow never applies: decide() stops at /, declared first, whose POST deny denies a call without a verb.
      "billing:/**:shadowed@1",
    ]);
    expect(found.map((operation) => operation.decidedBy)).toEqual([...Array(4).fill({ kind: "default", name: "/**", action: "deny" }), { kind: "operation", name: "/", action: "deny" }]);
    // What the engine does with a connection agrees: checkout's allows do not let it connect, nor billing's /** allow.
    const policy = compilePolicy(config);
    expect(policy.decide(checkout)).toMatchObject({ allowed: false, rule: "app:checkout/default:default-action" });
    expect(policy.decide({ ...checkout, caller: { ...checkout.caller, appId: "billing" } })).toMatchObject({ allowed: false, rule: "app:billing/default:op:/" });
  });

  it("a TCP policy written as the docs say (defaultAction, /** without verbs) has none", () => {
    const config = parseAccessControl({ accessControl: { defaultAction: "deny", policies: [{ appId: "checkout", namespace: "default", defaultAction: "allow" }, { appId: "billing", namespace: "default", operations: [{ name: "/**", action: "allow" }, { name: "/**", httpVerb: ["GET"], action: "allow" }] }] } });
    expect(operationsNeverApplyingToTcp(config)).toEqual([]);
  });

  it("a /* deny with verbs declared before a /** allow shadows it: every connection is denied, and the allow is reported; declared after it, /** decides", () => {
    const config = parseAccessControl({ accessControl: { defaultAction: "deny", policies: [{ appId: "billing", namespace: "default", operations: [{ name: "/*", httpVerb: ["*"], action: "deny" }, { name: "/**", action: "allow" }] }] } });
    expect(listed(operationsNeverApplyingToTcp(config))).toEqual(["billing:/**:shadowed@1"]);
    expect(compilePolicy(config).decide({ ...checkout, caller: { ...checkout.caller, appId: "billing" } })).toMatchObject({ allowed: false, rule: "app:billing/default:op:/*" });
    // The other order: Dapr's trie takes /** for /, so does decide(): every connection is allowed, the deny protects nothing.
    const reversed = parseAccessControl({ accessControl: { defaultAction: "deny", policies: [{ appId: "billing", namespace: "default", operations: [{ name: "/**", action: "allow" }, { name: "/*", httpVerb: ["*"], action: "deny" }] }] } });
    expect(listed(operationsNeverApplyingToTcp(reversed))).toEqual(["billing:/*:shadowed@1"]);
    expect(compilePolicy(reversed).decide({ ...checkout, caller: { ...checkout.caller, appId: "billing" } })).toMatchObject({ allowed: true, rule: "app:billing/default:op:/**" });
    expect(tcpInapplicableMessage(operationsNeverApplyingToTcp(reversed))).toContain("/* deny (app policy billing in default: shadowed by /**, which decides the path / (as in Dapr, the first declared of the operations on /))");
  });

  it("an operation on / behind a branch Dapr's trie takes for / and finds empty (/*/x declared first): reported, the default decides", () => {
    const config = parseAccessControl({ accessControl: { defaultAction: "deny", policies: [{ appId: "billing", namespace: "default", defaultAction: "allow", operations: [{ name: "/*/x", action: "allow" }, { name: "/", action: "deny" }] }] } });
    expect(compilePolicy(config).decide({ ...checkout, caller: { ...checkout.caller, appId: "billing" } })).toMatchObject({ allowed: true, rule: "app:billing/default:default-action" });
    const found = operationsNeverApplyingToTcp(config);
    expect(found.map(({ name, why, decidedBy }) => ({ name, why, decidedBy }))).toEqual([
      { name: "/*/x", why: "path", decidedBy: { kind: "default", action: "allow" } },
      { name: "/", why: "shadowed", decidedBy: { kind: "default", action: "allow" } },
    ]);
    expect(tcpInapplicableMessage(found)).toContain("/ deny (app policy billing in default: shadowed: for the path / Dapr's trie takes the branch of an operation declared before it that starts with a bare '*' and finds none there, so the default decides)");
  });

  it("a /** deny behind a GET-only / allow never applies: reported, and the message names the default that admits the connection", () => {
    // review finding 5: the operation deciding / (declared first) has only HTTP-verb allows, so decide() answers with the app default.
    const config = parseAccessControl({ accessControl: { defaultAction: "deny", policies: [{ appId: "checkout", namespace: "default", defaultAction: "allow", operations: [{ name: "/", httpVerb: ["GET"], action: "allow" }, { name: "/**", action: "deny" }] }] } });
    expect(compilePolicy(config).decide(checkout)).toMatchObject({ allowed: true, rule: "app:checkout/default:default-action" });
    const found = operationsNeverApplyingToTcp(config);
    expect(found.map(({ name, action, why, decidedBy }) => ({ name, action, why, decidedBy }))).toEqual([
      { name: "/", action: "allow", why: "verbs", decidedBy: { kind: "default", name: "/", action: "allow" } },
      { name: "/**", action: "deny", why: "shadowed", decidedBy: { kind: "default", name: "/", action: "allow" } },
    ]);
    const message = tcpInapplicableMessage(found);
    expect(message).toContain("/** deny (app policy checkout in default: shadowed by /, which decides the path / (as in Dapr, the first declared of the operations on /))");
    expect(message).toContain("for app policy checkout in default, every connection is allowed by the app policy's defaultAction (allow; /, the operation that decides the path /, allows HTTP verbs only)");
    expect(message).not.toMatch(/\/\*\* without verbs\) decides/);
  });

  it("says when the global defaultAction decides (the app policy has none), and reports a verb rule beside the rule that decides", () => {
    const config = parseAccessControl({ accessControl: { defaultAction: "deny", policies: [{ appId: "checkout", namespace: "default", operations: [{ name: "/admin", action: "allow" }] }, { appId: "billing", namespace: "default", defaultAction: "deny", operations: [{ name: "/**", action: "allow" }, { name: "/**", httpVerb: ["DELETE"], action: "deny" }] }] } });
    const found = operationsNeverApplyingToTcp(config);
    expect(listed(found)).toEqual(["checkout:/admin:path@0", "billing:/**:verbs@1"]);
    expect(found.map((operation) => operation.decidedBy)).toEqual([{ kind: "default", global: true, action: "deny" }, { kind: "operation", name: "/**", action: "allow" }]);
    const message = tcpInapplicableMessage(found);
    expect(message).toContain("for app policy checkout in default, every connection is denied by the global defaultAction (deny; the app policy has none)");
    expect(message).toContain("for app policy billing in default, every connection is allowed by the operation /** (allow)");
  });

  it("agrees with decide() on generated small policies: what decides, and every operation whose action is not the connection's outcome is reported", () => {
    // A seeded generator (mulberry32): the same policies on every run.
    let seed = 0x5eed_7c9;
    const random = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const pick = <T,>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const NAMES = ["/", "/*", "/**", "/admin", "/admin/**", "/a*", "/*/x", "/pkg.Svc/Get"];
    const VERBS: string[][] = [[], [], ["GET"], ["POST"], ["*"], ["GET", "POST"]];
    const ACTIONS: Action[] = ["allow", "deny"];
    let checked = 0;
    let shadowed = 0;
    for (let round = 0; round < 600; round++) {
      const operations = Array.from({ length: 1 + Math.floor(random() * 4) }, () => ({ name: pick(NAMES), httpVerb: pick(VERBS), action: pick(ACTIONS) }));
      const appDefault = pick<Action | undefined>(["allow", "deny", undefined]);
      const globalDefault = pick<Action>(ACTIONS);
      const app = { appId: "checkout", namespace: "default", ...(appDefault === undefined ? {} : { defaultAction: appDefault }), operations };
      let config;
      try {
        config = parseAccessControl({ accessControl: { defaultAction: globalDefault, policies: [app] } });
      } catch {
        continue; // conflicting duplicates are refused at parse time
      }
      checked++;
      const decision = compilePolicy(config).decide(checkout);
      const outcome: Action = decision.allowed ? "allow" : "deny";
      const found = operationsNeverApplyingToTcp(config);
      const reported = new Set(found.map((operation) => operation.operationIndex));
      const context = JSON.stringify({ app, globalDefault, decision: decision.rule, found: listed(found) });
      // The claim about what decides is what decide() did.
      for (const operation of found) {
        expect(operation.decidedBy.action, context).toBe(outcome);
        if (operation.decidedBy.kind === "operation") expect(decision.rule, context).toBe(`app:checkout/default:op:${operation.decidedBy.name}`);
        else expect(decision.rule, context).toBe("app:checkout/default:default-action");
        if (operation.why === "shadowed") shadowed++;
      }
      operations.forEach((rule, index) => {
        // An operation whose action is not what the connection gets never applied: it must be reported.
        if (rule.action !== outcome) expect(reported.has(index), `${context} #${index}`).toBe(true);
        // One not reported decides: the operation decide() named, with its action.
        if (!reported.has(index)) {
          expect(decision.rule, `${context} #${index}`).toBe(`app:checkout/default:op:${compilePolicy(parseAccessControl({ accessControl: { policies: [{ appId: "x", namespace: "y", operations: [rule] }] } })).explain({ caller: { appId: "x", namespace: "y", trustDomain: "public" }, operation: rule.name, verb: "" }).matched[0]?.name}`);
          expect(rule.action, `${context} #${index}`).toBe(outcome);
        }
      });
      // Alone in its app policy, a "path" operation matches no connection: the default decides.
      for (const operation of found.filter((operation) => operation.why === "path")) {
        const alone = parseAccessControl({ accessControl: { defaultAction: globalDefault, policies: [{ ...app, operations: [{ ...operations[operation.operationIndex]!, httpVerb: [] }] }] } });
        expect(compilePolicy(alone).decide(checkout).rule, context).toBe("app:checkout/default:default-action");
      }
    }
    expect(checked).toBeGreaterThan(300);
    expect(shadowed).toBeGreaterThan(20);
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
      const byDefault = { kind: "default", name: "/**", action: "deny" };
      expect(tcpWarnings[0]!.fields["operations"]).toEqual([
        { appId: "checkout", namespace: "default", trustDomain: "public", name: "/admin/**", action: "deny", why: "path", decidedBy: byDefault, at: `${path}:14:13` },
        { appId: "checkout", namespace: "default", trustDomain: "public", name: "/orders/**", action: "allow", why: "path", decidedBy: byDefault, at: `${path}:15:13` },
        { appId: "checkout", namespace: "default", trustDomain: "public", name: "/**", action: "allow", why: "verbs", decidedBy: byDefault, at: `${path}:16:13` },
        { appId: "checkout", namespace: "default", trustDomain: "public", name: "/pkg.Svc/Get", action: "allow", why: "path", decidedBy: byDefault, at: `${path}:17:13` },
        { appId: "billing", namespace: "default", trustDomain: "public", name: "/**", action: "allow", why: "shadowed", decidedBy: { kind: "operation", name: "/", action: "deny" }, at: `${path}:22:13` },
      ]);
      expect(tcpWarnings[0]!.message).toMatch(new RegExp(`^the access policy ${path}: in TCP mode a connection has no path and no verb: .*these 5 operations never apply: /admin/\\*\\* deny \\(app policy checkout in default: its path is not /\\), .*/\\*\\* allow \\(app policy checkout in default: allowed for HTTP verbs only\\).*/\\*\\* allow \\(app policy billing in default: shadowed by /, which decides the path /.*every connection is denied by the operation / \\(deny\\)`));
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
