import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { auditPaths, readPaths } from "../../src/audit/audit.ts";
import { driftPaths } from "../../src/audit/drift.ts";
import { renderedName } from "../../src/audit/kustomize-render.ts";
import { renderText } from "../../src/audit/reporters/text.ts";
import { MeshwardError } from "../../src/errors.ts";
import { runCli } from "../helpers/cli.ts";
import { overlayProgress } from "../../src/cli/actions/audit.ts";

// A kustomize base with two overlays: staging turns mTLS off (inline JSON6902 patch), Redis TLS
// off and the Dapr sidecar API onto every interface (patch files); production only scales.
// A folder with a kustomization file is audited as the overlay it renders to (`kubectl kustomize`).
const ENVS = join(import.meta.dirname, "fixtures", "kustomize-envs");
const STAGING = join(ENVS, "overlays", "staging");
const PRODUCTION = join(ENVS, "overlays", "production");
const BROKEN = join(ENVS, "overlays", "broken");
const scratch = mkdtempSync(join(tmpdir(), "meshward-kustomize-"));
/** A kubectl that does not exist: what a machine without kubectl sees. */
const NO_KUBECTL = join(scratch, "kubectl-not-installed");

afterAll(() => rmSync(scratch, { recursive: true, force: true }));
/** A folder of the scratch space holding a copy of the fixture's base. */
const withBase = (name: string): string => {
  const tree = join(scratch, name);
  cpSync(join(ENVS, "base"), join(tree, "base"), { recursive: true });
  return tree;
};

const at = (result: ReturnType<typeof auditPaths>): string[] => result.findings.map((finding) => `${relative(ENVS, finding.file)}:${finding.ruleId}@${finding.line}`);

describe("an overlay folder is audited as rendered by kubectl kustomize", () => {
  it("staging: findings against the rendered objects, under the overlay's path, naming the object", () => {
    const result = auditPaths([STAGING]);
    const file = relative(ENVS, renderedName(STAGING));
    expect(file).toBe("overlays/staging/(kubectl kustomize)");
    // MW-K8S-005 is the base's own `dapr.io/config` line: the overlay patches the Deployment's
    // listen address, not that value, and the rule finds it in the base object too.
    expect(at(result)).toEqual(["base/orders.yaml:MW-K8S-005@18", `${file}:MW-K8S-001@19`, `${file}:MW-TLS-001@43`, `${file}:MW-MTLS-001@62`]);
    expect(result.findings[0]?.message).toContain(`Rendered from this file by \`kubectl kustomize ${STAGING}\` (Deployment orders). The overlay changes this object, but not this value.`);
    const listen = result.findings.find((finding) => finding.ruleId === "MW-K8S-001");
    expect(listen?.message).toContain(`In the output of \`kubectl kustomize ${STAGING}\` (Deployment orders)`);
    expect(result.parseErrors).toEqual([]);
  });

  it("production: the base's secure settings, no finding", () => {
    const result = auditPaths([PRODUCTION]);
    expect(result.findings).toEqual([]);
    expect(result.resourcesAudited).toBe(3);
  });

  it("drift between the staging and production overlays shows each weakening", () => {
    const report = driftPaths([STAGING, PRODUCTION]);
    expect(report.reference).toBe("production");
    const weaker = report.rows.filter((row) => row.status === "weaker").map((row) => `${row.aspect} | ${row.subject} | ${row.values.join(" / ")}`);
    expect(weaker).toEqual([
      "TLS | component statestore (state.redis) | off/weak (MW-TLS-001) / on",
      "mTLS | Configuration appconfig | off / on",
      "sidecar listen | Deployment orders | 0.0.0.0 / 127.0.0.1",
    ]);
  });

  it("files beside the overlay that it does not name are audited as files; the ones it renders only in its output", () => {
    // The overlay and a copy of the base in one folder, audited together: a base outside the audited folder is not rendered (review audit finding 6).
    const tree = withBase("beside-tree");
    const overlay = join(tree, "beside");
    mkdirSync(overlay);
    writeFileSync(join(overlay, "kustomization.yaml"), `resources:\n  - ../base\npatches:\n  - path: plaintext.yaml\n`);
    writeFileSync(join(overlay, "plaintext.yaml"), "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n    - name: redisHost\n      value: redis-master.shop.svc.cluster.local:6379\n");
    writeFileSync(join(overlay, "sidecar.yaml"), "appId: orders\nca: ca.shop.svc:8443\npolicy: policy.yaml\ntoken: mw-join-3f9a1c2b7d\n");
    const result = auditPaths([tree]);
    expect(result.parseErrors).toEqual([]);
    expect(result.findings.map((finding) => `${relative(overlay, finding.file)}:${finding.ruleId}@${finding.line}`)).toEqual([
      "(kubectl kustomize):MW-TLS-001@41",
      "sidecar.yaml:MW-SECRET-006@4",
    ]);
    // The patch drops the base's enableTLS: redisHost is the base's value, but a finding only with the patch.
    expect(result.findings[0]?.message).toMatch(/the object comes from .*base\/statestore\.yaml, where this value is the same \(line \d+\), but it is a finding only with the overlay's changes elsewhere in the object\.$/);
  });

  it("an overlay that does not render is reported and its files audited one by one", () => {
    const result = auditPaths([BROKEN]);
    expect(result.parseErrors).toHaveLength(1);
    expect(result.parseErrors[0]).toMatchObject({ file: join(BROKEN, "kustomization.yaml"), kind: "kustomize" });
    expect(result.parseErrors[0]?.message).toMatch(/^kustomize overlay not rendered \(`kubectl kustomize .*broken` failed: accumulating resources/);
  });
});

describe("kustomizations deeper in the tree", () => {
  it("auditing the tree renders each overlay once; a base the overlays name is in their output, not rendered or audited on its own", () => {
    const read = readPaths([ENVS, STAGING]);
    expect(read.rendered.map((directory) => relative(ENVS, directory))).toEqual(["overlays/production", "overlays/staging"]);
    expect(read.problems.map((problem) => relative(ENVS, problem.file))).toEqual(["overlays/broken/kustomization.yaml"]);
    const result = auditPaths([ENVS]);
    const file = relative(ENVS, renderedName(STAGING));
    expect(at(result)).toEqual(["base/orders.yaml:MW-K8S-005@18", `${file}:MW-K8S-001@19`, `${file}:MW-TLS-001@43`, `${file}:MW-MTLS-001@62`]);
  });

  it("a weakness of the base is reported once, as each overlay that deploys it renders it", () => {
    const tree = join(scratch, "tree");
    mkdirSync(join(tree, "base"), { recursive: true });
    writeFileSync(join(tree, "base", "kustomization.yaml"), "resources:\n  - statestore.yaml\n");
    writeFileSync(join(tree, "base", "statestore.yaml"), "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n    - name: redisHost\n      value: redis-master.shop.svc.cluster.local:6379\n");
    for (const name of ["staging", "production"]) {
      mkdirSync(join(tree, "overlays", name), { recursive: true });
      writeFileSync(join(tree, "overlays", name, "kustomization.yaml"), `namespace: ${name}\nresources:\n  - ../../base\n`);
    }
    const result = auditPaths([tree]);
    expect(result.parseErrors).toEqual([]);
    // The overlays only set the namespace: the finding is the base file's line, named once.
    expect(result.findings.map((finding) => `${relative(tree, finding.file)}:${finding.ruleId}@${finding.line}`)).toEqual(["base/statestore.yaml:MW-TLS-001@6"]);
    expect(result.findings[0]?.message).toBe(`Redis component without TLS. Rendered from this file by \`kubectl kustomize ${join(tree, "overlays", "production")}\`, \`kubectl kustomize ${join(tree, "overlays", "staging")}\` (Dapr Component statestore).`);
    // --no-kustomize: file by file, the base's file once.
    expect(auditPaths([tree], { renderKustomize: false }).findings.map((finding) => `${relative(tree, finding.file)}:${finding.ruleId}`)).toEqual(["base/statestore.yaml:MW-TLS-001"]);
  });
});

describe("a finding in a rendered overlay points at the source file when the overlay did not change the object", () => {
  it("an object the overlay only renames and labels: the base file's line; one it patches: the rendered line, saying where the object comes from", () => {
    const tree = withBase("traced-tree");
    const overlay = join(tree, "traced");
    mkdirSync(overlay);
    writeFileSync(join(overlay, "kustomization.yaml"), `namePrefix: eu-\ncommonLabels:\n  team: shop\nresources:\n  - ../base\npatches:\n  - target:\n      kind: Configuration\n      name: appconfig\n    patch: |-\n      - op: replace\n        path: /spec/mtls/workloadCertTTL\n        value: 720h\n`);
    const result = auditPaths([tree], { enable: ["MW-K8S-003"] });
    expect(result.parseErrors).toEqual([]);
    const rows = result.findings.map((finding) => `${relative(tree, finding.file)}:${finding.ruleId}@${finding.line}`);
    // MW-K8S-003 (opt-in) on the Deployment the overlay only prefixes and labels: the base's line.
    expect(rows).toContain("base/orders.yaml:MW-K8S-003@14");
    const ttl = result.findings.find((finding) => finding.ruleId === "MW-MTLS-002");
    expect(relative(tree, ttl?.file ?? "")).toBe("traced/(kubectl kustomize)");
    expect(ttl?.message).toContain(`In the output of \`kubectl kustomize ${overlay}\` (Dapr Configuration eu-appconfig); the line is that output's: the object comes from ${join(tree, "base", "configuration.yaml")}, but the overlay sets or changes this value.`);
  });
});

describe("without kubectl", () => {
  it("the overlay's files are audited one by one and the report says how to audit the rendered output", () => {
    const result = auditPaths([STAGING], { kubectl: NO_KUBECTL });
    // Only what the overlay's own files say: the base is not read.
    expect(at(result)).toEqual(["overlays/staging/kustomization.yaml:MW-MTLS-001@15", "overlays/staging/statestore-plaintext.yaml:MW-TLS-001@12"]);
    const text = renderText(result, { color: false });
    expect(text).toContain("Kustomize overlays not rendered (their files audited one by one):");
    expect(text).toContain(`kustomize overlay not rendered (kubectl is not on PATH): its bases and patches were not applied, its files were audited one by one; audit the rendered output instead: \`kubectl kustomize ${STAGING} | meshward audit -\``);
    expect(text.trimEnd().split("\n").pop()).toMatch(/, 1 kustomize overlay not rendered$/);
  });

  it("drift refuses overlays it cannot render rather than compare partial documents", () => {
    let error: unknown;
    try {
      driftPaths([STAGING, PRODUCTION], undefined, { kubectl: NO_KUBECTL });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(MeshwardError);
    expect((error as MeshwardError).code).toBe("E_AUDIT_KUSTOMIZE");
    expect((error as MeshwardError).message).toContain("kubectl kustomize DIR > DIR.yaml");
  });
});

describe("standard input: `meshward audit -`", () => {
  const rendered = execFileSync("kubectl", ["kustomize", STAGING], { encoding: "utf8" });

  it("reads YAML from stdin", () => {
    const result = auditPaths(["-"], { readStdin: () => rendered });
    expect(result.findings.map((finding) => `${finding.file}:${finding.ruleId}@${finding.line}`)).toEqual([
      "<stdin>:MW-K8S-005@17", "<stdin>:MW-K8S-001@19", "<stdin>:MW-TLS-001@43", "<stdin>:MW-MTLS-001@62",
    ]);
  });

  it("the CLI reads a piped render", async () => {
    const run = await runCli(["audit", "-", "--fail-on", "high"], { input: rendered });
    expect(run.code, run.stderr).toBe(1);
    expect(run.stdout).toContain("<stdin>\n  17:9");
    expect(run.stdout.trimEnd().split("\n").pop()).toMatch(/^4 findings \(4 high, 0 medium, 0 low\) in 1 file, 1 file scanned/);
  });
});


describe("a patch elsewhere in the object does not make the overlay the author of a value it never touches", () => {
  const DEPLOY = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  selector: {matchLabels: {app: orders}}\n  template:\n    metadata:\n      labels: {app: orders}\n    spec:\n      containers:\n        - name: orders\n          image: example/orders:1.0\n          env:\n            - name: DATABASE_URL\n              value: postgres://app@pg.prod.svc:5432/app?sslmode=disable\n";
  const REPLICAS = "resources:\n  - ../../base\npatches:\n  - target: {kind: Deployment, name: orders}\n    patch: |\n      - op: add\n        path: /spec/replicas\n        value: 3\n";
  const tree = (name: string, overlays: Record<string, string>): string => {
    const root = join(scratch, name);
    mkdirSync(join(root, "base"), { recursive: true });
    writeFileSync(join(root, "base", "deploy.yaml"), DEPLOY);
    writeFileSync(join(root, "base", "kustomization.yaml"), "resources:\n  - deploy.yaml\n");
    for (const [overlay, text] of Object.entries(overlays)) {
      mkdirSync(join(root, "overlays", overlay), { recursive: true });
      writeFileSync(join(root, "overlays", overlay, "kustomization.yaml"), text);
    }
    return root;
  };

  it("an overlay that only adds spec.replicas: the base's line, saying the overlay changed the object but not this value", () => {
    const root = tree("replicas-only", { replicas: REPLICAS });
    const result = auditPaths([root]);
    expect(result.parseErrors).toEqual([]);
    const finding = result.findings.find((candidate) => candidate.ruleId === "MW-TLS-002");
    expect(`${relative(root, finding?.file ?? "")}:${finding?.line}`).toBe("base/deploy.yaml:16");
    expect(finding?.message).toContain(`Rendered from this file by \`kubectl kustomize ${join(root, "overlays", "replicas")}\` (Deployment orders). The overlay changes this object, but not this value.`);
    expect(finding?.message).not.toContain("sets or changes this value");
  });

  it("an overlay that patches the value itself: the rendered line, saying the overlay sets or changes it; one beside it that only sets the namespace is named apart", () => {
    const root = tree("value-patched", {
      url: "resources:\n  - ../../base\npatches:\n  - target: {kind: Deployment, name: orders}\n    patch: |\n      - op: replace\n        path: /spec/template/spec/containers/0/env/0/value\n        value: postgres://app@pg.stage.svc:5432/app?sslmode=disable\n",
      replicas: REPLICAS,
      shop: "namespace: shop\nresources:\n  - ../../base\n",
    });
    const result = auditPaths([root]);
    const rows = result.findings.filter((finding) => finding.ruleId === "MW-TLS-002");
    expect(rows.map((finding) => relative(root, finding.file))).toEqual(["base/deploy.yaml", "overlays/url/(kubectl kustomize)"]);
    expect(rows[0]?.message).toContain(`Rendered from this file by \`kubectl kustomize ${join(root, "overlays", "replicas")}\`, \`kubectl kustomize ${join(root, "overlays", "shop")}\` (Deployment orders). Overlay ${join(root, "overlays", "replicas")} changes this object, but not this value.`);
    expect(rows[1]?.message).toContain(`the object comes from ${join(root, "base", "deploy.yaml")}, but the overlay sets or changes this value.`);
  });
});

describe("progress while overlays render (review newuser2 L5: 5-8 s with nothing printed)", () => {
  it("the audit says each overlay it is about to render; the CLI prints one line each on stderr only when stderr is a terminal", () => {
    const seen: string[] = [];
    auditPaths([ENVS], { onRender: (directory) => seen.push(relative(ENVS, directory)) });
    expect(seen.sort()).toEqual(["overlays/broken", "overlays/production", "overlays/staging"]);
    const written: string[] = [];
    const tty = overlayProgress({ isTTY: true, write: (text: string) => written.push(text) });
    tty?.(join(process.cwd(), "deploy", "overlays", "ha"));
    expect(written).toEqual([`meshward audit: rendering ${join("deploy", "overlays", "ha")} (kubectl kustomize)\n`]);
    expect(overlayProgress({ isTTY: false, write: () => written.push("no") })).toBeUndefined();
    expect(overlayProgress({ write: () => written.push("no") })).toBeUndefined();
  });

  it("piped (not a terminal): no progress line, and JSON on stdout as before", async () => {
    const run = await runCli(["audit", STAGING, "--format", "json"]);
    expect(run.stderr).not.toContain("rendering");
    expect((JSON.parse(run.stdout) as { summary: { findings: number } }).summary.findings).toBe(4);
  });
});

describe("a forged config.kubernetes.io/origin annotation is not trusted (review audit finding 1)", () => {
  const COMPONENT = (host: string, tail = ""): string => `apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: ${host}\n  - name: enableTLS\n    value: "false"${tail}\n`;
  const IGNORED = "   # meshward-audit-ignore MW-TLS-001 -- local kind cluster only";
  /** A repo with dev/ (an accepted TLS-off component) and prod/ whose kustomization patches in `annotation: origin`. */
  const tree = (name: string, annotation: string, origin: string): string => {
    const root = join(scratch, name);
    mkdirSync(join(root, "dev"), { recursive: true });
    mkdirSync(join(root, "prod"), { recursive: true });
    writeFileSync(join(root, "dev", "statestore.yaml"), COMPONENT("localhost:6379", IGNORED));
    writeFileSync(join(root, "prod", "statestore.yaml"), COMPONENT("redis.prod.svc:6379"));
    writeFileSync(join(root, "prod", "kustomization.yaml"), `resources:\n- statestore.yaml\npatches:\n- target: {kind: Component}\n  patch: |-\n    - op: add\n      path: /metadata/annotations\n      value:\n        ${annotation}: "path: ${origin}"\n`);
    return root;
  };
  const tls = (result: ReturnType<typeof auditPaths>) => ({
    reported: result.findings.filter((finding) => finding.ruleId === "MW-TLS-001").map((finding) => finding.file),
    suppressed: result.suppressed.map((finding) => finding.file),
  });

  it("a patch pointing the prod object at dev's file: the finding stays prod's, dev's ignore comment does not cover it", () => {
    const root = tree("forged-dev", "config.kubernetes.io/origin", join(scratch, "forged-dev", "dev", "statestore.yaml"));
    const result = auditPaths([root]);
    expect(tls(result)).toEqual({ reported: [renderedName(join(root, "prod"))], suppressed: [join(root, "dev", "statestore.yaml")] });
    const finding = result.findings.find((each) => each.ruleId === "MW-TLS-001");
    expect(finding?.message).toContain("annotation names");
    expect(finding?.message).toContain(`attributed to the overlay ${join(root, "prod", "kustomization.yaml")}`);
  });

  it("the annotation's name escaped (YAML \\x2F, not found by a text search): the origin is still not a resource the overlay loads", () => {
    const root = tree("forged-escaped", "\"config.kubernetes.io\\x2Forigin\"", join(scratch, "forged-escaped", "dev", "statestore.yaml"));
    expect(tls(auditPaths([root]))).toEqual({ reported: [renderedName(join(root, "prod"))], suppressed: [join(root, "dev", "statestore.yaml")] });
  });

  it("an origin outside the audited folder is never read (a regular file there, with the same object and an ignore comment)", () => {
    const outside = join(scratch, "forged-outside-file.yaml");
    writeFileSync(outside, COMPONENT("redis.prod.svc:6379", IGNORED));
    const root = tree("forged-outside", "\"config.kubernetes.io\\x2Forigin\"", outside);
    rmSync(join(root, "dev"), { recursive: true });
    const result = auditPaths([join(root, "prod")]);
    expect(tls(result)).toEqual({ reported: [renderedName(join(root, "prod"))], suppressed: [] });
    expect(result.ignoreProblems).toEqual([]);
  });

  it("an origin naming /dev/zero or a FIFO: nothing is opened, the audit ends (it grew without bound / hung)", () => {
    for (const [name, target] of [["forged-zero", "/dev/zero"], ["forged-fifo", join(scratch, "forged.fifo")]] as const) {
      if (name === "forged-fifo") execFileSync("mkfifo", [target]);
      const root = tree(name, "config.kubernetes.io/origin", target);
      expect(tls(auditPaths([join(root, "prod")]))).toEqual({ reported: [renderedName(join(root, "prod"))], suppressed: [] });
    }
  });

  it("an honest overlay still traces its objects to their files", () => {
    const root = join(scratch, "honest-origin");
    mkdirSync(join(root, "base"), { recursive: true });
    mkdirSync(join(root, "prod"), { recursive: true });
    writeFileSync(join(root, "base", "statestore.yaml"), COMPONENT("redis.prod.svc:6379"));
    writeFileSync(join(root, "base", "kustomization.yaml"), "resources:\n- statestore.yaml\n");
    writeFileSync(join(root, "prod", "kustomization.yaml"), "namespace: shop\nresources:\n- ../base\n");
    expect(tls(auditPaths([root]))).toEqual({ reported: [join(root, "base", "statestore.yaml")], suppressed: [] });
  });
});

describe("an overlay naming a kustomization outside the audited folder is not rendered (review audit finding 6)", () => {
  const VICTIM = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: billing\nspec:\n  template:\n    spec:\n      containers:\n        - name: billing\n          image: x\n          env:\n            - name: DATABASE_URL\n              value: \"postgres://billing:VictimPass@billing-db.internal.corp:5432/billing?sslmode=disable\"\n";
  const setup = (name: string, entry: (victim: string) => string): { chart: string; victim: string } => {
    const root = join(scratch, name);
    const victim = join(root, "victim-infra", "prod");
    const chart = join(root, "untrusted-chart");
    mkdirSync(victim, { recursive: true });
    mkdirSync(join(chart, "deploy"), { recursive: true });
    writeFileSync(join(victim, "db.yaml"), VICTIM);
    writeFileSync(join(victim, "kustomization.yaml"), "resources:\n- db.yaml\n");
    writeFileSync(join(chart, "deploy", "kustomization.yaml"), `resources:\n- ${entry(victim)}\n`);
    return { chart, victim };
  };

  for (const [name, entry] of [["relative", () => "../../victim-infra/prod"], ["absolute", (victim: string) => victim]] as const) {
    it(`${name} path: reported, nothing of the other tree read or quoted`, () => {
      const { chart } = setup(`outside-${name}`, entry);
      const result = auditPaths([chart]);
      const text = renderText(result, { color: false });
      expect(text).not.toContain("billing-db.internal.corp");
      expect(text).not.toContain("victim-infra/prod/db.yaml");
      expect(result.findings).toEqual([]);
      expect(result.parseErrors.map((problem) => [problem.kind, problem.file])).toEqual([["kustomize", join(chart, "deploy", "kustomization.yaml")]]);
      expect(result.parseErrors[0]?.message).toContain(`outside the audited folder ${chart}: not read; audit a folder that holds both`);
    });
  }

  it("the same folders audited together: rendered; an overlay in a git work tree may name bases anywhere in it", () => {
    const { chart } = setup("outside-together", () => "../../victim-infra/prod");
    const root = join(chart, "..");
    expect(auditPaths([root]).parseErrors).toEqual([]);
    mkdirSync(join(root, ".git"));
    const result = auditPaths([chart]);
    expect(result.parseErrors).toEqual([]);
    expect(result.findings.map((finding) => relative(root, finding.file))).toContain("victim-infra/prod/db.yaml");
  });
});

describe("a file in a base folder that the base's kustomization does not list is audited (review audit finding 2)", () => {
  it("an overlay naming ../app: app/dapr-config.yaml (mTLS off, not listed) is still a finding; the listed file is in the output only", () => {
    const root = join(scratch, "unlisted");
    mkdirSync(join(root, "app"), { recursive: true });
    mkdirSync(join(root, "overlay"), { recursive: true });
    writeFileSync(join(root, "app", "statestore.yaml"), "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: redis.prod.svc:6379\n  - name: enableTLS\n    value: \"false\"\n");
    writeFileSync(join(root, "app", "kustomization.yaml"), "resources:\n- statestore.yaml\n");
    writeFileSync(join(root, "app", "dapr-config.yaml"), "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: appconfig\nspec:\n  mtls:\n    enabled: false\n");
    writeFileSync(join(root, "overlay", "kustomization.yaml"), "resources:\n- ../app\n");
    const result = auditPaths([root]);
    expect(result.findings.map((finding) => `${relative(root, finding.file)}:${finding.ruleId}`).sort()).toEqual(["app/dapr-config.yaml:MW-MTLS-001", "app/statestore.yaml:MW-TLS-001"]);
    // The listed file is audited once, through the overlay's output (traced to its line).
    expect(result.findings.find((finding) => finding.ruleId === "MW-TLS-001")?.message).toContain("Rendered from this file by");
  });
});
