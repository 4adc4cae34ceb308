import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readPaths } from "../../src/audit/audit.ts";
import { isRemoteEntry, remoteReferences, renderOrigins } from "../../src/audit/kustomize-render.ts";
import { runCli } from "../helpers/cli.ts";
import { startCountingHttpServer, type CountingHttpServer } from "../helpers/counting-http-server.ts";

// The offline guard of `meshward audit` (no --kustomize-remote): what an untrusted tree can do
// to make `kubectl kustomize` fetch or run helm/git, and the environment kubectl runs in so that
// even a reference the check missed cannot reach out. Traffic to loopback only: an HTTP server
// in a worker thread (it answers while the audit blocks the main thread on kubectl) counts the
// connections it accepts; fake `helm` and `git` on the caller's PATH record their runs.

const scratch = mkdtempSync(join(tmpdir(), "meshward-kustomize-offline-test-"));
let remote: CountingHttpServer;
let port = 0;
const bin = join(scratch, ".bin");
const runs = join(scratch, ".runs.log");
const savedPath = process.env["PATH"];

const CONFIG_MAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  a: b\n";

beforeAll(async () => {
  remote = await startCountingHttpServer("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  fetched: \"yes\"\n");
  port = remote.port;
  mkdirSync(bin);
  for (const tool of ["helm", "git"]) {
    writeFileSync(join(bin, tool), `#!/bin/sh\necho "${tool} $*" >> '${runs}'\ncase "$1" in version) echo v3.14.0+g1; exit 0;; esac\nexit 1\n`);
    chmodSync(join(bin, tool), 0o755);
  }
  process.env["PATH"] = `${bin}:${savedPath ?? ""}`;
});

afterAll(async () => {
  process.env["PATH"] = savedPath;
  await remote.close();
  rmSync(scratch, { recursive: true, force: true });
});

/** What the fake helm and git recorded (all runs, or those after the first `since`). */
const toolRuns = (since = 0): string[] => (existsSync(runs) ? readFileSync(runs, "utf8").trim().split("\n").filter((line) => line !== "").slice(since) : []);

/** A folder under scratch with these files (paths relative to it). */
function tree(name: string, files: Record<string, string>): string {
  const root = join(scratch, name);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(root, path, ".."), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

describe("finding 1: a folder name is never a kubectl flag", () => {
  it("`meshward audit .` over folders named --enable-helm and --output=…: each rendered as the folder it is, helm never run, nothing written", () => {
    const root = tree("flags", {
      "kustomization.yaml": `resources:\n  - cm.yaml\nhelmCharts:\n  - name: evil\n    repo: http://127.0.0.1:${port}/charts\n    version: 1.0.0\n    releaseName: evil\n`,
      "cm.yaml": CONFIG_MAP,
      "--enable-helm/kustomization.yaml": "resources: []\n",
      "--output=written.yaml/kustomization.yaml": "resources: []\n",
    });
    const before = remote.connections();
    const runsBefore = toolRuns().length;
    const cwd = process.cwd();
    let read: ReturnType<typeof readPaths>;
    try {
      process.chdir(root);
      read = readPaths(["."]);
    } finally {
      process.chdir(cwd);
    }
    expect(toolRuns(runsBefore)).toEqual([]);
    expect(remote.connections()).toBe(before);
    expect(existsSync(join(root, "written.yaml"))).toBe(false);
    expect(read.rendered.sort()).toEqual(["--enable-helm", "--output=written.yaml"]);
    // The top folder's helmCharts are refused by kustomize (no --enable-helm), as before.
    expect(read.problems.map((problem) => problem.file)).toEqual(["kustomization.yaml"]);
  });
  it("the command a report advises for an overlay not rendered (no kubectl) is safe to paste: ./ before a leading -, quotes around shell syntax", () => {
    const root = tree("advice", {
      "--enable-helm/kustomization.yaml": "resources: []\n",
      "$(touch pwned)/kustomization.yaml": "resources: []\n",
    });
    const cwd = process.cwd();
    let read: ReturnType<typeof readPaths>;
    try {
      process.chdir(root);
      read = readPaths(["."], { kubectl: join(scratch, "kubectl-not-installed") });
    } finally {
      process.chdir(cwd);
    }
    expect(read.problems.map((problem) => problem.message.replace(/^.*; audit the rendered output instead: /, ""))).toEqual([
      "`kubectl kustomize '$(touch pwned)' | meshward audit -`",
      "`kubectl kustomize ./--enable-helm | meshward audit -`",
    ]);
  });
});

describe("finding 2: plugin configs (transformers/generators/validators) are read, and fail closed", () => {
  const patch = (path: string, key = "path"): string => `apiVersion: builtin\nkind: PatchTransformer\nmetadata:\n  name: p\n${key}: http://127.0.0.1:${port}/${path}\n`;
  const indented = (text: string): string => text.trimEnd().split("\n").map((line) => `    ${line}`).join("\n");

  it("a URL in a builtin plugin config (a file, inline YAML, one line of flow-style YAML, a key in another case, a generator, a replacement): refused, named, nothing fetched", () => {
    const root = tree("plugins", {
      "file/kustomization.yaml": "resources:\n  - cm.yaml\ntransformers:\n  - t.yaml\n",
      "file/t.yaml": patch("file.yaml"),
      "file/cm.yaml": CONFIG_MAP,
      "inline/kustomization.yaml": `resources:\n  - cm.yaml\ntransformers:\n  - |-\n${indented(patch("inline.yaml"))}\n`,
      "inline/cm.yaml": CONFIG_MAP,
      "case/kustomization.yaml": "resources:\n  - cm.yaml\ntransformers:\n  - t.yaml\n",
      "case/t.yaml": patch("case.yaml", "PATH"),
      "case/cm.yaml": CONFIG_MAP,
      "generator/kustomization.yaml": "generators:\n  - g.yaml\n",
      "generator/g.yaml": `apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata:\n  name: g\nfiles:\n  - data=http://127.0.0.1:${port}/generator.txt\n`,
      "replacement/kustomization.yaml": "resources:\n  - cm.yaml\ntransformers:\n  - r.yaml\n",
      "replacement/r.yaml": `apiVersion: builtin\nkind: ReplacementTransformer\nmetadata:\n  name: r\nreplacements:\n  - path: http://127.0.0.1:${port}/replacement.yaml\n`,
      "replacement/cm.yaml": CONFIG_MAP,
      "flow/kustomization.yaml": `resources:\n  - cm.yaml\ntransformers:\n  - '{apiVersion: builtin, kind: PatchTransformer, metadata: {name: p}, path: "http://127.0.0.1:${port}/flow.yaml"}'\n`,
      "flow/cm.yaml": CONFIG_MAP,
      "folded-resources/kustomization.yaml": `RESOURCES:\n  - http://127.0.0.1:${port}/upper.yaml\nre\u017fources:\n  - http://127.0.0.1:${port}/long-s.yaml\n`,
    });
    const before = remote.connections();
    const runsBefore = toolRuns().length;
    const read = readPaths([root]);
    expect(remote.connections()).toBe(before);
    expect(read.rendered).toEqual([]);
    const message = (name: string): string => read.problems.find((problem) => problem.file === join(root, name, "kustomization.yaml"))?.message ?? "";
    expect(message("file")).toContain(`"http://127.0.0.1:${port}/file.yaml" (transformers entry "t.yaml" PatchTransformer.path of ${join(root, "file", "kustomization.yaml")})`);
    expect(message("inline")).toContain(`"http://127.0.0.1:${port}/inline.yaml" (inline transformers entry PatchTransformer.path of`);
    expect(message("case")).toContain(`"http://127.0.0.1:${port}/case.yaml"`);
    expect(message("generator")).toContain(`"http://127.0.0.1:${port}/generator.txt" (generators entry "g.yaml" ConfigMapGenerator.files of`);
    expect(message("replacement")).toContain(`"http://127.0.0.1:${port}/replacement.yaml" (transformers entry "r.yaml" ReplacementTransformer.replacements[].path of`);
    expect(message("flow")).toContain(`"http://127.0.0.1:${port}/flow.yaml" (inline transformers entry PatchTransformer.path of`);
    expect(message("folded-resources")).toContain(`"http://127.0.0.1:${port}/upper.yaml" (resources of`);
    expect(message("folded-resources")).toContain("and 1 more");
    for (const problem of read.problems) expect(problem.message).toContain("not fetched: pass --kustomize-remote to allow it");
  });

  it("what the check does not understand is not rendered: a Helm chart generator, a non-builtin plugin, an unknown field, a plugin config folder, a config that is not YAML", () => {
    const root = tree("unchecked", {
      "helm/kustomization.yaml": "generators:\n  - h.yaml\n",
      "helm/h.yaml": `apiVersion: builtin\nkind: HelmChartInflationGenerator\nmetadata:\n  name: h\nchartName: evil\nchartRepoUrl: http://127.0.0.1:${port}/charts\n`,
      "external/kustomization.yaml": "transformers:\n  - x.yaml\n",
      "external/x.yaml": "apiVersion: example.com/v1\nkind: Fetcher\nmetadata:\n  name: x\n",
      "field/kustomization.yaml": "transformers:\n  - l.yaml\n",
      "field/l.yaml": `apiVersion: builtin\nkind: LabelTransformer\nmetadata:\n  name: l\nlabels:\n  a: b\nfieldSpecs: []\nremote: http://127.0.0.1:${port}/x\n`,
      "folder/kustomization.yaml": "transformers:\n  - configs\n",
      "folder/configs/kustomization.yaml": "resources:\n  - t.yaml\n",
      "folder/configs/t.yaml": patch("folder.yaml"),
      "broken/kustomization.yaml": "transformers:\n  - b.yaml\n",
      "broken/b.yaml": "apiVersion: builtin\nkind: [\n",
    });
    const before = remote.connections();
    const runsBefore = toolRuns().length;
    const read = readPaths([root]);
    expect(remote.connections()).toBe(before);
    expect(toolRuns(runsBefore)).toEqual([]);
    expect(read.rendered).toEqual([]);
    const message = (name: string): string => read.problems.find((problem) => problem.file === join(root, name, "kustomization.yaml"))?.message ?? "";
    expect(message("helm")).toContain(`could not be checked for remote bases (generators entry "h.yaml": "builtin/HelmChartInflationGenerator" is not a builtin plugin this check reads)`);
    expect(message("external")).toContain(`(transformers entry "x.yaml": "example.com/v1/Fetcher" is not a builtin plugin this check reads)`);
    expect(message("field")).toContain(`(transformers entry "l.yaml": field "remote" of LabelTransformer is not one this check reads)`);
    expect(message("folder")).toContain(`(transformers entry "configs": a plugin config folder, whose output this check does not read)`);
    expect(message("broken")).toContain(`(transformers entry "b.yaml": not readable as YAML)`);
  });

  // A plugin config path was read with readFileSync: a FIFO the repository holds there blocked the
  // audit for ever (opening it waits for a writer), a link to /dev/zero grew it without bound.
  it("a plugin config that is a FIFO, or a link out of the tree, is not read: `meshward audit` finishes and says why", async () => {
    const root = tree("special-plugins", {
      "fifo/kustomization.yaml": "transformers:\n  - p.yaml\n",
      "zero/kustomization.yaml": "transformers:\n  - z.yaml\n",
    });
    execFileSync("mkfifo", [join(root, "fifo", "p.yaml")]);
    symlinkSync("/dev/zero", join(root, "zero", "z.yaml"));
    // As a process: a hang is a process killed at the timeout (exit code null), not a stuck test worker.
    const result = await runCli(["audit", root], { timeoutMs: 20_000 });
    expect(result.code, result.stderr).not.toBeNull();
    expect(result.stderr).not.toMatch(/\n\s+at /);
    expect(`${result.stdout}${result.stderr}`).toContain(`transformers entry "p.yaml": not readable (a regular file of at most 4 MiB)`);
    // A link out of the tree is not followed at all (the audit root check).
    expect(`${result.stdout}${result.stderr}`).toMatch(/it names "z\.yaml" \(transformers of [^)]*\), outside the audited folder/);
  });

  it("a builtin plugin config naming local files only is still rendered, and its files count as consumed", () => {
    const root = tree("local-plugins", {
      "kustomization.yaml": "resources:\n  - cm.yaml\ntransformers:\n  - t.yaml\n  - |-\n    apiVersion: builtin\n    kind: LabelTransformer\n    metadata:\n      name: l\n    labels:\n      team: shop\n    fieldSpecs:\n      - path: metadata/labels\n        create: true\n",
      "t.yaml": "apiVersion: builtin\nkind: PatchTransformer\nmetadata:\n  name: p\npath: patch.yaml\n",
      "patch.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  a: patched\n",
      "cm.yaml": CONFIG_MAP,
    });
    expect(remoteReferences(join(root, "kustomization.yaml"))).toEqual([]);
    const read = readPaths([root]);
    expect(read.problems).toEqual([]);
    expect(read.rendered).toEqual([root]);
    const rendered = read.files.find((file) => file.rendered === root)?.text ?? "";
    expect(rendered).toContain("a: patched");
    expect(rendered).toContain("team: shop");
    expect(read.files.find((file) => file.file === join(root, "patch.yaml"))?.rawOnly).toBe(true);
  });
});

describe("finding 3: a local file or folder of the same name does not hide a URL or a git repository", () => {
  it("an http URL shadowed by folders http:/127.0.0.1:PORT/x.yaml, a github.com base shadowed by a local folder: refused, nothing fetched, git never run", () => {
    const root = tree("shadow", {
      [`http/http:/127.0.0.1:${port}/x.yaml/kustomization.yaml`]: "resources: []\n",
      "http/kustomization.yaml": `resources:\n  - http://127.0.0.1:${port}/x.yaml\n`,
      "git/github.com/acme/base/kustomization.yaml": "resources: []\n",
      "git/github.com/acme/base?ref=v1/kustomization.yaml": "resources: []\n",
      "git/kustomization.yaml": "resources:\n  - github.com/acme/base?ref=v1\n",
      "plain-git/github.com/acme/base/kustomization.yaml": "resources: []\n",
      "plain-git/kustomization.yaml": "resources:\n  - github.com/acme/base\n",
    });
    const before = remote.connections();
    const runsBefore = toolRuns().length;
    const read = readPaths([join(root, "http"), join(root, "git"), join(root, "plain-git")]);
    expect(remote.connections()).toBe(before);
    expect(toolRuns(runsBefore)).toEqual([]);
    // The shadowing folders are local overlays of their own, rendered as such; the three overlays are not.
    expect(read.rendered.filter((directory) => !directory.includes("github.com") && !directory.includes("http:"))).toEqual([]);
    expect(read.problems.map((problem) => problem.message)).toEqual([
      expect.stringContaining(`"http://127.0.0.1:${port}/x.yaml" (resources of`),
      expect.stringContaining(`"github.com/acme/base?ref=v1" (resources of`),
      expect.stringContaining(`"github.com/acme/base" (resources of`),
    ]);
  });

  it("URL-shaped and git-style entries are remote whatever exists locally; a host-like first segment that is a local path is not", () => {
    const root = tree("shapes", {
      "github.com/org/repo/kustomization.yaml": "resources: []\n",
      "git@example.com:org/repo/kustomization.yaml": "resources: []\n",
      "base?ref=v1/kustomization.yaml": "resources: []\n",
      "local.d/base/kustomization.yaml": "resources: []\n",
      "app@v1.yaml": CONFIG_MAP,
    });
    mkdirSync(join(root, "https:", "example.com", "x.yaml"), { recursive: true });
    for (const entry of ["github.com/org/repo", "GitHub.com/org/repo", "git@example.com:org/repo", "https://example.com/x.yaml", "base?ref=v1", "git::https://example.com/repo"]) {
      expect(isRemoteEntry(entry, root), entry).toBe(true);
    }
    for (const entry of ["local.d/base", "app@v1.yaml", "./github.com/org/repo"]) expect(isRemoteEntry(entry, root), entry).toBe(false);
  });
});

// kustomize's FileLoader.Load (api/internal/loader/fileloader.go) fetches an http(s) URL and
// otherwise reads the local file: it never clones. Files that are only loaded (patch paths,
// generator files, …) with a git-like name that exist locally are therefore local and the overlay
// is rendered. FileLoader.New (bases, components, plugin config folders, and a resources entry
// that does not load as a file) tries a git clone first for such a name (git.NewRepoSpecFromURL)
// and never falls back to a local folder: those stay refused.
describe("a local file with a git-like name", () => {
  it("as a patch path or a generator file: local, the overlay rendered, nothing fetched or run", () => {
    const root = tree("vendored", {
      "kustomization.yaml": "resources:\n  - cm.yaml\npatches:\n  - path: github.com/acme/patches/cm.yaml\nconfigMapGenerator:\n  - name: gen\n    files:\n      - github.com/acme/files/app.conf\n",
      "cm.yaml": CONFIG_MAP,
      "github.com/acme/patches/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  patched: \"yes\"\n",
      "github.com/acme/files/app.conf": "tls = on\n",
    });
    expect(remoteReferences(join(root, "kustomization.yaml"))).toEqual([]);
    const before = remote.connections();
    const runsBefore = toolRuns().length;
    const read = readPaths([root]);
    expect(remote.connections()).toBe(before);
    expect(toolRuns(runsBefore)).toEqual([]);
    expect(read.problems).toEqual([]);
    expect(read.rendered).toEqual([root]);
    const rendered = read.files.find((file) => file.rendered === root)?.text ?? "";
    expect(rendered).toContain('patched: "yes"');
    expect(rendered).toContain("app.conf: |");
    // The vendored files are consumed by the overlay: audited in its output, not again as files.
    expect(read.files.filter((file) => file.file.includes("github.com") && file.rawOnly !== true)).toEqual([]);
  });

  // accumulateResources (api/internal/target/kusttarget.go) tries each resources entry as a file
  // first (accumulateFile: FileLoader.Load, which never clones) and goes to FileLoader.New only
  // when that fails; `bases` entries are resources entries (FixKustomization). A local file of a
  // git-like name that loads as resources is therefore read locally. A folder goes to
  // FileLoader.New, where git.NewRepoSpecFromURL accepts `github.com/org/repo` (kustomize v5:
  // extractHost takes a standard GitHub host without a scheme) and a clone is tried with no local
  // fallback; a path whose `.git` has no host before it (`vendor/app.git/deploy`) is not a repo
  // spec, and the folder is local.
  it("as a resource or base file: local, the overlay rendered, nothing fetched or run", () => {
    const root = tree("vendored-resources", {
      "kustomization.yaml": "resources:\n  - github.com/acme/res/cm.yaml\n  - vendor/app.git/deploy\nbases:\n  - github.com/acme/res/extra.yaml\n",
      "github.com/acme/res/cm.yaml": CONFIG_MAP,
      "github.com/acme/res/extra.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  vendored: \"yes\"\n",
      "vendor/app.git/deploy/kustomization.yaml": "resources:\n  - sa.yaml\n",
      "vendor/app.git/deploy/sa.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app\n",
    });
    expect(remoteReferences(join(root, "kustomization.yaml"))).toEqual([]);
    expect(isRemoteEntry("github.com/acme/res/cm.yaml", root, "resources")).toBe(false);
    const before = remote.connections();
    const runsBefore = toolRuns().length;
    const read = readPaths([root]);
    expect(remote.connections()).toBe(before);
    expect(toolRuns(runsBefore)).toEqual([]);
    expect(read.problems).toEqual([]);
    expect(read.rendered).toContain(root);
    const rendered = read.files.find((file) => file.rendered === root)?.text ?? "";
    expect(rendered).toContain("name: cm");
    expect(rendered).toContain('vendored: "yes"');
    expect(rendered).toContain("kind: ServiceAccount");
  });

  it("as a resource folder, a component, or a resource file that does not load as resources: still remote, whatever exists locally", () => {
    const root = tree("vendored-targets", {
      "kustomization.yaml": "resources:\n  - github.com/acme/base\n  - github.com/acme/res/list.yaml\n  - github.com/acme/res/nameless.yaml\ncomponents:\n  - github.com/acme/comp\n",
      "github.com/acme/base/kustomization.yaml": "resources: []\n",
      // Not resources (a YAML list; an object without metadata.name): accumulateFile fails and
      // FileLoader.New tries a clone (kubectl kustomize v5.5 without git: "no 'git' program on path").
      "github.com/acme/res/list.yaml": "- a\n- b\n",
      "github.com/acme/res/nameless.yaml": "apiVersion: v1\nkind: ConfigMap\n",
      "github.com/acme/comp/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n",
    });
    expect(remoteReferences(join(root, "kustomization.yaml")).map((reference) => `${reference.field} ${reference.reference}`))
      .toEqual(["resources github.com/acme/base", "resources github.com/acme/res/list.yaml", "resources github.com/acme/res/nameless.yaml", "components github.com/acme/comp"]);
  });
});

describe("defence in depth: kubectl runs offline, so what the check misses cannot reach out", () => {
  // renderOrigins runs kubectl on the overlay without the check (audit.ts runs it only for an
  // overlay the check passed): here it stands for "a reference the check missed".
  it("an HTTP fetch goes to a closed proxy, not to the caller's proxy; a git base finds no git", () => {
    const root = tree("depth", {
      "http/kustomization.yaml": "resources:\n  - http://fetch-probe.invalid/base.yaml\n",
      "git/kustomization.yaml": "resources:\n  - github.com/acme/platform//base?ref=v1\n",
    });
    const saved = { HTTP_PROXY: process.env["HTTP_PROXY"], http_proxy: process.env["http_proxy"], NO_PROXY: process.env["NO_PROXY"], no_proxy: process.env["no_proxy"] };
    // The caller's proxy: the counting server (a fetch through it would be counted).
    process.env["HTTP_PROXY"] = `http://127.0.0.1:${port}`;
    process.env["http_proxy"] = `http://127.0.0.1:${port}`;
    process.env["NO_PROXY"] = "";
    process.env["no_proxy"] = "";
    const before = remote.connections();
    const runsBefore = toolRuns().length;
    try {
      expect(renderOrigins(join(root, "http"))).toEqual(new Map());
      expect(renderOrigins(join(root, "git"))).toEqual(new Map());
    } finally {
      for (const [key, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
    }
    expect(remote.connections()).toBe(before);
    expect(toolRuns(runsBefore)).toEqual([]);
  });
});
