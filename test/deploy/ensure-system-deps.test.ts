import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { exec } from "../helpers/exec.ts";

/**
 * `npm ci` builds better-sqlite3 from source when no prebuilt binary can be fetched, which needs
 * python3, make and g++: README.md says so, and scripts/ensure-system-deps.sh installs them
 * (issue 15, item 12). The script runs for real under bash; only apt-get, id, systemctl and the
 * tools it looks for are stand-ins on PATH, because a test must not install Debian packages on
 * the machine it runs on.
 */
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SCRIPT = join(ROOT, "scripts/ensure-system-deps.sh");

describe("the build tools npm ci may need", () => {
  const bin = mkdtempSync(join(tmpdir(), "meshward-deps-"));
  afterAll(() => rmSync(bin, { recursive: true, force: true }));

  const stub = (name: string, body = "exit 0") => {
    writeFileSync(join(bin, name), `#!/bin/bash\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  };

  it("README.md says npm ci may build better-sqlite3 from source and what that needs", () => {
    const readme = readFileSync(join(ROOT, "README.md"), "utf8").replace(/\s+/g, " ");
    expect(readme).toMatch(/`npm ci` installs a prebuilt `better-sqlite3` binary .* builds it from source, which needs python3, make and g\+\+/);
    expect(readme).toContain("`bash scripts/ensure-system-deps.sh` installs them");
  });

  it("ensure-system-deps.sh installs python3, make and g++ when they are missing, and nothing when present", async () => {
    // Every command the script checks (its "command package" lines) but g++; "py:" modules are
    // checked with Debian's /usr/bin/python3 itself, which the pretest step has provided.
    const checked = [...readFileSync(SCRIPT, "utf8").matchAll(/^\s+"([^" :]+) [^"]+"$/gm)].map((m) => m[1]!);
    expect(checked).toEqual(expect.arrayContaining(["openssl", "python3", "make", "g++"]));
    for (const tool of checked.filter((t) => t !== "g++")) stub(tool);
    stub("id", 'echo 0'); // as root: no sudo
    stub("apt-get", `echo "apt-get $*" >> ${join(bin, "apt.log")}`);
    stub("systemctl");
    stub("service");
    const env = `PATH=${bin}`;
    const missingGpp = await exec("/usr/bin/env", ["-i", env, "/bin/bash", SCRIPT]);
    expect(missingGpp.code, missingGpp.stderr).toBe(0);
    expect(missingGpp.stderr).toContain("installing Debian packages the tests need: g++");
    expect(readFileSync(join(bin, "apt.log"), "utf8")).toMatch(/^apt-get install -y -qq --no-install-recommends g\+\+$/m);

    stub("g++");
    rmSync(join(bin, "apt.log"));
    const allThere = await exec("/usr/bin/env", ["-i", env, "/bin/bash", SCRIPT]);
    expect(allThere.code).toBe(0);
    expect(allThere.stderr).toBe("");
    expect(() => readFileSync(join(bin, "apt.log"))).toThrow();
  });
});
