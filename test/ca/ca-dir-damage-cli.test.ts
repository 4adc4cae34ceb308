import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectRefused as refused, runCli } from "../helpers/cli.ts";

/**
 * Review findings: a damaged or incomplete CA directory, or a --dir that cannot be one, got a
 * stack trace ("unexpected error: Error: ENOENT … at Object.read (src/ca/anchor-files.ts)", a
 * SyntaxError from ca.json, EEXIST/ENOTDIR from mkdir) instead of an E_ code saying what to do;
 * a half-made CA (keys, no ca.json: Ctrl-C during `ca init`) got contradictory advice from
 * `ca serve` ("create one with ca init") and `ca init` (E_CA_EXISTS).
 */
const TD = "damage.test";

// Each test runs several CLI processes in a row: on a loaded 2-core machine one takes seconds.
describe("a damaged CA directory gets an E_ code naming the file, never a stack trace", { timeout: 180_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-ca-damage-"));
  const pristine = join(work, "pristine");
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  beforeAll(async () => {
    const init = await runCli(["ca", "init", "--trust-domain", TD, "--dir", pristine]);
    expect(init.code, init.stderr).toBe(0);
  });
  let copies = 0;
  const copy = () => {
    const dir = join(work, `ca-${++copies}`);
    cpSync(pristine, dir, { recursive: true });
    return dir;
  };
  const commands = (dir: string) => [
    ["ca", "status", "--dir", dir],
    ["ca", "rotate-issuer", "--dir", dir, "--now"],
    // Exits at once: the anchors are loaded before anything listens.
    ["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0"],
  ];

  it("bundle.pem or issuer.pem missing: E_CA_CORRUPT naming the file and the way back (backup)", async () => {
    for (const file of ["bundle.pem", "issuer.pem"]) {
      const dir = copy();
      rmSync(join(dir, file));
      for (const args of commands(dir)) {
        refused(await runCli(args), "E_CA_CORRUPT", new RegExp(`${join(dir, file)} is missing: the CA directory is incomplete\\. Restore ${file} .*from your backup`));
      }
    }
  });

  it("a bundle.pem that holds no certificate: E_CA_CORRUPT naming it", async () => {
    const dir = copy();
    writeFileSync(join(dir, "bundle.pem"), "garbage\n");
    refused(await runCli(["ca", "status", "--dir", dir]), "E_CA_CORRUPT", new RegExp(`${join(dir, "bundle.pem")} is damaged \\(no PEM block.*\\): restore it from your backup`));
  });

  it("a truncated or emptied ca.json: E_CA_CORRUPT naming it, for every command that reads it", async () => {
    const dir = copy();
    for (const [content, why] of [["{", "is not valid JSON"], ["", "is not valid JSON"], ["{}\n", 'has no valid "version"'], ["[1]", "does not hold a JSON object"]] as const) {
      writeFileSync(join(dir, "ca.json"), content);
      const every = content === "{" ? [...commands(dir), ["token", "create", "--dir", dir, "--namespace", "a", "--app-id", "b"]] : [["ca", "status", "--dir", dir]];
      for (const args of every) {
        refused(await runCli(args), "E_CA_CORRUPT", new RegExp(`${join(dir, "ca.json")} ${why}.*restore it from your backup`));
      }
    }
  });

  it("ca init --dir naming a file, or a path through a file: E_CA_DIR, nothing made", async () => {
    const file = join(work, "afile");
    writeFileSync(file, "not a directory\n");
    refused(await runCli(["ca", "init", "--trust-domain", TD, "--dir", file]), "E_CA_DIR", new RegExp(`${file} exists and is not a directory; give --dir a new or empty directory`));
    refused(await runCli(["ca", "init", "--trust-domain", TD, "--dir", join(file, "sub")]), "E_CA_DIR", new RegExp(`cannot create the CA directory ${join(file, "sub")} \\(a part of that path is a file, not a directory\\)`));
    expect(readFileSync(file, "utf8")).toBe("not a directory\n");
  });

  it("a half-made CA (keys, no ca.json): serve, status, token create and init all say the same thing, and nothing is deleted", async () => {
    const dir = join(work, "half");
    mkdirSync(dir, { mode: 0o700 });
    // What Ctrl-C during `ca init` leaves: the keys are written first, ca.json last.
    for (const file of ["root.key", "issuer.key"]) cpSync(join(pristine, file), join(dir, file));
    const before = readdirSync(dir).sort();
    const advice = new RegExp(
      `${dir} holds part of a meshward CA \\(root\\.key, issuer\\.key\\) but no ca\\.json.*If this CA was never used, move the directory aside \\(mv ${dir} ${dir}\\.partial\\) and run 'meshward ca init' again; if it is in use, restore ca\\.json from your backup`,
    );
    for (const args of [
      ["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0"],
      ["ca", "status", "--dir", dir],
      ["token", "create", "--dir", dir, "--namespace", "a", "--app-id", "b"],
      ["ca", "init", "--trust-domain", TD, "--dir", dir],
    ]) {
      const r = await runCli(args);
      refused(r, "E_CA_INCOMPLETE", advice);
      expect(r.stderr).not.toMatch(/create one with|E_CA_EXISTS/);
    }
    expect(readdirSync(dir).sort()).toEqual(before);
    // The advice works: moved aside, init makes a CA.
    renameSync(dir, `${dir}.partial`);
    const init = await runCli(["ca", "init", "--trust-domain", TD, "--dir", dir]);
    expect(init.code, init.stderr).toBe(0);
    expect(existsSync(join(`${dir}.partial`, "root.key"))).toBe(true);
  });
});
