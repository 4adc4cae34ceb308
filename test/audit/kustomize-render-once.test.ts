import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { auditPaths, readPaths } from "../../src/audit/audit.ts";
import { renderedName } from "../../src/audit/kustomize-render.ts";

// Each kustomize overlay was rendered twice: once for the findings, once more with
// `buildMetadata: [originAnnotations]` to trace objects to their source files. Now the annotated
// render is the only one, and the audited text is that output without the origin annotations,
// which must be exactly what `kubectl kustomize DIR` prints (finding lines point into it).

const ENVS = join(import.meta.dirname, "fixtures", "kustomize-envs");
const scratch = mkdtempSync(join(tmpdir(), "meshward-render-once-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A kubectl that counts its runs in a log, then runs the real one. */
const LOG = join(scratch, "kubectl-runs.log");
const KUBECTL = join(scratch, "kubectl-counting");
const realKubectl = execFileSync("sh", ["-c", "command -v kubectl"], { encoding: "utf8" }).trim();
writeFileSync(KUBECTL, `#!/bin/sh\necho run >> '${LOG}'\nexec '${realKubectl}' "$@"\n`);
chmodSync(KUBECTL, 0o755);
const runs = (): number => (existsSync(LOG) ? readFileSync(LOG, "utf8").trim().split("\n").length : 0);
beforeEach(() => rmSync(LOG, { force: true }));

const write = (root: string, files: Record<string, string>): void => {
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(root, path, ".."), { recursive: true });
    writeFileSync(join(root, path), text);
  }
};

/** Objects that stress the annotation strip: existing annotations, `annotations: {}`, a data key named like the annotation, block scalars, generators, a component's patch. */
const TREE = join(scratch, "tree");
write(TREE, {
  "base/kustomization.yaml": "resources:\n  - deploy.yaml\n  - cm.yaml\nconfigMapGenerator:\n  - name: gen\n    literals: [a=b]\nsecretGenerator:\n  - name: sec\n    literals: [k=v]\n",
  "base/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\n  annotations:\n    team: shop\n    zzz: \"last\"\nspec:\n  template:\n    metadata:\n      annotations:\n        dapr.io/enabled: \"true\"\n        dapr.io/app-id: orders\n        dapr.io/sidecar-listen-addresses: 0.0.0.0\n    spec:\n      containers:\n        - name: app\n          image: orders:1\n          env:\n            - name: BLOCK\n              value: |\n                line one\n                  indented\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: orders\nspec:\n  ports: [{port: 80}]\n",
  "base/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n  annotations: {}\ndata:\n  config.kubernetes.io/origin: \"not an annotation\"\n  script: |\n    #!/bin/sh\n    echo hi\n",
  "comp/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\npatches:\n  - target: {kind: Service}\n    patch: |\n      - op: add\n        path: /metadata/annotations\n        value: {a: b}\n",
  "overlay/kustomization.yaml": "namePrefix: prod-\nnamespace: shop\ncommonAnnotations:\n  owner: me\nresources:\n  - ../base\ncomponents:\n  - ../comp\n",
  "own-metadata/kustomization.yaml": "resources:\n  - ../base\nbuildMetadata: [originAnnotations]\n",
  // sortOptions is honoured at the top level only: under the single render's wrapper the objects came
  // out in the legacy order (review-today2 finding 4), so a generated object's finding line was wrong.
  "sorted/kustomization.yaml": "sortOptions:\n  order: fifo\nresources:\n  - deploy.yaml\n  - svc.yaml\nconfigMapGenerator:\n  - name: web-env\n    literals:\n      - NODE_TLS_REJECT_UNAUTHORIZED=0\n",
  "sorted/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx}]\n",
  "sorted/svc.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports: [{port: 80}]\n",
  "sorted-base/kustomization.yaml": "resources:\n  - ../sorted\n",
  "sorted-legacy/kustomization.yaml": "sortOptions:\n  order: legacy\n  legacySortOptions:\n    orderFirst: [Service]\n    orderLast: [Deployment]\nresources:\n  - ../sorted-base\nconfigMapGenerator:\n  - name: other\n    literals: [A=b]\n",
});

// The tree is a repository (a `.git` at its top): an overlay audited alone may name bases anywhere in it.
mkdirSync(join(TREE, ".git"));

const audited = (directory: string): string | undefined => readPaths([directory], { kubectl: KUBECTL }).files.find((file) => file.file === renderedName(directory))?.text;
const kubectlKustomize = (directory: string): string => execFileSync(realKubectl, ["kustomize", "--", directory], { encoding: "utf8" });

describe("a kustomize overlay is rendered once", () => {
  it("two overlays: two kubectl runs (was four), findings still traced to the base file", () => {
    const staging = join(ENVS, "overlays", "staging");
    const result = auditPaths([staging, join(ENVS, "overlays", "production")], { kubectl: KUBECTL });
    expect(runs()).toBe(2);
    const file = relative(ENVS, renderedName(staging));
    expect(result.findings.map((finding) => `${relative(ENVS, finding.file)}:${finding.ruleId}@${finding.line}`))
      .toEqual(["base/orders.yaml:MW-K8S-005@18", `${file}:MW-K8S-001@19`, `${file}:MW-TLS-001@43`, `${file}:MW-MTLS-001@62`]);
    expect(result.parseErrors).toEqual([]);
  });

  it("the audited text is byte for byte what `kubectl kustomize DIR` prints, with one run", () => {
    for (const overlay of ["overlay", "base"]) {
      rmSync(LOG, { force: true });
      const directory = join(TREE, overlay);
      expect(audited(directory), overlay).toBe(kubectlKustomize(directory));
      expect(runs(), overlay).toBe(1);
    }
    // The finding is traced to the object's source file (the origin annotation was read).
    const listen = auditPaths([join(TREE, "overlay")], { kubectl: KUBECTL }).findings.find((finding) => finding.ruleId === "MW-K8S-001");
    expect(listen?.file).toBe(join(TREE, "base", "deploy.yaml"));
    expect(listen?.line).toBe(14);
  });

  it("an overlay that sets sortOptions is audited in kubectl kustomize DIR's order (two runs), and a generated object's finding is at its line there", () => {
    for (const overlay of ["sorted", "sorted-base", "sorted-legacy"]) {
      rmSync(LOG, { force: true });
      const directory = join(TREE, overlay);
      const expected = kubectlKustomize(directory);
      expect(audited(directory), overlay).toBe(expected);
      expect(runs(), overlay).toBe(2);
    }
    const directory = join(TREE, "sorted");
    const expected = kubectlKustomize(directory);
    expect(expected.split("\n").filter((line) => line.startsWith("kind: "))).toEqual(["kind: Deployment", "kind: Service", "kind: ConfigMap"]);
    const finding = auditPaths([directory], { kubectl: KUBECTL }).findings.find((one) => one.ruleId === "MW-TLS-009");
    expect(finding?.file).toBe(renderedName(directory));
    expect(finding?.line).toBe(expected.split("\n").findIndex((line) => line.includes("NODE_TLS_REJECT_UNAUTHORIZED")) + 1);
  });

  it("an overlay that sets buildMetadata itself keeps its annotations: rendered as before (two runs)", () => {
    const directory = join(TREE, "own-metadata");
    const text = audited(directory);
    expect(text).toBe(kubectlKustomize(directory));
    expect(text).toContain("config.kubernetes.io/origin");
    expect(runs()).toBe(2);
  });
});
