import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

/**
 * bin/meshward.js in a checkout does not run a build older than the sources (found by the
 * new-user review: after an edit or a `git pull` without `npm run build`, `npx meshward` ran the
 * morning's code). A package layout of its own in a temporary directory, with stand-ins for the
 * CLI that say which one ran: the repository's own dist/ is left alone (other tests run it).
 */
describe("bin/meshward.js: a stale build in a checkout is not run (real processes)", () => {
  const repo = fileURLToPath(new URL("../..", import.meta.url));
  const work = mkdtempSync(join(tmpdir(), "meshward-bin-stale-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  const layout = (name: string, withSources: boolean) => {
    const root = join(work, name);
    mkdirSync(join(root, "bin"), { recursive: true });
    mkdirSync(join(root, "dist", "bundle"), { recursive: true });
    copyFileSync(join(repo, "bin", "meshward.js"), join(root, "bin", "meshward.js"));
    writeFileSync(join(root, "package.json"), JSON.stringify({ type: "module" }));
    symlinkSync(join(repo, "node_modules"), join(root, "node_modules"));
    writeFileSync(join(root, "dist", "bundle", "main.js"), 'console.log("ran the build");\n');
    if (withSources) {
      mkdirSync(join(root, "src", "cli"), { recursive: true });
      writeFileSync(join(root, "src", "cli", "main.ts"), 'const from: string = "the sources";\nconsole.log(`ran ${from}`);\n');
    }
    return root;
  };
  const age = (path: string, secondsAgo: number) => {
    const at = Date.now() / 1000 - secondsAgo;
    utimesSync(path, at, at);
  };
  const run = (root: string, env: Record<string, string> = {}) => {
    const { MESHWARD_FROM_SOURCE: _ignored, ...inherited } = process.env;
    return spawnSync(process.execPath, [join(root, "bin", "meshward.js")], { encoding: "utf8", env: { ...inherited, ...env }, timeout: 60_000 });
  };

  it("runs the build when it is newer than every source file, quietly", () => {
    const root = layout("fresh", true);
    age(join(root, "src", "cli", "main.ts"), 60);
    const r = run(root);
    expect(r.stdout).toBe("ran the build\n");
    expect(r.stderr).toBe("");
  });

  it("runs the sources, and says why, when a source file changed after the build", () => {
    const root = layout("stale", true);
    age(join(root, "dist", "bundle", "main.js"), 60);
    const r = run(root);
    expect(r.stdout).toBe("ran the sources\n");
    expect(r.stderr).toBe("meshward: dist/ is older than src/: running the sources (a slower start); 'npm run build' brings dist/ up to date\n");
  });

  it("runs an old build where there are no sources (the published package)", () => {
    const root = layout("package", false);
    age(join(root, "dist", "bundle", "main.js"), 86_400);
    const r = run(root);
    expect(r.stdout).toBe("ran the build\n");
    expect(r.stderr).toBe("");
  });

  it("MESHWARD_FROM_SOURCE=1 runs the sources whatever the build's age, quietly", () => {
    const root = layout("from-source", true);
    age(join(root, "src", "cli", "main.ts"), 60);
    const r = run(root, { MESHWARD_FROM_SOURCE: "1" });
    expect(r.stdout).toBe("ran the sources\n");
    expect(r.stderr).toBe("");
  });
});
