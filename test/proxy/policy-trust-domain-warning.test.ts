import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTokenCli, startCaCli, startCli, type LongRunning } from "../helpers/cli.ts";

/**
 * New-user review M2: docs/sidecar.md's quick start policy named example.org while the CA of
 * getting-started is example.test. The sidecar loaded it without a word, and the caller the
 * policy allows then got 403 ("an app policy exists … but not for its trust domain"). A policy
 * whose app policies name a trust domain the sidecar cannot verify (not its own, no root of it
 * in its bundle) is now warned about once at start: event policy-foreign-trust-domain.
 */
const policy = (trustDomain: string | undefined) => `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: orders-policy
spec:
  accessControl:
    defaultAction: deny
    policies:
      - appId: frontend
        namespace: shop
${trustDomain === undefined ? "" : `        trustDomain: ${trustDomain}\n`}        defaultAction: deny
        operations:
          - name: /orders/*
            httpVerb: ["GET"]
            action: allow
`;

describe("a sidecar policy naming another trust domain's callers", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-policy-td-"));
  const caDir = join(work, "ca");
  let ca: LongRunning;
  let address: string;
  beforeAll(async () => {
    ({ ca, address } = await startCaCli(caDir, "example.test"));
  }, 60_000);
  afterAll(async () => {
    await ca.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const startSidecar = async (name: string, trustDomain: string | undefined) => {
    const file = join(work, `${name}.yaml`);
    writeFileSync(file, policy(trustDomain));
    const token = await createTokenCli(caDir, "shop", `orders-${name}`);
    const sidecar = await startCli(
      ["sidecar", "--app-id", `orders-${name}`, "--namespace", "shop", "--ca", address, "--bundle", join(caDir, "bundle.pem"), "--inbound", "127.0.0.1:0", "--app", "127.0.0.1:1", "--policy", file],
      /meshward sidecar ready: /,
      { env: { MESHWARD_TOKEN: token } },
    );
    return { sidecar, file };
  };
  const warnings = (stderr: string) =>
    stderr
      .split("\n")
      .filter((line) => line.includes('"event":"policy-foreign-trust-domain"'))
      .map((line) => JSON.parse(line) as { level: string; msg: string; foreignTrustDomains: string[]; appIds: string[]; trustDomain: string });

  it("example.org in a sidecar of example.test: one warning at start naming both and the fix", async () => {
    const { sidecar, file } = await startSidecar("org", "example.org");
    try {
      const found = warnings(sidecar.stderr());
      expect(found, sidecar.stderr()).toHaveLength(1);
      expect(found[0]).toMatchObject({ level: "warn", trustDomain: "example.test", foreignTrustDomains: ["example.org"], appIds: ["frontend"] });
      expect(found[0]?.msg).toBe(
        `the access policy ${file} names callers of trust domain example.org (app policies frontend in shop), but this sidecar is in example.test and trusts no other trust domain: those policies match no caller, who get the global default instead. Write trustDomain: example.test in them`,
      );
    } finally {
      expect(await sidecar.stop()).toBe(0);
    }
  }, 60_000);

  it("no trustDomain in the app policy (Dapr's \"public\"): warned, saying so", async () => {
    const { sidecar } = await startSidecar("public", undefined);
    try {
      const found = warnings(sidecar.stderr());
      expect(found, sidecar.stderr()).toHaveLength(1);
      expect(found[0]?.foreignTrustDomains).toEqual(["public"]);
      expect(found[0]?.msg).toMatch(/a policy without trustDomain is for "public", Dapr's default/);
    } finally {
      expect(await sidecar.stop()).toBe(0);
    }
  }, 60_000);

  it("its own trust domain: no warning", async () => {
    const { sidecar } = await startSidecar("own", "example.test");
    try {
      expect(warnings(sidecar.stderr())).toEqual([]);
      expect(sidecar.stderr()).not.toMatch(/foreign/);
    } finally {
      expect(await sidecar.stop()).toBe(0);
    }
  }, 60_000);
});
