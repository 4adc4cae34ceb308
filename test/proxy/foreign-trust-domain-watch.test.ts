import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readPolicyFile, watchForeignTrustDomains, type ForeignTrustDomainWarning } from "../../src/proxy/policy-source.ts";

/**
 * policy-foreign-trust-domain after a trust-bundle change (review: the sidecar read the trusted
 * trust domains once at start). A federated trust domain added to the bundle makes a policy for
 * its callers verifiable; one removed makes it match no caller again. Each change is said once;
 * a refresh that leaves the trust domains as they were says nothing.
 */
describe("watchForeignTrustDomains", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-foreign-td-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const file = join(work, "policy.yaml");
  writeFileSync(
    file,
    `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: p
spec:
  accessControl:
    defaultAction: deny
    policies:
      - appId: frontend
        namespace: shop
        trustDomain: partner.test
        defaultAction: deny
        operations:
          - { name: /orders/*, httpVerb: [GET], action: allow }
`,
  );

  const start = (initial: string[]) => {
    const { policy } = readPolicyFile(file);
    const reloads = new Set<() => void>();
    const source = { current: () => policy, onReload: (listener: () => void) => (reloads.add(listener), () => reloads.delete(listener)) };
    const warned: ForeignTrustDomainWarning[] = [];
    const watch = watchForeignTrustDomains(source, file, "example.test", new Set(initial), (warning) => warned.push(warning));
    return { watch, warned, reload: () => reloads.forEach((listener) => listener()), reloads };
  };

  it("warns at start, and again only when the trusted trust domains change so that the policy's are not among them", () => {
    const { watch, warned } = start(["example.test"]);
    expect(warned.map((w) => w.trustDomains)).toEqual([["partner.test"]]);
    // A refresh with the same trust domains (the same bundle, or new roots of the same domains): nothing.
    watch.trusted(new Set(["example.test"]));
    expect(warned).toHaveLength(1);
    // partner.test federated: the policy's callers can be verified, nothing to say.
    watch.trusted(new Set(["example.test", "partner.test"]));
    watch.trusted(new Set(["partner.test", "example.test"]));
    expect(warned).toHaveLength(1);
    // partner.test removed from the bundle: said once, not at every refresh after.
    watch.trusted(new Set(["example.test"]));
    watch.trusted(new Set(["example.test"]));
    expect(warned.map((w) => w.trustDomains)).toEqual([["partner.test"], ["partner.test"]]);
    expect(warned[1]!.message).toContain("names callers of trust domain partner.test");
    watch.close();
  });

  it("says nothing at start when the bundle trusts the policy's trust domain, then warns once it is removed", () => {
    const { watch, warned, reload, reloads } = start(["example.test", "partner.test"]);
    expect(warned).toEqual([]);
    reload();
    expect(warned).toEqual([]);
    watch.trusted(new Set(["example.test", "other.test"]));
    expect(warned.map((w) => w.trustDomains)).toEqual([["partner.test"]]);
    // The policy reload check uses the trust domains as they are now.
    reload();
    expect(warned).toHaveLength(2);
    watch.close();
    expect(reloads.size).toBe(0);
  });
});
