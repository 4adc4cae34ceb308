import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCli, type LongRunning } from "../helpers/cli.ts";
import { exec } from "../helpers/exec.ts";

/**
 * README.md as a new user follows it, in a clean copy of the repository (issue 15, item 3):
 * `npm ci` runs the `prepare` script, which must leave a package whose `import … from
 * "meshward"` works; then the five-minute CLI section and the SDK snippet run as written, with
 * one change the test rules need: the CA binds port 0 instead of 8443, and every `127.0.0.1:8443`
 * is replaced by the address it got. The CLI is the built package's (bin/meshward.js runs
 * dist/bundle, as it does for a user), not the sources the other tests run.
 */
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const README = readFileSync(join(ROOT, "README.md"), "utf8");

/** The body of the first fenced block of `lang` after `heading`. */
function blockAfter(heading: string, lang: string, from = 0): { body: string; end: number } {
  const start = README.indexOf(heading, from);
  expect(start, heading).toBeGreaterThanOrEqual(0);
  const open = README.indexOf("```" + lang + "\n", start);
  const close = README.indexOf("\n```", open + 4 + lang.length);
  return { body: README.slice(open + 4 + lang.length, close), end: close };
}

describe("README.md, followed in a clean copy of the repository", () => {
  const clone = mkdtempSync(join(tmpdir(), "meshward-readme-"));
  let ca: LongRunning | undefined;
  let caAddress: string;

  /** Runs shell lines in the copy, with `meshward` meaning `node bin/meshward.js` as the README says. */
  const sh = (lines: string) =>
    exec("bash", ["-euo", "pipefail", "-c", `unset MESHWARD_FROM_SOURCE\nmeshward() { node ${join(clone, "bin", "meshward.js")} "$@"; }\n${lines.replaceAll("127.0.0.1:8443", caAddress ?? "127.0.0.1:8443")}`], { cwd: clone, timeoutMs: 60_000 });

  beforeAll(async () => {
    // What git clone gives (the sources, no dist/), with this checkout's node_modules standing in for `npm ci`'s.
    for (const entry of ["package.json", "bin", "src", "proto", "scripts", "tsconfig.json", "tsconfig.build.json"]) cpSync(join(ROOT, entry), join(clone, entry), { recursive: true });
    symlinkSync(join(ROOT, "node_modules"), join(clone, "node_modules"), "dir");
  });

  afterAll(async () => {
    await ca?.stop();
    rmSync(clone, { recursive: true, force: true });
  });

  it("npm's prepare step (run by npm ci and by npm install <git url>) builds dist/", async () => {
    expect(existsSync(join(clone, "dist"))).toBe(false);
    const prepare = await exec("npm", ["run", "prepare"], { cwd: clone, timeoutMs: 120_000 });
    expect(prepare.code, prepare.stdout + prepare.stderr).toBe(0);
    for (const file of ["dist/index.js", "dist/index.d.ts", "dist/bundle/main.js", "dist/dashboard/static"]) expect(existsSync(join(clone, file)), file).toBe(true);
  }, 150_000);

  it("the five-minute CLI section runs as written", async () => {
    const { body } = blockAfter("## Five minutes with the CLI", "sh");
    const lines = body.split("\n");
    const serve = lines.findIndex((l) => l.startsWith("meshward ca serve"));
    expect(lines[serve]).toBe("meshward ca serve --dir ./ca --listen 127.0.0.1:8443 &");
    const init = await sh(lines.slice(0, serve).join("\n"));
    expect(init.code, init.stderr).toBe(0);
    ca = await startCli(["ca", "serve", "--dir", join(clone, "ca"), "--listen", "127.0.0.1:0"], /listening on (\S+)/, { bin: join(clone, "bin", "meshward.js"), env: { MESHWARD_FROM_SOURCE: "" } });
    caAddress = (ca as LongRunning & { match: RegExpMatchArray }).match[1] as string;
    const rest = await sh(lines.slice(serve + 1).join("\n"));
    expect(rest.code, rest.stderr).toBe(0);
    expect(rest.stdout).toMatch(/SPIFFE ID\s+spiffe:\/\/example\.test\/ns\/shop\/orders/);
    expect(rest.stdout).toMatch(/orders\/cert\.pem: OK/);
  }, 60_000);

  it("the SDK snippet runs as written after it: loopback, no port of its own, a target that resolves", async () => {
    const section = README.indexOf("## The SDK");
    const token = blockAfter("## The SDK", "sh");
    const snippet = blockAfter("## The SDK", "js", section);
    expect(snippet.body).not.toMatch(/listen\((?!0, "127\.0\.0\.1")/); // binds loopback, port 0
    expect(snippet.body.replaceAll('ca: "127.0.0.1:8443"', "")).not.toMatch(/8443/); // the CA's port only for the CA
    const t = await sh(token.body);
    expect(t.code, t.stderr).toBe(0);
    writeFileSync(join(clone, "sdk.mjs"), snippet.body.replaceAll("127.0.0.1:8443", caAddress));
    const run = await exec("node", ["sdk.mjs"], { cwd: clone, timeoutMs: 30_000 });
    expect(run.code, run.stderr).toBe(0);
    // The output the snippet's comments promise.
    const promised = [...snippet.body.matchAll(/^\/\/ (I am .*|200 .*)$/gm)].map((m) => m[1]);
    expect(promised).toHaveLength(2);
    expect(run.stdout.trim().split("\n")).toEqual(promised);
  }, 60_000);

  it("as a git dependency (npm install <git url> packs a clone after prepare), the package works too", async () => {
    // npm installs a git dependency by cloning it, installing its dev dependencies, and packing it,
    // which runs `prepare`; `npm pack` in a fresh copy without dist/ is that last step.
    const gitClone = mkdtempSync(join(tmpdir(), "meshward-readme-git-"));
    const app = mkdtempSync(join(tmpdir(), "meshward-readme-app-"));
    try {
      for (const entry of ["package.json", "bin", "src", "proto", "scripts", "tsconfig.json", "tsconfig.build.json"]) cpSync(join(ROOT, entry), join(gitClone, entry), { recursive: true });
      symlinkSync(join(ROOT, "node_modules"), join(gitClone, "node_modules"), "dir");
      const pack = await exec("npm", ["pack", "--pack-destination", app], { cwd: gitClone, timeoutMs: 120_000 });
      expect(pack.code, pack.stderr).toBe(0);
      const tarball = join(app, pack.stdout.trim().split("\n").pop()!);
      const listing = (await exec("tar", ["tzf", tarball])).stdout.split("\n");
      for (const file of ["package/dist/index.js", "package/dist/index.d.ts", "package/dist/bundle/main.js", "package/bin/meshward.js"]) expect(listing).toContain(file);
      // Unpacked where npm would put it; its dependencies are this checkout's.
      const installed = join(app, "node_modules", "meshward");
      mkdirSync(installed, { recursive: true });
      expect((await exec("tar", ["xzf", tarball, "-C", installed, "--strip-components=1"])).code).toBe(0);
      symlinkSync(join(ROOT, "node_modules"), join(installed, "node_modules"), "dir");
      // The README's snippet in that project, against the CA of the five-minute section.
      symlinkSync(join(clone, "ca"), join(app, "ca"), "dir");
      const t = await sh(blockAfter("## The SDK", "sh").body.replace("> inventory.token", `> ${join(app, "inventory.token")}`));
      expect(t.code, t.stderr).toBe(0);
      const snippet = blockAfter("## The SDK", "js", README.indexOf("## The SDK")).body;
      writeFileSync(join(app, "sdk.mjs"), snippet.replaceAll("127.0.0.1:8443", caAddress));
      const run = await exec("node", ["sdk.mjs"], { cwd: app, timeoutMs: 30_000 });
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toContain("200 hello spiffe://example.test/ns/shop/inventory");
    } finally {
      rmSync(gitClone, { recursive: true, force: true });
      rmSync(app, { recursive: true, force: true });
    }
  }, 150_000);

  it("docs/sdk.md covers authorize's default, expect, hot swap and errors, naming only real exports and error codes", async () => {
    const sdk = readFileSync(join(ROOT, "docs/sdk.md"), "utf8");
    for (const heading of ["## Servers: `authorize`", "## Clients: `expect`", "## Hot swap", "## Errors"]) expect(sdk).toContain(heading);
    expect(sdk).toMatch(/\*\(left out\)\* \| \*\*any workload of this server's own trust domain\*\*/);
    expect(README).toContain("[docs/sdk.md](docs/sdk.md)");
    // Every SDK function it names is exported by the package (the built one, from the copy above).
    const exported = new Set(Object.keys(await import(join(clone, "dist", "index.js"))));
    const called = new Set([...sdk.matchAll(/`((?:create|connect|grpc|file|workload|static|mtls|https|is)[A-Z][A-Za-z0-9]*|mtlsFetch|httpsRequest)[`(]/g)].map((m) => m[1]!));
    for (const name of called) expect(exported, `docs/sdk.md names ${name}`).toContain(name);
    expect(called.size).toBeGreaterThanOrEqual(10);
    // Every error code it lists is thrown somewhere in the sources.
    const sources = (await exec("grep", ["-rhoE", "\"E_[A-Z_]+\"", join(ROOT, "src")])).stdout;
    const thrown = new Set(sources.split("\n").map((l) => l.replaceAll('"', "")));
    for (const code of new Set([...sdk.matchAll(/`(E_[A-Z_]+)`/g)].map((m) => m[1]!))) expect(thrown, `docs/sdk.md names ${code}`).toContain(code);
  });

  it("the files the walkthrough leaves in a clone are ignored by git", async () => {
    const ignored = await exec("git", ["check-ignore", "--no-index", "ca/", "orders/", "inventory.token", "orders.token", "sdk.mjs", "dist/"], { cwd: ROOT });
    expect(ignored.stdout.trim().split("\n")).toEqual(["ca/", "orders/", "inventory.token", "orders.token", "sdk.mjs", "dist/"]);
  });
});
