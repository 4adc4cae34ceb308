import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectRefused as refused, runCli } from "../helpers/cli.ts";

/**
 * Review findings (LOW): `ca init --root-ttl 0s` made an already-expired CA and exited 0;
 * `token create --ttl 0` stored a dead token and `--uses 0x10` / `1e3` were read as 16 / 1000;
 * a PEM file given to `ca init`, `import-issuer` or `rotate-root prepare` that was not PEM got
 * "no PEM block found [E_PEM_INVALID]" without naming the file.
 */
const TD = "input.test";

// Each test runs several CLI processes in a row: on a loaded 2-core machine one takes seconds.
describe("CA command-line input is checked before anything is made", { timeout: 180_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-ca-input-"));
  const ca = join(work, "ca");
  const garbage = join(work, "garbage.pem");
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  beforeAll(async () => {
    writeFileSync(garbage, "garbage\n");
    const init = await runCli(["ca", "init", "--trust-domain", TD, "--dir", ca]);
    expect(init.code, init.stderr).toBe(0);
  });

  it("ca init refuses a root or issuer lifetime under an hour, and makes no directory", async () => {
    for (const [flag, value] of [["--root-ttl", "0s"], ["--root-ttl", "0"], ["--issuer-ttl", "59m"], ["--root-ttl", "30m"]] as const) {
      const dir = join(work, `short-${flag.slice(2)}-${value}`);
      refused(await runCli(["ca", "init", "--trust-domain", TD, "--dir", dir, flag, value]), "E_DURATION_INVALID", new RegExp(`${flag} "${value}" is too short: a root or issuer must live at least 1h`), true);
      expect(existsSync(dir)).toBe(false);
    }
    refused(await runCli(["ca", "rotate-issuer", "--dir", ca, "--now", "--issuer-ttl", "10s"]), "E_DURATION_INVALID", /--issuer-ttl "10s" is too short/, true);
    refused(await runCli(["ca", "rotate-root", "prepare", "--dir", ca, "--root-ttl", "0s"]), "E_DURATION_INVALID", /--root-ttl "0s" is too short/, true);
    expect(existsSync(join(ca, "root.next.pem"))).toBe(false);
    // An hour is enough.
    const hour = await runCli(["ca", "init", "--trust-domain", TD, "--dir", join(work, "hour"), "--root-ttl", "1h", "--json"]);
    expect(hour.code, hour.stderr).toBe(0);
  });

  it("token create refuses --ttl 0 and --uses that are not plain digits", async () => {
    const create = (...args: string[]) => runCli(["token", "create", "--dir", ca, "--namespace", "shop", "--app-id", "orders", ...args]);
    for (const ttl of ["0", "0s", "500ms"]) refused(await create("--ttl", ttl), "E_USAGE", new RegExp(`--ttl "${ttl}" is too short: a join token must stay usable at least 1s`));
    for (const uses of ["0x10", "1e3", "1.5", "-1", " "]) refused(await create("--uses", uses), "E_USAGE", /--uses takes a whole number, got/);
    refused(await create("--uses", "0"), "E_USAGE", /--uses must be a whole number from 1 to 1000000, got "0"/);
    const good = await create("--uses", "16", "--ttl", "2m");
    expect(good.code, good.stderr).toBe(0);
    expect(good.stdout).toMatch(/: 16 uses, expires /);
  });

  it("a file that is not PEM is named with its flag, in ca init, import-issuer and rotate-root prepare", async () => {
    const issuerPem = join(ca, "issuer.pem");
    const issuerKey = join(ca, "issuer.key");
    const rootPem = join(ca, "root.pem");
    const dir = join(work, "imported");
    refused(
      await runCli(["ca", "init", "--trust-domain", TD, "--dir", dir, "--root-cert", garbage, "--issuer-cert", issuerPem, "--issuer-key", issuerKey]),
      "E_PEM_INVALID",
      new RegExp(`--root-cert ${garbage}: no PEM block`),
    );
    refused(
      await runCli(["ca", "init", "--trust-domain", TD, "--dir", dir, "--root-cert", rootPem, "--issuer-cert", issuerPem, "--issuer-key", garbage]),
      "E_KEY_INVALID",
      new RegExp(`--issuer-key ${garbage}: no PRIVATE KEY PEM block found`),
    );
    // A refused import leaves no directory behind.
    expect(existsSync(dir)).toBe(false);
    refused(await runCli(["ca", "import-issuer", "--dir", ca, "--issuer-cert", garbage, "--issuer-key", issuerKey]), "E_PEM_INVALID", new RegExp(`--issuer-cert ${garbage}: no PEM block`));
    refused(await runCli(["ca", "import-issuer", "--dir", ca, "--issuer-cert", issuerPem, "--issuer-key", rootPem]), "E_KEY_INVALID", new RegExp(`--issuer-key ${rootPem}: no PRIVATE KEY PEM block`));
    const broken = join(work, "broken.pem");
    writeFileSync(broken, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    refused(await runCli(["ca", "rotate-root", "prepare", "--dir", ca, "--root-cert", broken]), "E_PEM_INVALID", new RegExp(`--root-cert ${broken}: a CERTIFICATE block does not hold an X.509 certificate`));
    refused(await runCli(["ca", "rotate-root", "prepare", "--dir", ca, "--root-cert", garbage]), "E_PEM_INVALID", new RegExp(`--root-cert ${garbage}: no PEM block`));
    expect(JSON.parse(readFileSync(join(ca, "ca.json"), "utf8")).rootRotation).toBeUndefined();
  });

  // Review finding: preparing the current root again was accepted, and `activate` + `retire` then
  // removed "the previous root", the only one: an empty bundle.pem and a CA that no longer started.
  it("rotate-root prepare --root-cert refuses a root the bundle already holds, and changes nothing", async () => {
    const before = { bundle: readFileSync(join(ca, "bundle.pem"), "utf8"), state: readFileSync(join(ca, "ca.json"), "utf8") };
    refused(
      await runCli(["ca", "rotate-root", "prepare", "--dir", ca, "--root-cert", join(ca, "root.pem"), "--trust-every-ca-under-root"]),
      "E_IMPORT_INVALID",
      /is already in the trust bundle \(it is the current root\): a rotation needs a root the bundle does not hold yet/,
    );
    expect(readFileSync(join(ca, "bundle.pem"), "utf8")).toBe(before.bundle);
    expect(readFileSync(join(ca, "ca.json"), "utf8")).toBe(before.state);
    expect(existsSync(join(ca, "root.next.pem"))).toBe(false);
  });

  // Review finding: node:tls builds no partial chain, so a CA initialised with an intermediate as
  // its "root" made certificates no workload could verify (E_CA_UNTRUSTED at the first `cert issue`).
  it("ca init refuses a --root-cert that is not self-signed, and makes no directory", async () => {
    const pki = join(work, "chain");
    mkdirSync(pki);
    const p = (name: string) => join(pki, name);
    writeFileSync(p("ext.cnf"), ["[req]", "distinguished_name=dn", "[dn]", "[ca]", "basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign", "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid", "[issuer]", "basicConstraints=critical,CA:TRUE,pathlen:0", "keyUsage=critical,keyCertSign,cRLSign", "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid", ""].join("\n"));
    for (const key of ["root", "mid", "issuer"]) execFileSync("openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p(`${key}.key`)]);
    execFileSync("openssl", ["req", "-x509", "-new", "-key", p("root.key"), "-subj", "/O=Example Org/CN=org root", "-days", "30", "-config", p("ext.cnf"), "-extensions", "ca", "-out", p("root.pem")]);
    const sign = (name: string, by: string, extensions: string, subject: string) => {
      execFileSync("openssl", ["req", "-new", "-key", p(`${name}.key`), "-subj", subject, "-config", p("ext.cnf"), "-out", p(`${name}.csr`)]);
      execFileSync("openssl", ["x509", "-req", "-in", p(`${name}.csr`), "-CA", p(`${by}.pem`), "-CAkey", p(`${by}.key`), "-CAcreateserial", "-days", "30", "-extfile", p("ext.cnf"), "-extensions", extensions, "-out", p(`${name}.pem`)]);
    };
    sign("mid", "root", "ca", "/O=Example Org/CN=org intermediate");
    sign("issuer", "mid", "issuer", "/O=Example Org/CN=meshward issuer");
    const dir = join(work, "intermediate-as-root");
    refused(
      await runCli(["ca", "init", "--trust-domain", TD, "--dir", dir, "--root-cert", p("mid.pem"), "--issuer-cert", p("issuer.pem"), "--issuer-key", p("issuer.key"), "--trust-every-ca-under-root"]),
      "E_IMPORT_INVALID",
      /--root-cert must be a self-signed root; O=Example Org, CN=org intermediate is issued by O=Example Org, CN=org root/,
    );
    expect(existsSync(dir)).toBe(false);
    // The same chain with its real root imports (the intermediate follows the issuer).
    writeFileSync(p("issuer-chain.pem"), readFileSync(p("issuer.pem"), "utf8") + readFileSync(p("mid.pem"), "utf8"));
    const good = await runCli(["ca", "init", "--trust-domain", TD, "--dir", join(work, "org-root"), "--root-cert", p("root.pem"), "--issuer-cert", p("issuer-chain.pem"), "--issuer-key", p("issuer.key"), "--trust-every-ca-under-root"]);
    expect(good.code, good.stderr).toBe(0);
  });
});
