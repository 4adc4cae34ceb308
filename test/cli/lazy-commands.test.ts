/**
 * `meshward --help`, `<command> --help`, `--version` and a bare `meshward audit` load the command
 * definitions only: no command's action (src/cli/actions/, the demo) and no dependency but
 * commander, both from the bundle users run (dist/bundle) and from the sources (tsx). Each
 * process runs with a recorder preloaded (test/helpers/record-modules.mjs) that lists what it
 * loaded; the bundle's chunks are read back to the modules in them through their source maps.
 * A command that runs does load its action, seen by the same recorder. The short `ca`, `token`
 * and `cert` commands load no more than they use: not the CA server (`ca serve` has a module of
 * its own), nor undici, jose, pino, prom-client or pg (loaded when a postgres:// store is opened).
 */
import { mkdtempSync, readFileSync, realpathSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bundleCli } from "../../scripts/bundle.ts";
import { runCli, type CliResult } from "../helpers/cli.ts";
import { closedPort } from "../helpers/closed-port.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const RECORDER = fileURLToPath(new URL("../helpers/record-modules.mjs", import.meta.url));
/** What bin/meshward.js loads to run the sources: not meshward's. */
const TSX_MACHINERY = new Set(["tsx", "esbuild"]);
/**
 * Modules outside src/cli that a command definition may import: each imports nothing but
 * node's built-ins and these (a flag's default or choices, a usage check).
 */
const DEFINITIONS_MAY_LOAD = new Set([
  "src/errors.ts",
  "src/util/package-files.ts",
  "src/util/dir-safety.ts",
  "src/util/files.ts",
  "src/util/read-input.ts",
  // main.ts prints every error message through it (control characters escaped, no workflow commands).
  "src/util/printable.ts",
  "src/pki/keys.ts",
  "src/audit/walk.ts",
  "src/config/validator-names.ts",
  "src/config/sidecar-fields.ts",
  "src/inject/webhook-limits.ts",
]);

/**
 * Packages that only the long-running commands (`ca serve`, sidecar, identity), `status` (HTTP)
 * or a postgres:// store need: `ca init`, `ca status`, `token create` load none of them (each
 * cost ~0.03–0.06 s of CPU at every start, ~500 starts in the test suite).
 */
const SERVING_ONLY_PACKAGES = new Set(["undici", "pg", "pg-pool", "jose", "prom-client", "pino", "@opentelemetry/api", "@grpc/grpc-js", "yaml", "zod"]);

interface Loaded {
  readonly result: CliResult;
  /** meshward's own modules, from the repository root (src/cli/main.ts). */
  readonly modules: string[];
  /** node_modules packages, tsx's machinery left out. */
  readonly packages: string[];
}

/** A module path or URL as the recorder or a source map names it: meshward's own module, or a package. */
function classify(path: string): { module?: string; package?: string } {
  const inPackage = /node_modules\/((?:@[^/]+\/)?[^/]+)\/(?!.*node_modules\/)/.exec(path);
  if (inPackage && !inPackage[1]!.startsWith(".")) return { package: inPackage[1]! };
  const own = /(?:^|\/)(src\/.+)$/.exec(path);
  return own ? { module: own[1]! } : {};
}

/** The modules in a bundle chunk, from its source map. */
function chunkSources(chunk: string): string[] {
  const map = JSON.parse(readFileSync(`${chunk}.map`, "utf8")) as { sourceRoot?: string; sources: string[] };
  return map.sources.map((source) => resolve(dirname(chunk), map.sourceRoot ?? "", source));
}

describe("the CLI loads a command's code only when the command runs", () => {
  const work = mkdtempSync(join(ROOT, "node_modules/.cache/meshward-lazy-commands-"));
  let bundle: string;
  let bundleDir: string;
  let n = 0;

  beforeAll(async () => {
    // The bundle test/global-setup.ts built from these sources; built here when the suite runs from sources.
    bundle = process.env.MESHWARD_TEST_CLI?.endsWith("main.js") ? process.env.MESHWARD_TEST_CLI : await bundleCli(join(work, "bundle"));
    bundleDir = realpathSync(dirname(bundle));
  }, 60_000);
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  async function loaded(args: string[], from: "bundle" | "sources"): Promise<Loaded> {
    const record = join(work, `modules-${++n}.txt`);
    const result = await runCli(args, {
      ...(from === "bundle" ? { bin: bundle } : { bin: join(ROOT, "bin/meshward.js") }),
      env: { NODE_OPTIONS: `--import=${RECORDER}`, MESHWARD_RECORD_MODULES: record, ...(from === "sources" ? { MESHWARD_FROM_SOURCE: "1" } : {}) },
    });
    const recorded = readFileSync(record, "utf8").split("\n").filter((line) => line !== "");
    const paths = recorded.flatMap((entry) => {
      const path = entry.startsWith("file:") ? fileURLToPath(entry) : entry;
      // A chunk of the bundle stands for the modules bundled into it.
      return from === "bundle" && dirname(path) === bundleDir && path.endsWith(".js") ? chunkSources(path) : [path];
    });
    const modules = new Set<string>();
    const packages = new Set<string>();
    for (const path of paths) {
      const { module, package: pkg } = classify(path);
      if (module !== undefined) modules.add(module);
      if (pkg !== undefined && !(from === "sources" && TSX_MACHINERY.has(pkg))) packages.add(pkg);
    }
    return { result, modules: [...modules].sort(), packages: [...packages].sort() };
  }

  function expectDefinitionsOnly({ modules, packages }: Loaded): void {
    expect(packages).toEqual(["commander"]);
    expect(modules).toContain("src/cli/main.ts");
    const beyond = modules.filter((module) => !(/^src\/cli\/[^/]+\.ts$/.test(module) || DEFINITIONS_MAY_LOAD.has(module)));
    expect(beyond, "modules a definition imported beyond src/cli/*.ts and DEFINITIONS_MAY_LOAD").toEqual([]);
    for (const runOnly of ["src/cli/store.ts", "src/cli/logger.ts", "src/cli/sidecar-config.ts"]) expect(modules).not.toContain(runOnly);
  }

  for (const from of ["bundle", "sources"] as const) {
    describe(`from the ${from}`, () => {
      it("--help: every command's definition, no action and no dependency but commander", async () => {
        const help = await loaded(["--help"], from);
        expect(help.result.code, help.result.stderr).toBe(0);
        expect(help.result.stdout).toMatch(/^Usage: meshward \[options\] \[command\]/);
        for (const command of ["audit", "ca", "token", "cert", "identity", "status", "demo", "sidecar", "inject", "injector"]) expect(help.modules).toContain(`src/cli/${command}.ts`);
        expectDefinitionsOnly(help);
      });

      it("sidecar --help, --version and a bare `audit` (a usage error) load no action either", async () => {
        const sidecar = await loaded(["sidecar", "--help"], from);
        expect(sidecar.result.code, sidecar.result.stderr).toBe(0);
        expect(sidecar.result.stdout).toContain("--max-connections <n>");
        expectDefinitionsOnly(sidecar);
        expect(sidecar.modules).not.toContain("src/config/sidecar.ts");

        const version = await loaded(["--version"], from);
        expect(version.result.code).toBe(0);
        expect(version.packages).toEqual(["commander"]);
        expect(version.modules.filter((module) => module.startsWith("src/cli/"))).toEqual(["src/cli/commands.ts", "src/cli/main.ts", "src/cli/program.ts"]);

        const audit = await loaded(["audit"], from);
        expect(audit.result.code).toBe(2);
        expect(audit.result.stderr).toBe("meshward: give at least one file or folder to audit, e.g. `meshward audit deploy/` [E_AUDIT_USAGE]\n");
        expectDefinitionsOnly(audit);
      });

      it("the short ca, token and cert commands load no CA server, HTTP client, JWT library, logger, metrics or PostgreSQL driver", async () => {
        const dir = join(work, `ca-${from}`);
        const init = await loaded(["ca", "init", "--trust-domain", "lazy.example", "--dir", dir], from);
        expect(init.result.code, init.result.stderr).toBe(0);
        const status = await loaded(["ca", "status", "--dir", dir], from);
        expect(status.result.code, status.result.stderr).toBe(0);
        expect(status.result.stdout).toMatch(/^trust domain lazy\.example /);
        const token = await loaded(["token", "create", "--dir", dir, "--namespace", "ns", "--app-id", "app"], from);
        expect(token.result.code, token.result.stderr).toBe(0);
        const inspect = await loaded(["cert", "inspect", join(dir, "root.pem")], from);
        expect(inspect.result.code, inspect.result.stderr).toBe(0);
        expect(inspect.modules).not.toContain("src/cli/store.ts");
        for (const { packages, modules } of [init, status, token, inspect]) {
          expect(packages.filter((pkg) => SERVING_ONLY_PACKAGES.has(pkg)), "packages only `ca serve`, the sidecar, `status` or a postgres:// store need").toEqual([]);
          for (const module of ["src/cli/actions/ca-serve.ts", "src/ca/server.ts", "src/store/postgres.ts", "src/cli/logger.ts", "src/ca/dapr-trust-bundle.ts"]) expect(modules).not.toContain(module);
        }
        // A postgres:// store loads the driver when it is opened, and a failure to reach it reads as before.
        const postgres = await loaded(["token", "create", "--dir", dir, "--namespace", "ns", "--app-id", "app", "--store", "postgres://meshward:s3cret@127.0.0.1:1/meshward"], from);
        expect(postgres.result.code).toBe(1);
        expect(postgres.result.stderr).toMatch(/^meshward: cannot reach PostgreSQL at postgres:\/\/meshward:\*\*\*@127\.0\.0\.1:1\/meshward .*\[E_STORE_OPEN\]\n$/);
        expect(postgres.packages).toContain("pg");
        expect(postgres.modules).toContain("src/store/postgres.ts");
      });

      it("`status --ca` does not load undici; `status --status-url` loads it when it fetches", async () => {
        // An HTTP server that answers 404, and a loopback port nothing listens on.
        const server = await listening(createServer((_request, response) => response.writeHead(404).end()));
        const down = await closedPort();
        try {
          const dir = join(work, `status-${from}`);
          expect((await runCli(["ca", "init", "--trust-domain", "lazy.example", "--dir", dir], { bin: bundle })).code).toBe(0);
          const ca = await loaded(["status", "--ca", `127.0.0.1:${down}`, "--bundle", join(dir, "bundle.pem")], from);
          expect(ca.result.code).toBe(1);
          expect(ca.result.stdout).toContain("E_CA_UNAVAILABLE");
          expect(ca.packages).not.toContain("undici");
          const feed = await loaded(["status", "--status-url", `http://127.0.0.1:${(server.address() as AddressInfo).port}`], from);
          expect(feed.result.code).toBe(1);
          expect(feed.result.stdout).toContain("unreachable: HTTP 404");
          expect(feed.packages).toContain("undici");
        } finally {
          await new Promise((resolve) => server.close(resolve));
        }
      });

      it("a command that runs loads its action (what the recorder sees when there is one to see)", async () => {
        const rules = await loaded(["audit", "rules"], from);
        expect(rules.result.code, rules.result.stderr).toBe(0);
        expect(rules.result.stdout).toMatch(/^MW-/);
        expect(rules.modules).toContain("src/cli/actions/audit.ts");
        expect(rules.modules).toContain("src/audit/rules/index.ts");
        expect(rules.packages).toContain("yaml");
      });
    });
  }
});

function listening(server: Server): Promise<Server> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}
