import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditPaths, readPaths } from "../../src/audit/audit.ts";
import { driftPaths } from "../../src/audit/drift.ts";
import { isRemoteEntry, renderedName } from "../../src/audit/kustomize-render.ts";
import { MeshwardError } from "../../src/errors.ts";
import { runCli } from "../helpers/cli.ts";
import { startCountingHttpServer, type CountingHttpServer } from "../helpers/counting-http-server.ts";

// An audit of an untrusted tree must not fetch anything nor run git: an overlay that names a
// remote base (kustomize would fetch it) is refused before kubectl runs, unless
// --kustomize-remote allows it. The "remote" here is an HTTP server on loopback that counts the
// connections it accepts; it runs in a worker thread, so it answers while the audit blocks the
// main thread on `kubectl kustomize`.

const REMOTE_BASE = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n    - name: redisHost\n      value: redis-master.shop.svc.cluster.local:6379\n";

const scratch = mkdtempSync(join(tmpdir(), "meshward-kustomize-remote-"));
let remote: CountingHttpServer;
let port = 0;

beforeAll(async () => {
  remote = await startCountingHttpServer(REMOTE_BASE);
  port = remote.port;
});

afterAll(async () => {
  await remote.close();
  rmSync(scratch, { recursive: true, force: true });
});

/** An overlay folder whose kustomization names `resources`, with a sidecar config beside it. */
function overlay(name: string, resources: readonly string[]): string {
  const directory = join(scratch, name);
  mkdirSync(directory, { recursive: true });
  writeFileSync(join(directory, "kustomization.yaml"), `resources:\n${resources.map((entry) => `  - ${entry}\n`).join("")}`);
  writeFileSync(join(directory, "sidecar.yaml"), "appId: orders\nca: ca.shop.svc:8443\npolicy: policy.yaml\ntoken: mw-join-3f9a1c2b7d\n");
  return directory;
}

describe("an overlay naming a remote base is not rendered by default", () => {
  it("an http URL: refused before kubectl runs, no connection made, the file and the reference named, the plain files audited", () => {
    const directory = overlay("http", [`http://127.0.0.1:${port}/base.yaml`]);
    const before = remote.connections();
    const result = auditPaths([directory]);
    expect(remote.connections()).toBe(before);
    expect(result.parseErrors).toHaveLength(1);
    expect(result.parseErrors[0]).toMatchObject({ file: join(directory, "kustomization.yaml"), kind: "kustomize" });
    expect(result.parseErrors[0]?.message).toBe(`kustomize overlay not rendered (it names a remote base or file, "http://127.0.0.1:${port}/base.yaml" (resources of ${join(directory, "kustomization.yaml")}), which \`kubectl kustomize\` would fetch from the network (HTTP or git); not fetched: pass --kustomize-remote to allow it); its files were audited one by one`);
    expect(result.findings.map((finding) => `${finding.file}:${finding.ruleId}`)).toEqual([`${join(directory, "sidecar.yaml")}:MW-SECRET-006`]);
  });

  it("with kustomizeRemote (--kustomize-remote) the overlay is rendered, fetching the base", () => {
    const directory = overlay("http-allowed", [`http://127.0.0.1:${port}/base.yaml`]);
    const before = remote.connections();
    const result = auditPaths([directory], { kustomizeRemote: true });
    expect(remote.connections()).toBeGreaterThan(before);
    expect(result.parseErrors).toEqual([]);
    expect(result.findings.map((finding) => `${finding.file}:${finding.ruleId}`)).toEqual([`${renderedName(directory)}:MW-TLS-001`, `${join(directory, "sidecar.yaml")}:MW-SECRET-006`]);
  });

  it("a git base named by a local base the overlay uses is found too, before kubectl runs (a kubectl that does not exist is never reached)", () => {
    const base = join(scratch, "git", "base");
    mkdirSync(base, { recursive: true });
    writeFileSync(join(base, "kustomization.yaml"), "resources:\n  - github.com/example/platform//dapr?ref=v1.2.0\n");
    const directory = overlay(join("git", "overlays", "prod"), ["../../base"]);
    const read = readPaths([join(scratch, "git")], { kubectl: join(scratch, "kubectl-not-installed") });
    expect(read.rendered).toEqual([]);
    expect(read.problems.map((problem) => problem.file)).toEqual([join(directory, "kustomization.yaml")]);
    expect(read.problems[0]?.message).toContain(`"github.com/example/platform//dapr?ref=v1.2.0" (resources of ${join(base, "kustomization.yaml")})`);
    expect(read.problems[0]?.message).not.toContain("kubectl is not on PATH");
  });

  it("a resources list brought in by a YAML merge key is seen, and a kustomization that cannot be read is not rendered (fail closed)", () => {
    const merged = join(scratch, "merged");
    mkdirSync(merged);
    writeFileSync(join(merged, "kustomization.yaml"), `common: &common\n  resources:\n    - http://127.0.0.1:${port}/base.yaml\n<<: *common\n`);
    const unreadable = join(scratch, "unreadable");
    mkdirSync(unreadable);
    writeFileSync(join(unreadable, "kustomization.yaml"), "resources: [\n");
    const before = remote.connections();
    const read = readPaths([merged, unreadable]);
    expect(remote.connections()).toBe(before);
    expect(read.rendered).toEqual([]);
    expect(read.problems.map((problem) => problem.message)).toEqual([
      expect.stringContaining(`"http://127.0.0.1:${port}/base.yaml" (resources of ${join(merged, "kustomization.yaml")})`),
      expect.stringContaining(`(${join(unreadable, "kustomization.yaml")} could not be checked for remote bases (not readable as a YAML map)`),
    ]);
  });

  it("drift refuses such an environment (E_AUDIT_KUSTOMIZE) and names the flag", () => {
    const staging = overlay(join("drift", "staging"), ["git@github.com:example/platform.git//dapr"]);
    const production = overlay(join("drift", "production"), [`https://127.0.0.1:${port}/base.yaml`]);
    const before = remote.connections();
    let error: unknown;
    try {
      driftPaths([staging, production]);
    } catch (caught) {
      error = caught;
    }
    expect(remote.connections()).toBe(before);
    expect((error as MeshwardError).code).toBe("E_AUDIT_KUSTOMIZE");
    expect((error as MeshwardError).message).toContain("pass --kustomize-remote to allow it");
  });

  it("the CLI reports the overlay as not rendered and fetches nothing", async () => {
    const directory = overlay("cli", [`http://127.0.0.1:${port}/base.yaml`]);
    const before = remote.connections();
    const run = await runCli(["audit", directory, "--fail-on-unparsed"]);
    expect(remote.connections()).toBe(before);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain("Kustomize overlays not rendered");
    expect(run.stdout).toContain("pass --kustomize-remote to allow it");
    // --kustomize-remote: rendered, the base fetched.
    const allowed = await runCli(["audit", directory, "--kustomize-remote", "--fail-on-unparsed"]);
    expect(remote.connections()).toBeGreaterThan(before);
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(allowed.stdout).toContain("MW-TLS-001");
  });

  it("what counts as remote: URLs and git repository specs that are not local paths", () => {
    for (const entry of ["https://github.com/org/repo//base?ref=v1", "http://127.0.0.1/x.yaml", "github.com/org/repo/base", "gitlab.com/org/repo.git//base", "git@github.com:org/repo.git", "git::https://example.com/repo", "ssh://git@example.com/repo", "file:///srv/repo", "gh:org/repo"]) {
      expect(isRemoteEntry(entry, scratch), entry).toBe(true);
    }
    mkdirSync(join(scratch, "local.d", "base"), { recursive: true });
    for (const entry of ["../base", "./base", "base", "deployment.yaml", "/abs/base", "local.d/base"]) {
      expect(isRemoteEntry(entry, scratch), entry).toBe(false);
    }
  });
});
