import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadPolicyFile, watchPolicy } from "../../src/proxy/policy-source.ts";
import type { AccessRequest } from "../../src/policy/index.ts";
import { runCli } from "../helpers/cli.ts";

/**
 * Review finding (HIGH): a policy file that was empty or cut short mid-write (`kind:
 * Configuration` and nothing after, `spec:`, `accessControl:`) loaded as "no access control":
 * every caller allowed, at start and on reload, without a word in the log. A half-written file
 * must never open access; the sidecar now refuses a policy file without its accessControl
 * block, and applies a change only once the file has stayed the same for one reload interval.
 */

const POLICY = `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: shop
spec:
  accessControl:
    defaultAction: allow
    trustDomain: public
    policies:
      - appId: evil
        namespace: default
        defaultAction: deny
`;

const evil: AccessRequest = { caller: { appId: "evil", namespace: "default", trustDomain: "public" }, verb: "GET", operation: "/items" };

describe("a policy file must say what it allows", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-policy-file-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  let n = 0;
  const file = (text: string): string => {
    const path = join(work, `policy-${++n}.yaml`);
    writeFileSync(path, text);
    return path;
  };

  it("refuses an empty file and every cut-short prefix that would read as no access control", () => {
    const cuts = {
      empty: "",
      "blank lines": "\n\n",
      "a comment only": "# policy\n",
      "cut after kind": POLICY.slice(0, POLICY.indexOf("metadata:")),
      "cut after spec": POLICY.slice(0, POLICY.indexOf("  accessControl:")),
      "cut after accessControl": POLICY.slice(0, POLICY.indexOf("    defaultAction")),
    };
    for (const [what, text] of Object.entries(cuts)) {
      let refused: unknown;
      try {
        loadPolicyFile(file(text));
      } catch (error) {
        refused = error;
      }
      expect((refused as { code?: string } | undefined)?.code, what).toBe("E_POLICY_INVALID");
      expect(String(refused), what).toMatch(/no access control: an access policy file must hold a Dapr Configuration with spec\.accessControl .*never read as "allow everything"/);
    }
    // The whole file denies evil; the refusals above are not a parser that refuses everything.
    expect(loadPolicyFile(file(POLICY)).decide(evil).allowed).toBe(false);
  });

  it("names a misspelt accessControl, and the file:line of a null block", () => {
    expect(() => loadPolicyFile(file(POLICY.replace("accessControl:", "accesControl:")))).toThrow(/found "accesControl": did you mean accessControl\?/);
    expect(() => loadPolicyFile(file(POLICY.replace("accessControl:", "access_control:")))).toThrow(/found "access_control"/);
    const nullBlock = file("kind: Configuration\nspec:\n  accessControl:\n");
    expect(() => loadPolicyFile(nullBlock)).toThrow(new RegExp(`${nullBlock}:3:\\d+: no access control`));
    expect(() => loadPolicyFile(file("{}\n"))).toThrow(/holds an empty mapping: no access control/);
  });

  it("accepts allow-everything when the file says so", () => {
    for (const text of ["kind: Configuration\nspec:\n  accessControl:\n    defaultAction: allow\n", "accessControl: {}\n", "defaultAction: allow\n"]) {
      expect(loadPolicyFile(file(text)).decide(evil), text).toMatchObject({ allowed: true });
    }
  });

  it("a policy file the sidecar is started with that is empty: exit 1 naming the file, before the CA is asked", async () => {
    const empty = file("");
    // No CA listens at 127.0.0.1:1: the policy is refused before any connection is tried.
    const r = await runCli(["sidecar", "--app-id", "orders", "--app", "127.0.0.1:1", "--ca", "127.0.0.1:1", "--bundle", empty, "--token", "unused", "--policy", empty]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(`${empty} is empty: no access control`);
    expect(r.stderr).toContain("[E_POLICY_INVALID]");
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it("a change made just as the watcher starts (before its first stat) is applied, not taken as the baseline", async () => {
    // watchFile takes its baseline stat on libuv's thread pool after watchPolicy has read the file:
    // a change in between was that baseline, so the policy read before it stayed in force until
    // the file changed again (failed under Node 26; a race under Node 20). Twenty tries.
    const tightened = POLICY.replace("    defaultAction: allow\n", "    defaultAction: deny\n");
    const stranger: AccessRequest = { caller: { appId: "stranger", namespace: "default", trustDomain: "public" }, verb: "GET", operation: "/items" };
    const logs: string[] = [];
    const logger = { info: (m: string) => logs.push(m), warn: (m: string) => logs.push(m), error: (m: string) => logs.push(m) };
    for (let i = 0; i < 20; i++) {
      const path = file(POLICY);
      const source = watchPolicy(path, { intervalMs: 20, logger });
      try {
        expect(source.current().decide(stranger).allowed).toBe(true);
        writeFileSync(path, tightened);
        for (let wait = 0; wait < 100 && source.generation === 0; wait++) await new Promise((resolve) => setTimeout(resolve, 10));
        expect(source.generation, `try ${i}`).toBe(1);
        expect(source.current().decide(stranger).allowed).toBe(false);
      } finally {
        source.close();
      }
    }
  }, 30_000);

  // dapr/dapr charts/dapr/crds/configuration.yaml requires an operation's `action`, and
  // pkg/acl/acl.go denies one without it (isActionAllowed("") is false): meshward allowed it.
  it("an operation without action: refused at load with file:line, and on reload the previous policy stays", async () => {
    const withoutAction = POLICY.replace("        defaultAction: deny\n", "        defaultAction: deny\n        operations:\n          - name: /admin/**\n            httpVerb: ['*']\n");
    const path = file(withoutAction);
    expect(() => loadPolicyFile(path)).toThrow(
      expect.objectContaining({ code: "E_POLICY_INVALID", message: expect.stringContaining(`${path}:14:13: spec.accessControl.policies[0].operations[0]: app id evil (namespace default): operation "/admin/**" has no action: add \`action: allow\` or \`action: deny\``) }),
    );
    writeFileSync(path, POLICY);
    const logs: string[] = [];
    const logger = { info: (m: string) => logs.push(m), warn: (m: string) => logs.push(m), error: (m: string) => logs.push(m) };
    const source = watchPolicy(path, { intervalMs: 50, logger });
    try {
      expect(source.current().decide(evil).allowed).toBe(false);
      writeFileSync(path, withoutAction.replace("defaultAction: deny", "defaultAction: allow"));
      for (let i = 0; i < 200 && !logs.some((m) => m.includes("was refused")); i++) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(logs.join("\n")).toMatch(/the changed access policy .* was refused; the previous policy stays in force: .*operation "\/admin\/\*\*" has no action/);
      expect(source.generation).toBe(0);
      expect(source.current().decide({ ...evil, operation: "/admin/x" }).allowed).toBe(false);
    } finally {
      source.close();
    }
  }, 20_000);

  // dapr/dapr pkg/config/acl_trie.go: the first-declared matching operation decides, and a repeated
  // name keeps its first entry; meshward keeps its own rules and warns where they differ.
  it("warns (policy-differs-from-dapr) at load and on reload where Dapr reads the policy differently", async () => {
    const differing = POLICY.replace(
      "        defaultAction: deny\n",
      "        defaultAction: deny\n        operations:\n          - { name: /admin/*, httpVerb: ['*'], action: deny }\n          - { name: /admin/health, httpVerb: [GET], action: allow }\n          - { name: /orders/**, httpVerb: [GET], action: allow }\n          - { name: /orders/**, httpVerb: [DELETE], action: allow }\n",
    );
    const path = file(differing);
    const warned: { fields: Record<string, unknown>; message: string }[] = [];
    const logs: string[] = [];
    const logger = { info: (m: string) => logs.push(m), warn: (m: string) => logs.push(m), error: (m: string) => logs.push(m) };
    const source = watchPolicy(path, { intervalMs: 50, logger, warn: (fields, message) => warned.push({ fields, message }) });
    try {
      expect(warned.map((w) => w.fields)).toEqual([
        { event: "policy-differs-from-dapr", kind: "repeated-name", appId: "evil", namespace: "default", trustDomain: "public", operations: ["/orders/**", "/orders/**"] },
        { event: "policy-differs-from-dapr", kind: "precedence", appId: "evil", namespace: "default", trustDomain: "public", operations: ["/admin/*", "/admin/health"] },
      ]);
      expect(warned[0]!.message).toMatch(new RegExp(`^${path}:17:13: app id evil \\(namespace default\\): operation /orders/\\*\\* is listed 2 times`));
      expect(warned[1]!.message).toMatch(new RegExp(`^${path}:15:13: app id evil \\(namespace default\\): operation /admin/\\* \\(operations\\[0\\]\\) is declared before /admin/health`));
      // meshward's decision is unchanged: the more specific operation, the merged verbs.
      expect(source.current().decide({ ...evil, operation: "/admin/health" }).allowed).toBe(true);
      expect(source.current().decide({ ...evil, operation: "/orders/7", verb: "DELETE" }).allowed).toBe(true);
      // Without a structured warn, the logger's warn gets the event name first; on reload too.
      const plain: string[] = [];
      const second = watchPolicy(path, { intervalMs: 50, logger: { ...logger, warn: (m: string) => plain.push(m) } });
      second.close();
      expect(plain).toHaveLength(2);
      expect(plain[0]).toMatch(/^policy-differs-from-dapr: .*listed 2 times/);
      writeFileSync(path, `${differing}# edited\n`);
      for (let i = 0; i < 200 && source.generation === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(source.generation, logs.join("\n")).toBe(1);
      expect(warned).toHaveLength(4);
    } finally {
      source.close();
    }
  }, 20_000);

  it("a file written slowly, in pieces, is applied whole: no cut-short state is ever in force", async () => {
    const path = file(POLICY);
    const logs: string[] = [];
    const logger = { info: (m: string) => logs.push(m), warn: (m: string) => logs.push(m), error: (m: string) => logs.push(m) };
    const source = watchPolicy(path, { intervalMs: 100, logger });
    try {
      const seen = new Set<boolean>();
      const sample = setInterval(() => seen.add(source.current().decide(evil).allowed), 5);
      // A writer that truncates and then writes the file a line every 50 ms (half the interval):
      // every prefix of it is a valid policy or a refused one; the prefixes that end before
      // evil's deny rule allow evil.
      const lines = POLICY.split(/(?<=\n)/);
      writeFileSync(path, "");
      for (const line of lines) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        appendFileSync(path, line);
      }
      for (let i = 0; i < 100 && source.generation === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      clearInterval(sample);
      seen.add(source.current().decide(evil).allowed);
      expect(source.generation, logs.join("\n")).toBe(1);
      expect([...seen]).toEqual([false]);
      expect(logs.filter((m) => m.includes("reloaded"))).toHaveLength(1);
    } finally {
      source.close();
    }
  }, 20_000);
});
