import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { expectRefused, runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { exec } from "../helpers/exec.ts";

/**
 * Review finding (HIGH, /tmp/review-revoke s4): `ca init --root-cert` accepted an organisation root
 * without URI name constraints. Every other CA under that root (a corporate issuing CA) could then
 * sign a leaf for `spiffe://<td>/ns/x/y`, and sidecars and SDK peers admitted it as that workload:
 * OpenSSL accepts any path to a bundle root, and the identity is read from the URI SAN alone. Now
 * `ca init` and `ca rotate-root prepare --root-cert` refuse such a root (E_ROOT_UNCONSTRAINED,
 * nothing written) unless its nameConstraints confine URI names to the trust domain, or the
 * operator accepts the risk with --trust-every-ca-under-root, which ca.json records, `ca status`
 * and the status page show, and `ca serve` warns about at every start. The PKI is made with the
 * openssl CLI; every meshward step is a real process.
 */
const TD = "a.test";
const ADMIN = `spiffe://${TD}/ns/shop/admin`;
const UNCONSTRAINED = /\[E_ROOT_UNCONSTRAINED\]/;

const EXTENSIONS = [
  "[req]", "distinguished_name=dn", "[dn]",
  "[root]", "basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign", "subjectKeyIdentifier=hash",
  "[root-td]", "basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign", "subjectKeyIdentifier=hash", `nameConstraints=critical,permitted;URI:${TD}`,
  "[root-two]", "basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign", "subjectKeyIdentifier=hash", `nameConstraints=critical,permitted;URI:${TD},permitted;URI:b.test`,
  "[mid-td]", "basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign", "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid", `nameConstraints=critical,permitted;URI:${TD}`,
  "[ca]", "basicConstraints=critical,CA:TRUE,pathlen:0", "keyUsage=critical,keyCertSign,cRLSign", "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid",
  "[leaf]", "basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", "extendedKeyUsage=clientAuth,serverAuth", `subjectAltName=URI:${ADMIN}`,
  "",
].join("\n");

// The cases share only the PKI made below (read, never written) and run concurrently, each in its
// own CA directories; their time is CLI processes starting one after another.
describe("importing a root: refused unless it confines identities to the trust domain, or --trust-every-ca-under-root", { timeout: 180_000, concurrent: true }, () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-root-scope-"));
  const p = (name: string) => join(work, name);
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  writeFileSync(p("ext.cnf"), EXTENSIONS);
  const openssl = (args: string[]) => execFileSync("openssl", args, { cwd: work, stdio: ["ignore", "pipe", "pipe"] });
  /** `name`.pem (+ .key) with extension section `section`, signed by `signer` or self-signed. */
  const cert = (name: string, section: string, signer?: string) => {
    openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p(`${name}.key`)]);
    if (signer === undefined) {
      openssl(["req", "-x509", "-new", "-key", p(`${name}.key`), "-subj", `/O=Example Org/CN=${name}`, "-days", "3650", "-config", p("ext.cnf"), "-extensions", section, "-out", p(`${name}.pem`)]);
    } else {
      openssl(["req", "-new", "-key", p(`${name}.key`), "-subj", `/O=Example Org/CN=${name}`, "-config", p("ext.cnf"), "-out", p(`${name}.csr`)]);
      openssl(["x509", "-req", "-in", p(`${name}.csr`), "-CA", p(`${signer}.pem`), "-CAkey", p(`${signer}.key`), "-CAcreateserial", "-days", "365", "-extfile", p("ext.cnf"), "-extensions", section, "-out", p(`${name}.pem`)]);
    }
    return p(`${name}.pem`);
  };
  // The review's s4 PKI: an organisation root with no name constraints signs meshward's issuer and
  // another issuing CA, which signs a leaf claiming an identity of the trust domain.
  cert("org-root", "root");
  cert("meshward-issuer", "ca", "org-root");
  cert("other-issuing-ca", "ca", "org-root");
  cert("forged", "leaf", "other-issuing-ca");
  writeFileSync(p("forged-chain.pem"), readFileSync(p("forged.pem"), "utf8") + readFileSync(p("other-issuing-ca.pem"), "utf8"));
  // A root dedicated to the trust domain, and one of a second dedicated root for a rotation.
  cert("td-root", "root-td");
  cert("td-issuer", "ca", "td-root");
  cert("td-root-2", "root-td");
  cert("td-issuer-2", "ca", "td-root-2");
  // Confined, but not only to this trust domain; and confined below an unconstrained root.
  cert("two-domain-root", "root-two");
  cert("two-domain-issuer", "ca", "two-domain-root");
  cert("mesh-intermediate", "mid-td", "org-root");
  cert("mid-issuer", "ca", "mesh-intermediate");
  writeFileSync(p("mid-issuer-chain.pem"), readFileSync(p("mid-issuer.pem"), "utf8") + readFileSync(p("mesh-intermediate.pem"), "utf8"));

  const fingerprint = (name: string) => new X509Certificate(readFileSync(p(`${name}.pem`))).fingerprint256;
  const init = (dir: string, root: string, issuerChain: string, issuerKey: string, more: string[] = []) =>
    runCli(["ca", "init", "--trust-domain", TD, "--dir", p(dir), "--root-cert", p(`${root}.pem`), "--issuer-cert", p(issuerChain), "--issuer-key", p(`${issuerKey}.key`), ...more]);
  const caState = (dir: string) => JSON.parse(readFileSync(p(`${dir}/ca.json`), "utf8")) as { trustEveryCaUnderRoot?: { rootFingerprint: string; acceptedAt: string }[] };
  const statusJson = async (dir: string) => {
    const r = await runCli(["ca", "status", "--dir", p(dir), "--json"]);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { rootsTrustingEveryCa: { fingerprint256: string; acceptedAt: string | null }[] };
  };
  /** `ca serve` on a free port, stopped by afterAll even when the test fails. */
  const serve = async (dir: string, more: string[] = []) => {
    const ready = more.includes("--status") ? /listening on (\S+) as \S+\nstatus page: (\S+)\n/ : /listening on (\S+) as (\S+)/;
    const server = await startCli(["ca", "serve", "--dir", p(dir), "--listen", "127.0.0.1:0", ...more], ready);
    cleanups.push(() => server.stop());
    return server;
  };
  const rootWarnings = (server: LongRunning) =>
    server
      .stderr()
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as { level: string; event?: string; root?: string; msg: string })
      .filter((line) => line.event === "root-trusts-every-ca");

  it("ca init refuses an organisation root without URI name constraints, says why and both ways out, and writes nothing", async () => {
    // Four independent refusals, run at once; each must leave its directory unwritten.
    const [r, mid, two, stray] = await Promise.all([
      init("refused", "org-root", "meshward-issuer.pem", "meshward-issuer"),
      init("refused-mid", "org-root", "mid-issuer-chain.pem", "mid-issuer"),
      init("refused-two", "two-domain-root", "two-domain-issuer.pem", "two-domain-issuer"),
      runCli(["ca", "init", "--trust-domain", TD, "--dir", p("stray-flag"), "--trust-every-ca-under-root"]),
    ]);
    expectRefused(r, "E_ROOT_UNCONSTRAINED", /--root-cert "O=Example Org, CN=org-root" does not confine identities to spiffe:\/\/a\.test: it has no nameConstraints extension/);
    expect(r.stderr).toMatch(/every CA this root has signed or will sign .* could mint a certificate for any workload of a\.test, and sidecars and SDK peers would accept it/);
    expect(r.stderr).toMatch(/a permitted URI subtree "a\.test"; openssl: nameConstraints=critical,permitted;URI:a\.test/);
    expect(r.stderr).toMatch(/--trust-every-ca-under-root, which ca\.json records/);
    expect(r.stderr).toMatch(/Nothing was written/);
    expect(existsSync(p("refused"))).toBe(false);

    // An intermediate confined to the trust domain does not help: CAs the root signs beside it are free.
    expectRefused(mid, "E_ROOT_UNCONSTRAINED", /"O=Example Org, CN=mesh-intermediate" in the issuer chain is confined to a\.test, but that does not protect the mesh: the bundle holds the root/);
    expect(existsSync(p("refused-mid"))).toBe(false);

    // Constraints that also permit another trust domain's URIs do not confine it to this one.
    expectRefused(two, "E_ROOT_UNCONSTRAINED", /its nameConstraints also permit URI names under "b\.test", not only "a\.test"/);
    expect(existsSync(p("refused-two"))).toBe(false);

    // The flag belongs to an import: a generated root has no other CA under it.
    expectRefused(stray, "E_USAGE", /--trust-every-ca-under-root goes with an imported --root-cert/);
    expect(existsSync(p("stray-flag"))).toBe(false);
  });

  it("ca init accepts a root whose nameConstraints confine URI names to the trust domain: nothing recorded, no warning", async () => {
    const r = await init("td-ca", "td-root", "td-issuer.pem", "td-issuer");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe("");
    expect(caState("td-ca").trustEveryCaUnderRoot).toBeUndefined();
    expect((await statusJson("td-ca")).rootsTrustingEveryCa).toEqual([]);
    const server = await serve("td-ca");
    await server.stop();
    expect(rootWarnings(server)).toEqual([]);

    // Given anyway, the flag changes nothing and says so.
    const flagged = await init("td-ca-flag", "td-root", "td-issuer.pem", "td-issuer", ["--trust-every-ca-under-root"]);
    expect(flagged.code, flagged.stderr).toBe(0);
    expect(flagged.stderr).toMatch(/--trust-every-ca-under-root was not needed: the root's nameConstraints confine identities to spiffe:\/\/a\.test; nothing recorded/);
    expect(caState("td-ca-flag").trustEveryCaUnderRoot).toBeUndefined();
  });

  it("the review's s4 scenario with --trust-every-ca-under-root: recorded, shown, warned at every start, and a sibling CA's leaf is admitted (documented)", async () => {
    const r = await init("org-ca", "org-root", "meshward-issuer.pem", "meshward-issuer", ["--trust-every-ca-under-root"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: root "O=Example Org, CN=org-root" \(.*\) does not confine identities to spiffe:\/\/a\.test: every CA it has signed or will sign can mint certificates for any workload of a\.test/);
    expect(caState("org-ca").trustEveryCaUnderRoot?.map((c) => c.rootFingerprint)).toEqual([fingerprint("org-root")]);
    const status = await runCli(["ca", "status", "--dir", p("org-ca")]);
    expect(status.stdout).toMatch(/does not confine identities to spiffe:\/\/a\.test: every CA under it can mint any of them \(accepted with --trust-every-ca-under-root at /);
    // Times in the CLI's human output are ISO 8601 at whole seconds, as everywhere else.
    expect(status.stdout).toMatch(/accepted with --trust-every-ca-under-root at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)/);
    expect((await statusJson("org-ca")).rootsTrustingEveryCa.map((e) => e.fingerprint256)).toEqual([fingerprint("org-root")]);

    const ca = await serve("org-ca", ["--status", "127.0.0.1:0"]);
    const readyz = JSON.parse((await exec("curl", ["-sS", `${ca.match[2]!.replace(/\/$/, "")}/readyz`])).stdout) as { checks: Record<string, { ok: boolean; detail: string }> };
    expect(readyz.checks["root-scope"]).toMatchObject({ ok: true, detail: expect.stringMatching(/accepted with --trust-every-ca-under-root at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)/) });
    expect(readyz.checks["crl"]?.detail).toMatch(/^signed \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b/);
    const started = ca.stderr().split("\n").filter((line) => line.includes('"event":"ca-started"')).map((line) => JSON.parse(line) as { issuerNotAfter: string });
    expect(started[0]?.issuerNotAfter).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    // The data plane is unchanged: a sidecar of a.test admits the sibling CA's leaf as the identity it claims.
    const app: Server = createServer((req, res) => res.end(`app saw ${req.headers["x-forwarded-client-cert"] ?? ""}`));
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise((resolve) => { app.close(resolve); app.closeAllConnections(); }));
    const token = await runCli(["token", "create", "--dir", p("org-ca"), "--namespace", "shop", "--app-id", "api"]);
    expect(token.code, token.stderr).toBe(0);
    writeFileSync(p("api.token"), `${token.stdout.trim().split("\n").pop()}\n`, { mode: 0o600 });
    const sidecar = await startCli(
      ["sidecar", "--app-id", "api", "--namespace", "shop", "--ca", ca.match[1]!, "--bundle", p("org-ca/bundle.pem"), "--trust-domain", TD, "--token-file", p("api.token"), "--inbound", "127.0.0.1:0", "--app", `127.0.0.1:${(app.address() as AddressInfo).port}`],
      /sidecar ready: .*inbound=(\S+)/,
      { timeoutMs: 60_000 },
    );
    cleanups.push(() => sidecar.stop());
    const forged = await exec("curl", ["-sS", "-k", "--cert", p("forged-chain.pem"), "--key", p("forged.key"), `https://${sidecar.match[1]}/admin`]);
    expect(forged.stdout).toContain(`app saw By=spiffe://${TD}/ns/shop/api;URI=${ADMIN}`);

    // Stopped first, so that all it wrote to stderr has been read.
    await ca.stop();
    const warned = rootWarnings(ca);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ level: "warn", root: fingerprint("org-root") });
    expect(warned[0]!.msg).toMatch(/every CA under it can mint certificates for any workload of a\.test that the mesh accepts/);
    // Every start warns, not only the first.
    const again = await serve("org-ca");
    await again.stop();
    expect(rootWarnings(again)).toHaveLength(1);
  });

  it("rotate-root prepare --root-cert: refuses an unconstrained root (nothing written), records one accepted with the flag, and forgets it at retire", async () => {
    const dir = "rotating";
    expect((await init(dir, "td-root", "td-issuer.pem", "td-issuer")).code).toBe(0);
    const before = { bundle: readFileSync(p(`${dir}/bundle.pem`), "utf8"), state: readFileSync(p(`${dir}/ca.json`), "utf8") };
    const refused = await runCli(["ca", "rotate-root", "prepare", "--dir", p(dir), "--root-cert", p("org-root.pem")]);
    expectRefused(refused, "E_ROOT_UNCONSTRAINED", /the new root \(--root-cert\) "O=Example Org, CN=org-root" does not confine identities to spiffe:\/\/a\.test: it has no nameConstraints extension/);
    expect(refused.stderr).toMatch(UNCONSTRAINED);
    expect(readFileSync(p(`${dir}/bundle.pem`), "utf8")).toBe(before.bundle);
    expect(readFileSync(p(`${dir}/ca.json`), "utf8")).toBe(before.state);
    expect(existsSync(p(`${dir}/root.next.pem`))).toBe(false);
    expectRefused(await runCli(["ca", "rotate-root", "prepare", "--dir", p(dir), "--trust-every-ca-under-root"]), "E_USAGE", /--trust-every-ca-under-root goes with --root-cert/);
    expect(readFileSync(p(`${dir}/ca.json`), "utf8")).toBe(before.state);

    const step = async (args: string[]) => {
      const r = await runCli(["ca", "rotate-root", ...args, "--dir", p(dir)]);
      expect(r.code, r.stderr).toBe(0);
      return r;
    };
    const accepted = await step(["prepare", "--root-cert", p("org-root.pem"), "--trust-every-ca-under-root"]);
    expect(accepted.stderr).toMatch(/warning: root "O=Example Org, CN=org-root" .* does not confine identities to spiffe:\/\/a\.test/);
    expect(caState(dir).trustEveryCaUnderRoot?.map((c) => c.rootFingerprint)).toEqual([fingerprint("org-root")]);
    await step(["activate", "--issuer-cert", p("meshward-issuer.pem"), "--issuer-key", p("meshward-issuer.key")]);
    await step(["retire"]);
    // The organisation root is now the only root: still recorded, still shown.
    expect((await statusJson(dir)).rootsTrustingEveryCa.map((e) => e.fingerprint256)).toEqual([fingerprint("org-root")]);

    // Moving to a root dedicated to the trust domain: once the organisation root is retired, nothing is left recorded.
    await step(["prepare", "--root-cert", p("td-root-2.pem")]);
    await step(["activate", "--issuer-cert", p("td-issuer-2.pem"), "--issuer-key", p("td-issuer-2.key")]);
    expect((await statusJson(dir)).rootsTrustingEveryCa.map((e) => e.fingerprint256)).toEqual([fingerprint("org-root")]);
    await step(["retire"]);
    expect(caState(dir).trustEveryCaUnderRoot).toBeUndefined();
    expect((await statusJson(dir)).rootsTrustingEveryCa).toEqual([]);
  });
});
