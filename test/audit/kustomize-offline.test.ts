import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readPaths } from "../../src/audit/audit.ts";
import { isRemoteEntry, renderOrigins } from "../../src/audit/kustomize-render.ts";

// The offline guard of `meshward audit` (no --kustomize-remote): what an untrusted tree can do
// to make `kubectl kustomize` fetch or run helm/git, and the environment kubectl runs in so that
// even a reference the check missed cannot reach out. Traffic to loopback only: an HTTP server
// in a worker thread (it answers while the audit blocks the main thread on kubectl) counts the
// connections it accepts; fake `helm` and `git` on the caller's PATH record their runs.

const scratch = mkdtempSync(join(tmpdir(), "meshward-kustomize-offline-test-"));
const connections = new Int32Array(new SharedArrayBuffer(4));
let server: Worker;
let port = 0;
const bin = join(scratch, ".bin");
const runs = join(scratch, ".runs.log");
const savedPath = process.env["PATH"];

const CONFIG_MAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  a: b\n";

beforeAll(async () => {
  server = new Worker(`
    const { parentPort, workerData } = require("node:worker_threads");
    const http = require("node:http");
    const connections = new Int32Array(workerData.buffer);
    const server = http.createServer((request, response) => response.end(workerData.body));
    server.on("connection", () => Atomics.add(connections, 0, 1));
    server.listen(0, "127.0.0.1", () => parentPort.postMessage(server.address().port));
  `, { eval: true, workerData: { buffer: connections.buffer, body: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  fetched: \"yes\"\n" } });
  port = await new Promise<number>((resolve, reject) => {
    server.once("message", resolve);
    server.once("error", reject);
  });
  mkdirSync(bin);
  for (const tool of ["helm", "git"]) {
    writeFileSync(join(bin, tool), `#!/bin/sh\necho "${tool} $*" >> '${runs}'\ncase "$1" in version) echo v3.14.0+g1; exit 0;; esac\nexit 1\n`);
    chmodSync(join(bin, tool), 0o755);
  }
  process.env["PATH"] = `${bin}:${savedPath ?? ""}`;
});

afterAll(async () => {
  process.env["PATH"] = savedPath;
  await server.terminate();
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
    const before = Atomics.load(connections, 0);
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
    expect(Atomics.load(connections, 0)).toBe(before);
    expect(existsSync(join(root, "written.yaml"))).toBe(false);
    expect(read.rendered.sort()).toEqual(["--enable-helm", "--output=written.yaml"]);
    // The top folder's helmCharts are refused by kustomize (no --enable-helm), as before.
    expect(read.problems.map((problem) => problem.file)).toEqual(["kustomization.yaml"]);
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
    const before = Atomics.load(connections, 0);
    const runsBefore = toolRuns().length;
    const read = readPaths([join(root, "http"), join(root, "git"), join(root, "plain-git")]);
    expect(Atomics.load(connections, 0)).toBe(before);
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
    const before = Atomics.load(connections, 0);
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
    expect(Atomics.load(connections, 0)).toBe(before);
    expect(toolRuns(runsBefore)).toEqual([]);
  });
});
