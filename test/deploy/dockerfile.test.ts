import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { spawnSync } from "node:child_process";

// No container engine runs here, so deploy/docker/Dockerfile is checked for what makes it
// build with no network but the npm registry, and run under the manifests' security context.
// (What the build stage does was also run by hand: better-sqlite3 compiled from source by
// node-gyp with npm_config_nodedir and an empty HOME, i.e. with no header download.)
const ROOT = new URL("../../", import.meta.url).pathname;
const TEXT = readFileSync(join(ROOT, "deploy/docker/Dockerfile"), "utf8");
const IGNORE = readFileSync(join(ROOT, "deploy/docker/Dockerfile.dockerignore"), "utf8");

interface Instruction { readonly op: string; readonly args: string; readonly stage: number }

/** Instructions with line continuations joined and comments dropped. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let stage = -1;
  const joined = text.replace(/\\\n\s*/g, " ");
  for (const raw of joined.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const [op, ...rest] = line.split(/\s+/);
    if ((op as string).toUpperCase() === "FROM") stage += 1;
    out.push({ op: (op as string).toUpperCase(), args: rest.join(" "), stage });
  }
  return out;
}

const all = instructions(TEXT);
const froms = all.filter((i) => i.op === "FROM");
const runtime = all.filter((i) => i.stage === froms.length - 1);

describe("deploy/docker/Dockerfile", () => {
  it("parses into a build stage and a runtime stage on the same Node release and Debian (the native addon's ABI)", () => {
    expect(froms.map((f) => f.args)).toEqual(["node:${NODE_VERSION}-bookworm AS build", "node:${NODE_VERSION}-bookworm-slim"]);
    expect(all.filter((i) => i.op === "ARG" && i.stage === -1).map((i) => i.args)).toEqual(["NODE_VERSION=26"]);
  });

  it("fetches nothing but npm packages: no apt, curl, wget, git or pip; native modules built from source with local headers", () => {
    for (const run of all.filter((i) => i.op === "RUN")) expect(run.args).not.toMatch(/\b(apt-get|apt|apk|curl|wget|git|pip3?)\b/);
    const env = all.filter((i) => i.op === "ENV" && i.stage === 0).map((i) => i.args).join(" ");
    expect(env).toMatch(/npm_config_build_from_source=true/);
    expect(env).toMatch(/npm_config_nodedir=\/usr\/local/);
    expect(all.some((i) => i.op === "ADD")).toBe(false);
  });

  it("the runtime stage installs nothing: it copies the build stage's pruned node_modules and bundle", () => {
    for (const run of runtime.filter((i) => i.op === "RUN")) expect(run.args).not.toMatch(/npm (ci|install|i)\b/);
    const copies = runtime.filter((i) => i.op === "COPY").map((i) => i.args);
    expect(copies).toContain("--from=build /opt/meshward/node_modules ./node_modules");
    expect(copies).toContain("--from=build /opt/meshward/dist/bundle ./dist/bundle");
    expect(all.find((i) => i.stage === 0 && i.op === "RUN" && /npm prune --omit=dev/.test(i.args))).toBeDefined();
    // what bin/meshward.js loads is what is copied
    expect(readFileSync(join(ROOT, "bin/meshward.js"), "utf8")).toContain('"../dist/bundle/main.js"');
  });

  // Review finding (HIGH): `RUN npm ci` ran the package's `prepare` script (node scripts/prepare.mjs)
  // before scripts/ was copied, so the image did not build. Whatever an `npm ci` in the build runs
  // must be there when it runs; with --ignore-scripts, the packages whose install script builds
  // something the image needs are rebuilt by name.
  it("npm ci runs no lifecycle script whose files are not copied yet; install scripts that build something are run by name", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> };
    const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, { hasInstallScript?: boolean }> };
    const build = all.filter((i) => i.stage === 0);
    const ci = build.findIndex((i) => i.op === "RUN" && /\bnpm ci\b/.test(i.args));
    expect(ci).toBeGreaterThan(0);
    const copiedBefore = build.slice(0, ci).filter((i) => i.op === "COPY").flatMap((i) => i.args.split(/\s+/).slice(0, -1)).map((f) => f.replace(/^\.\//, "").replace(/\/$/, ""));
    const isCopied = (file: string) => copiedBefore.some((source) => file === source || file.startsWith(`${source}/`));
    const ignoresScripts = /--ignore-scripts/.test(build[ci]!.args);
    if (!ignoresScripts) {
      for (const name of ["preinstall", "install", "postinstall", "prepare"]) {
        for (const file of (pkg.scripts[name] ?? "").match(/[\w./-]+\.(?:m?js|ts|cjs)\b/g) ?? []) expect(isCopied(file), `${name}: ${file} is not copied before npm ci`).toBe(true);
      }
    } else {
      const rebuilt = build.slice(ci).filter((i) => i.op === "RUN").flatMap((i) => /npm rebuild ([^&]*)/.exec(i.args)?.[1]?.trim().split(/\s+/) ?? []);
      // Top-level packages with an install script (protobufjs's nested one only prints a notice).
      const withScripts = Object.entries(lock.packages).filter(([path, entry]) => entry.hasInstallScript === true && /^node_modules\/[^/]+$/.test(path)).map(([path]) => path.slice("node_modules/".length));
      expect(withScripts.sort()).toEqual(rebuilt.sort());
    }
  });

  it("every COPY source exists in the repository and is not excluded by the .dockerignore", () => {
    const ignored = IGNORE.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
    for (const copy of all.filter((i) => i.op === "COPY" && !i.args.startsWith("--from"))) {
      const sources = copy.args.split(/\s+/).slice(0, -1);
      for (const source of sources) {
        expect(existsSync(join(ROOT, source)), source).toBe(true);
        expect(ignored.some((pattern) => pattern.replace(/^\*\*\//, "") === source.replace(/^\.\//, "").split("/")[0])).toBe(false);
      }
    }
    expect(ignored).toContain("**/node_modules");
  });

  it("runs as the numeric non-root user the manifests' securityContext names, with meshward as the entrypoint", () => {
    const user = runtime.find((i) => i.op === "USER")?.args;
    expect(user).toBe("10001:10001");
    expect(runtime.find((i) => i.op === "ENTRYPOINT")?.args).toBe('["meshward"]');
    const rendered = spawnSync("kubectl", ["kustomize", join(ROOT, "deploy/kubernetes/overlays/single")], { encoding: "utf8" });
    expect(rendered.status, rendered.stderr).toBe(0);
    const deployments = parseAllDocuments(rendered.stdout).map((d) => d.toJS() as Record<string, any>).filter((d) => d.kind === "Deployment");
    for (const deployment of deployments) expect(deployment.spec.template.spec.securityContext.runAsUser).toBe(10001);
    // the image tag the manifests use is this package's version
    const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
    for (const deployment of deployments) for (const c of deployment.spec.template.spec.containers) expect(c.image).toBe(`meshward:${version}`);
    expect(TEXT).toContain(`-t meshward:${version}`);
  });
});
