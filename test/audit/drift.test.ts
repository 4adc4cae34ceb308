import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MESHWARD_BIN } from "../helpers/cli.ts";
import { loadSources } from "../../src/audit/audit.ts";
import { chooseReference, collectPosture, compareEnvironments, driftPaths, referenceIndex, renderDriftText } from "../../src/audit/drift.ts";
import { auditSources } from "../../src/audit/audit.ts";
import { looksLikeProduction, productionScore } from "../../src/audit/rules/secrets.ts";

const DRIFT = join(import.meta.dirname, "fixtures", "drift");
const scratch = mkdtempSync(join(tmpdir(), "mw-audit-drift-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Writes a tree of files under a fresh folder of the scratch folder; returns that folder. */
function tree(name: string, files: Record<string, string>): string {
  const root = join(scratch, name);
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, file)), { recursive: true });
    writeFileSync(join(root, file), text);
  }
  return root;
}

function meshward(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [MESHWARD_BIN, ...args], { encoding: "utf8", timeout: 60_000 });
  return { code: run.status, stdout: run.stdout, stderr: run.stderr };
}

const configuration = (name: string, enabled: boolean, namespace?: string) =>
  `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: ${name}\n${namespace === undefined ? "" : `  namespace: ${namespace}\n`}spec:\n  mtls:\n    enabled: ${enabled}\n`;
const mtlsRows = (report: { rows: { aspect: string; subject: string; values: (string | null)[]; status: string }[] }) =>
  report.rows.filter((row) => row.aspect === "mTLS").map((row) => `${row.status} ${row.subject} ${JSON.stringify(row.values)}`);

describe("drift", () => {
  it("flags every setting where staging is weaker than production", () => {
    const report = driftPaths([join(DRIFT, "staging"), join(DRIFT, "production")]);
    expect(report.environments).toEqual(["staging", "production"]);
    expect(report.reference).toBe("production");
    const weaker = report.rows.filter((row) => row.status === "weaker").map((row) => `${row.aspect} | ${row.subject}`);
    expect(weaker).toEqual([
      "TLS | component statestore (state.redis)",
      "access policy | Configuration appconfig",
      "mTLS | Configuration appconfig",
      "mTLS | sidecar orders",
      "validators | CA example.org",
      "workload cert TTL | CA example.org",
      "workload cert TTL | Configuration appconfig",
    ]);
    const mtls = report.rows.find((row) => row.aspect === "mTLS" && row.subject === "Configuration appconfig");
    expect(mtls?.values).toEqual(["off", "on"]);
    expect(report.rows.filter((row) => row.status === "same").length).toBe(report.rows.length - weaker.length);
  });

  it("uses the production-named folder as reference wherever it is, else the last", () => {
    expect(referenceIndex(["production", "staging", "dev"])).toBe(0);
    expect(referenceIndex(["dev", "env-prod", "qa"])).toBe(1);
    expect(referenceIndex(["dev", "staging"])).toBe(1);
    const report = driftPaths([join(DRIFT, "production"), join(DRIFT, "staging")]);
    expect(report.reference).toBe("production");
    expect(report.rows.some((row) => row.status === "weaker" && row.weakerIn[0] === "staging")).toBe(true);
  });

  it("a stronger lower environment is 'differs', not weaker; identical environments agree", () => {
    const same = driftPaths([join(DRIFT, "production"), join(DRIFT, "production")]);
    expect(same.rows.every((row) => row.status === "same")).toBe(true);
    const env = (text: string) => collectPosture(loadSources([{ file: "c.yaml", text }]).corpus);
    const config = (mtls: string) => `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  mtls:\n    enabled: ${mtls}\n`;
    const stronger = compareEnvironments([{ name: "dev", posture: env(config("true")) }, { name: "prod", posture: env(config("false")) }]);
    expect(stronger.rows.find((row) => row.aspect === "mTLS")?.status).toBe("differs");
  });

  it("an injected workload's meshward.io/mode (annotation, else label) is its mTLS posture", () => {
    const env = (text: string) => collectPosture(loadSources([{ file: "d.yaml", text }]).corpus);
    const deployment = (annotations: string, labels = "") =>
      `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    metadata:\n      labels:\n        app: web\n${labels}      annotations:\n        meshward.io/inject: "true"\n${annotations}    spec:\n      containers:\n        - name: web\n          image: web:1\n`;
    const staging = env(deployment("", "        meshward.io/mode: permissive\n"));
    const production = env(deployment(""));
    const report = compareEnvironments([{ name: "staging", posture: staging }, { name: "production", posture: production }]);
    const row = report.rows.find((candidate) => candidate.aspect === "mTLS" && candidate.subject === "Deployment web");
    expect(row?.values).toEqual(["permissive", "strict"]);
    expect(row?.status).toBe("weaker");
    // Not injected (meshward.io/inject: "false"): no meshward posture to compare.
    const off = env(deployment("        meshward.io/mode: permissive\n").replace('meshward.io/inject: "true"', 'meshward.io/inject: "false"'));
    expect(compareEnvironments([{ name: "staging", posture: off }, { name: "production", posture: production }]).rows.find((candidate) => candidate.aspect === "mTLS")?.values).toEqual([null, "strict"]);
  });

  it("renders a table with one column per environment", () => {
    const text = renderDriftText(driftPaths([join(DRIFT, "staging"), join(DRIFT, "production")]), { color: false });
    expect(text.split("\n")[0]).toMatch(/^aspect +subject +staging +production \(reference\) +status$/);
    expect(text).toMatch(/mTLS +Configuration appconfig +off +on +WEAKER in staging/);
    expect(text).toContain("7 weaker than the reference");
  });

  it("the summary line agrees in number: 1 setting, 1 differs (review newuser2 L5)", () => {
    const report = { environments: ["staging", "production"], reference: "production", referenceBy: "name" as const };
    const row = { aspect: "tracing", subject: "Configuration appconfig", values: ["0.5", "1"], status: "differs" as const, weakerIn: [] };
    expect(renderDriftText({ ...report, rows: [row] }, { color: false })).toContain("\n1 setting compared across 2 environments (reference: production, named like production): 0 weaker than the reference, 1 differs.\n");
    expect(renderDriftText({ ...report, rows: [row, { ...row, subject: "Configuration other" }] }, { color: false })).toContain("\n2 settings compared across 2 environments (reference: production, named like production): 0 weaker than the reference, 2 differ.\n");
  });

  it("resources with one name in two namespaces of an environment are two rows; neither hides the other (review audit H1)", () => {
    const root = tree("h1-namespaces", {
      "staging/payments/config.yaml": configuration("appconfig", false, "payments"),
      "staging/shop/config.yaml": configuration("appconfig", true, "shop"),
      "production/payments/config.yaml": configuration("appconfig", true, "payments"),
      "production/shop/config.yaml": configuration("appconfig", true, "shop"),
    });
    expect(mtlsRows(driftPaths([join(root, "staging"), join(root, "production")]))).toEqual([
      `weaker Configuration payments/appconfig ["off","on"]`,
      `same Configuration shop/appconfig ["on","on"]`,
    ]);
    // The same the other way round (the weaker one read first).
    const swapped = tree("h1-swapped", {
      "staging/a/config.yaml": configuration("appconfig", true, "shop"),
      "staging/b/config.yaml": configuration("appconfig", false, "payments"),
      "production/config.yaml": configuration("appconfig", true, "payments") + "---\n" + configuration("appconfig", true, "shop"),
    });
    expect(mtlsRows(driftPaths([join(swapped, "staging"), join(swapped, "production")]))).toEqual([
      `weaker Configuration payments/appconfig ["off","on"]`,
      `same Configuration shop/appconfig ["on","on"]`,
    ]);
    const run = meshward("audit", "drift", join(root, "staging"), join(root, "production"), "--fail-on", "weaker");
    expect(run.code, run.stderr).toBe(1);
    expect(run.stdout).toMatch(/mTLS +Configuration payments\/appconfig +off +on +WEAKER in staging/);
  });

  it("without a namespace, resources with one name are told apart by file, and one file's duplicates by the weakest value (review audit H1)", () => {
    const root = tree("h1-files", {
      "staging/payments/config.yaml": configuration("appconfig", false),
      "staging/shop/config.yaml": configuration("appconfig", true),
      "production/payments/config.yaml": configuration("appconfig", true),
      "production/shop/config.yaml": configuration("appconfig", true),
    });
    expect(mtlsRows(driftPaths([join(root, "staging"), join(root, "production")]))).toEqual([
      `weaker Configuration appconfig in payments/config.yaml ["off","on"]`,
      `same Configuration appconfig in shop/config.yaml ["on","on"]`,
    ]);
    const one = tree("h1-one-file", {
      "staging/config.yaml": configuration("appconfig", false) + "---\n" + configuration("appconfig", true),
      "production/config.yaml": configuration("appconfig", true),
    });
    expect(mtlsRows(driftPaths([join(one, "staging"), join(one, "production")]))).toEqual([
      `weaker Configuration appconfig ["off (weakest of 2)","on"]`,
    ]);
    // A name unique in each environment still pairs across environments, whatever its namespace.
    const unique = tree("h1-unique", {
      "staging/config.yaml": configuration("appconfig", false, "staging"),
      "production/config.yaml": configuration("appconfig", true, "production"),
    });
    expect(mtlsRows(driftPaths([join(unique, "staging"), join(unique, "production")]))).toEqual([`weaker Configuration appconfig ["off","on"]`]);
  });

  it("takes production words whole, never negated, from every path segment the environments do not share (review audit H2)", () => {
    for (const segment of ["prod", "Production", "prd", "live"]) expect(productionScore(segment), segment).toBe(2);
    for (const segment of ["env-prod", "prod-eu", "eu_production"]) expect(productionScore(segment), segment).toBe(1);
    for (const segment of ["non-prod", "pre-prod", "not_prod", "pre.production", "nonprod", "preprod", "products", "reprod", "staging"]) expect(productionScore(segment), segment).toBe(0);
    expect(looksLikeProduction("deploy/non-prod/secretstore.yaml", undefined)).toBe(false);
    expect(looksLikeProduction("deploy/prod-eu/secretstore.yaml", undefined)).toBe(true);
    expect(chooseReference(["envs/non-prod", "envs/prod"])).toEqual({ index: 1, by: "name" });
    expect(chooseReference(["envs/pre-prod", "envs/prod", "envs/dev"])).toEqual({ index: 1, by: "name" });
    expect(chooseReference(["environments/production/k8s", "environments/staging/k8s"])).toEqual({ index: 0, by: "name" });
    expect(chooseReference(["env-prod", "production"])).toEqual({ index: 1, by: "name" });
    expect(chooseReference(["/srv/prod-repo/envs/staging", "/srv/prod-repo/envs/qa"])).toEqual({ index: 1, by: "last" });
    // MW-SECRET-004 (a local secret store in a production path) reads the same words.
    const store = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: secretstore\nspec:\n  type: secretstores.local.file\n  metadata:\n    - name: secretsFile\n      value: /secrets.json\n";
    const ids = (file: string) => auditSources([{ file, text: store }]).findings.map((finding) => finding.ruleId).filter((id) => id === "MW-SECRET-004");
    expect(ids("deploy/non-prod/secretstore.yaml")).toEqual([]);
    expect(ids("deploy/prod/secretstore.yaml")).toEqual(["MW-SECRET-004"]);
  });

  it("the CLI compares against production whatever the folder order and names; --reference names it (review audit H2)", () => {
    const root = tree("h2", {
      "non-prod/config.yaml": configuration("daprsystem", false, "dapr-system"),
      "pre-prod/config.yaml": configuration("daprsystem", false, "dapr-system"),
      "prod/config.yaml": configuration("daprsystem", true, "dapr-system"),
      "environments/production/k8s/config.yaml": configuration("daprsystem", true),
      "environments/staging/k8s/config.yaml": configuration("daprsystem", false),
      "a/config.yaml": configuration("daprsystem", false),
      "b/config.yaml": configuration("daprsystem", true),
    });
    for (const lower of ["non-prod", "pre-prod"]) {
      const run = meshward("audit", "drift", join(root, lower), join(root, "prod"), "--fail-on", "weaker");
      expect(run.code, run.stdout + run.stderr).toBe(1);
      expect(run.stdout).toMatch(new RegExp(`mTLS +Configuration daprsystem +off +on +WEAKER in ${lower}`));
      expect(run.stdout).toContain("(reference: prod, named like production)");
    }
    const nested = meshward("audit", "drift", join(root, "environments/production/k8s"), join(root, "environments/staging/k8s"), "--fail-on", "weaker", "--format", "json");
    expect(nested.code, nested.stderr).toBe(1);
    expect(JSON.parse(nested.stdout)).toMatchObject({ reference: join(root, "environments/production/k8s"), referenceBy: "name" });
    // No folder named like production: the last, said so; --reference picks another.
    const last = meshward("audit", "drift", join(root, "b"), join(root, "a"), "--fail-on", "weaker");
    expect(last.code).toBe(0);
    expect(last.stdout).toContain("(reference: a, the last folder given: none is named like production; name it with --reference)");
    const flag = meshward("audit", "drift", join(root, "a"), join(root, "b"), "--reference", join(root, "b"), "--fail-on", "weaker");
    expect(flag.code, flag.stderr).toBe(1);
    expect(flag.stdout).toContain("(reference: b, given with --reference)");
    expect(meshward("audit", "drift", join(root, "a"), join(root, "b"), "--reference", "b", "--fail-on", "weaker").code).toBe(1);
    const wrong = meshward("audit", "drift", join(root, "a"), join(root, "b"), "--reference", "c");
    expect(wrong.code).toBe(2); // a usage error
    expect(wrong.stderr).toMatch(/--reference c: not one of the environments given .*\[E_AUDIT_USAGE\]/);
    expect(meshward("audit", "drift", "--help").stdout).toContain("--reference <dir>");
  });

  it("refuses an environment folder that does not exist or holds nothing to compare (review audit M1)", () => {
    const root = tree("m1", {
      "staging/statestore.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.redis\n  metadata:\n    - name: redisHost\n      value: redis:6379\n",
      "production/statestore.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.redis\n  metadata:\n    - name: redisHost\n      value: redis:6379\n    - name: enableTLS\n      value: \"true\"\n",
      "docs/README.md": "# nothing here\n",
      "overlays/staging/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\npatches:\n  - patch: |-\n      apiVersion: dapr.io/v1alpha1\n      kind: Configuration\n      metadata:\n        name: appconfig\n      spec:\n        mtls:\n          enabled: false\n",
    });
    const typo = meshward("audit", "drift", join(root, "staging"), join(root, "prodution"), "--fail-on", "weaker");
    expect(typo.code).toBe(1);
    expect(typo.stdout).toBe("");
    expect(typo.stderr).toMatch(/drift: environment folder not found: .*prodution \(does not exist\) \[E_AUDIT_NOT_FOUND\]/);
    const empty = meshward("audit", "drift", join(root, "docs"), join(root, "production"));
    expect(empty.code).toBe(1);
    expect(empty.stdout).toBe("");
    expect(empty.stderr).toMatch(/drift: nothing to compare in .*docs: .*\[E_AUDIT_NOTHING_TO_COMPARE\]/);
    const overlay = meshward("audit", "drift", join(root, "overlays/staging"), join(root, "production"), "--fail-on", "weaker");
    expect(overlay.code).toBe(1);
    // The overlay folder is rendered with kubectl kustomize; its base is missing here, so it is refused.
    expect(overlay.stderr).toMatch(/drift: .*overlays\/staging: kustomize overlay not rendered \(`kubectl kustomize .*` failed: .*\[E_AUDIT_KUSTOMIZE\]/);
    expect(meshward("audit", "drift", join(root, "staging"), join(root, "production"), "--fail-on", "weaker").code).toBe(1);
  });
});
