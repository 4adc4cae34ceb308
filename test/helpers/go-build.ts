/**
 * Go programs the tests build (standard library only, offline): Debian's golang-go, which
 * scripts/ensure-system-deps.sh installs.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The project's own Go build cache, shared by every test file that builds a Go program: with a
 * cache per build, each of the five that build daprcheck built Go's net and crypto packages anew
 * (~5 s of CPU each). Go's build cache is safe for builds that run at once, and is keyed by the
 * content it compiles.
 */
export const GO_BUILD_CACHE = fileURLToPath(new URL("../../node_modules/.cache/meshward-gocache/", import.meta.url));

/** Offline Go, standard library only: the project's GOCACHE, a private GOPATH, no proxy, no toolchain download. */
export function goEnv(work: string): NodeJS.ProcessEnv {
  return { ...process.env, GOCACHE: GO_BUILD_CACHE, GOPATH: join(work, "gopath"), GOPROXY: "off", GOFLAGS: "", GOTOOLCHAIN: "local", GO111MODULE: "off", CGO_ENABLED: "0" };
}

function go(args: readonly string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("go", args, { env, timeout: 180_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`go ${args.join(" ")} failed: ${stdout}${stderr}${error.message}`));
      else resolve(stdout);
    });
  });
}

/**
 * Builds one Go source file once per content: the binary is kept in `bin/` of the build cache,
 * named by the hash of the source and of `go version`, so later runs (and other test files) start
 * it without a build. Written under a temporary name and renamed, so a reader never sees half of it.
 */
export async function buildGoCached(source: string): Promise<string> {
  const dir = join(GO_BUILD_CACHE, "bin");
  const env = goEnv(dir);
  const version = await go(["version"], env);
  const hash = createHash("sha256").update(version).update("\0").update(readFileSync(source)).digest("hex").slice(0, 16);
  const binary = join(dir, `${basename(source, ".go")}-${hash}`);
  if (existsSync(binary)) return binary;
  mkdirSync(dir, { recursive: true });
  const partial = `${binary}.${process.pid}.partial`;
  try {
    await go(["build", "-o", partial, source], env);
    renameSync(partial, binary);
  } finally {
    rmSync(partial, { force: true });
  }
  return binary;
}
