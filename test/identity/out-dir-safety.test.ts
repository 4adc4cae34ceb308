import { chmodSync, chownSync, copyFileSync, lchownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFileSink } from "../../src/identity/file-sink.ts";
import { checkSocketDir, prepareOutDir } from "../../src/identity/local-paths.ts";
import { startWorkloadApiServer } from "../../src/identity/workload-api/index.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { createTestPki, manualIdentitySource } from "../helpers/test-pki.ts";

/** A directory under `work` with `mode`, owned by `owner` (uid and gid) when given. */
function makeDir(work: string, name: string, mode: number, owner?: number): string {
  const path = join(work, name);
  mkdirSync(path);
  if (owner !== undefined) chownSync(path, owner, owner);
  chmodSync(path, mode);
  return path;
}

/**
 * Red team: the directory that receives cert.pem and key.pem, when another local user can write
 * into it. Whoever can write there can replace the files the TLS server loads, and can plant a
 * certificate and key of their own that `identity --out` / `sidecar --out` then renews at
 * startup ("a valid certificate left here by an earlier run renews the identity"): the
 * workload silently runs as the planter's identity. A sticky bit (/tmp) does not help: a file
 * planted before the first run stays, and cannot be replaced. OpenSSH's StrictModes refuses
 * group- or world-writable directories and directories of other users for the same reason
 * (openssh-portable auth.c, auth_secure_path). Other owners need chown: these cases need root
 * (the test machines run as root; said plainly, not skipped).
 */
describe("the --out directory must be writable by its owner only", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-out-safety-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const dir = (name: string, mode: number, owner?: number) => makeDir(work, name, mode, owner);

  it("refuses a directory others or the group can write (sticky or not), or that another user owns, naming the fix", () => {
    expect(process.getuid?.()).toBe(0);
    for (const [name, mode] of [["world", 0o777], ["sticky", 0o1777], ["group", 0o770], ["world-no-read", 0o733]] as const) {
      const path = dir(name, mode);
      // A sticky directory is shared by design: a directory of one's own inside it, not chmod (review newuser M3).
      const advice = mode === 0o1777 ? `mkdir -m 700 ${join(path, "meshward-out")}` : `chmod go-w ${path}`;
      expect(() => prepareOutDir(path)).toThrow(expect.objectContaining({ code: "E_OUT_DIR_UNSAFE", message: expect.stringMatching(new RegExp(`--out ${path}: .*writable by (group|others).*${advice}`)) }));
    }
    const foreign = dir("foreign", 0o700, 12345);
    expect(() => prepareOutDir(foreign)).toThrow(expect.objectContaining({ code: "E_OUT_DIR_UNSAFE", message: expect.stringMatching(/owned by uid 12345.*not by this user \(uid 0\) or root/) }));
    // A symlink is judged by the directory it leads to.
    const link = join(work, "link-to-foreign");
    symlinkSync(foreign, link);
    expect(() => prepareOutDir(link)).toThrow(expect.objectContaining({ code: "E_OUT_DIR_UNSAFE" }));
    // The SDK's file sink checks the same.
    expect(() => startFileSink({ source: manualIdentitySource(), dir: join(work, "world") })).toThrow(expect.objectContaining({ code: "E_OUT_DIR_UNSAFE" }));
  });

  it("accepts its own 0700 and 0755 directories, creates missing ones 0700, and accepts one of the user the files are given to", () => {
    expect(prepareOutDir(dir("own-0700", 0o700))).toBe(join(work, "own-0700"));
    // identity --owner postgres into a directory postgres owns: that user gets the files anyway.
    const servers = dir("files-owner", 0o755, 23456);
    expect(prepareOutDir(servers, "--out", 0o755, 23456)).toBe(servers);
    expect(() => prepareOutDir(servers, "--out", 0o755, 34567)).toThrow(expect.objectContaining({ code: "E_OUT_DIR_UNSAFE" }));
    expect(() => startFileSink({ source: manualIdentitySource(), dir: servers, owner: { uid: 23456, gid: 23456 } }).close()).not.toThrow();
    expect(prepareOutDir(dir("own-0755", 0o755))).toBe(join(work, "own-0755"));
    expect(prepareOutDir(join(work, "new", "files"))).toBe(join(work, "new", "files"));
  });
});

/**
 * Red team (stop 32 review): the parents of the --out directory. The --owner user owns its home
 * (like /var/lib/postgresql); meshward, as root, writes into <home>/tls. Once the final directory
 * passed, that user moved it away and put a link to another service's identity directory in its
 * place: the next rotation wrote cert.pem, key.pem and bundle.pem there, chowned to that user, who
 * then replaced that service's bundle.pem. And a link to --out that its owner could repoint was
 * followed at every write. Now every parent must be root's or this user's and writable by no one
 * else (sticky, as /tmp, is fine for an entry this user owns), and the files are written under
 * the real path resolved once (OpenSSH's secure_path checks the same parents).
 */
describe("the --out directory's parents must be this user's or root's", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-out-parents-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const OWNER = 23457;

  it("refuses an --out whose parent the files' owner (or anyone else) owns or may write, naming the parent; a root-owned parent is fine", () => {
    expect(process.getuid?.()).toBe(0);
    const home = makeDir(work, "pghome", 0o755, OWNER);
    const out = makeDir(home, "tls", 0o700, OWNER);
    expect(() => prepareOutDir(out, "--out", 0o755, OWNER)).toThrow(
      expect.objectContaining({ code: "E_OUT_DIR_UNSAFE", message: expect.stringMatching(new RegExp(`--out ${out}: ${home}, a parent of ${out}, is owned by uid ${OWNER}: whoever can write it could move ${out} away`)) }),
    );
    expect(() => startFileSink({ source: manualIdentitySource(), dir: out, owner: { uid: OWNER, gid: OWNER } })).toThrow(expect.objectContaining({ code: "E_OUT_DIR_UNSAFE" }));
    const shared = makeDir(work, "shared", 0o777);
    const inShared = makeDir(shared, "tls", 0o700);
    expect(() => prepareOutDir(inShared)).toThrow(expect.objectContaining({ code: "E_OUT_DIR_UNSAFE", message: expect.stringMatching(/shared, a parent of .*, is writable by group or others \(mode 0777\)/) }));
    // Control: the same layout under a root-owned parent (as /run/meshward/postgres), and a
    // directory of this user's in a sticky world-writable one (as /tmp: work itself).
    const run = makeDir(work, "run", 0o755);
    const served = makeDir(run, "postgres", 0o755, OWNER);
    expect(prepareOutDir(served, "--out", 0o755, OWNER)).toBe(served);
    const sticky = makeDir(work, "sticky-parent", 0o1777);
    expect(prepareOutDir(makeDir(sticky, "mine", 0o700))).toBe(join(sticky, "mine"));
    const theirs = makeDir(sticky, "theirs", 0o755, OWNER);
    expect(() => prepareOutDir(theirs, "--out", 0o755, OWNER)).toThrow(expect.objectContaining({ code: "E_OUT_DIR_UNSAFE", message: expect.stringMatching(/sticky-parent, a parent of/) }));
  });

  it("writes under the real path: repointing a link to --out after the start changes nothing", async () => {
    const pki = await createTestPki();
    const real = makeDir(work, "real-out", 0o700);
    const elsewhere = makeDir(work, "elsewhere", 0o700);
    const link = join(work, "out-link");
    symlinkSync(real, link);
    expect(prepareOutDir(link)).toBe(real);
    const source = manualIdentitySource(pki.snapshot());
    const sink = startFileSink({ source, dir: link });
    try {
      await sink.ready();
      rmSync(link);
      symlinkSync(elsewhere, link);
      source.rotate(pki.snapshot());
      await sink.idle();
      expect(readFileSync(join(real, "cert.pem"), "utf8")).toBe(source.current()!.svid.certChainPem);
      expect(() => readFileSync(join(elsewhere, "key.pem"))).toThrow(/ENOENT/);
    } finally {
      await sink.close();
    }
  });

  it("refuses a Workload API socket whose directory's parent another user owns", () => {
    const parent = makeDir(work, "sock-parent", 0o755, OWNER);
    const socket = join(makeDir(parent, "sock", 0o755), "api.sock");
    expect(() => checkSocketDir(socket, "--workload-api-socket")).toThrow(expect.objectContaining({ code: "E_SOCKET_DIR_UNSAFE", message: expect.stringMatching(/sock-parent, a parent of .*is owned by uid 23457.*bind its own socket/) }));
  });
});

/**
 * Red team: the directory of the Workload API socket. Whoever can write there can rename
 * meshward's socket away and bind their own at its path (or bind it while meshward is
 * restarting, sticky bit or not), and every workload that connects then takes their SVID and,
 * worse, their trust bundle. So the directory must be this user's or root's and writable by no
 * one else; who may connect is still decided by the socket's mode and the directory's
 * read/search bits.
 */
describe("the Workload API socket's directory must be writable by its owner only", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-socket-safety-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const dir = (name: string, mode: number, owner?: number) => makeDir(work, name, mode, owner);

  it("refuses a directory others or the group can write, or another user's; accepts its own 0755 one", async () => {
    expect(process.getuid?.()).toBe(0);
    for (const [name, mode] of [["world", 0o777], ["sticky", 0o1777], ["group", 0o775]] as const) {
      const socket = join(dir(name, mode), "api.sock");
      const advice = mode === 0o1777 ? /mkdir -m 755 .*sticky\/meshward-sock/ : /chmod go-w/;
      expect(() => checkSocketDir(socket, "--workload-api-socket")).toThrow(expect.objectContaining({ code: "E_SOCKET_DIR_UNSAFE", message: expect.stringMatching(new RegExp(`--workload-api-socket .*api\\.sock: .*writable by group or others.*bind its own socket.*${advice.source}`)) }));
    }
    const foreign = join(dir("foreign", 0o755, 12345), "api.sock");
    expect(() => checkSocketDir(foreign, "--workload-api-socket")).toThrow(expect.objectContaining({ code: "E_SOCKET_DIR_UNSAFE", message: expect.stringMatching(/owned by uid 12345/) }));
    // The SDK's server checks the same before it binds.
    const refused = await startWorkloadApiServer({ socketPath: join(work, "world", "sdk.sock"), source: manualIdentitySource() }).catch((error: unknown) => error);
    expect(refused).toMatchObject({ code: "E_SOCKET_DIR_UNSAFE" });

    const own = join(dir("own", 0o755), "api.sock");
    expect(() => checkSocketDir(own, "--workload-api-socket")).not.toThrow();
    const server = await startWorkloadApiServer({ socketPath: own, source: manualIdentitySource() });
    await server.close();
  });

  it("meshward identity refuses such a directory before the CA is contacted, without a stack trace", async () => {
    const shared = dir("cli-shared", 0o777);
    // The CA address is never dialled: the local check comes first (the token is not spent).
    const bundle = join(work, "bundle.pem");
    writeFileSync(bundle, (await createTestPki()).rootPem);
    const r = await runCli(["identity", "--ca", "127.0.0.1:9", "--bundle", bundle, "--token", "mwjt_unused", "--workload-api-socket", join(shared, "api.sock")], { timeoutMs: 15_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/meshward: --workload-api-socket .*cli-shared\/api\.sock: the directory .* is writable by group or others \(mode 0777\).*\[E_SOCKET_DIR_UNSAFE\]/);
    expect(r.stderr).not.toMatch(/\n\s+at |unexpected error/);
  });
});

describe("meshward identity --out: a certificate planted in a world-writable directory is not renewed (real processes)", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-out-plant-"));
  const caDir = join(work, "ca");
  const bundle = join(caDir, "bundle.pem");
  const running: LongRunning[] = [];
  let caAddress: string;

  beforeAll(async () => {
    expect((await runCli(["ca", "init", "--trust-domain", "plant.test", "--dir", caDir])).code).toBe(0);
    const ca = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0"], /listening on (\S+)/);
    running.push(ca);
    caAddress = ca.match[1] as string;
  }, 60_000);
  afterAll(async () => {
    for (const p of running.reverse()) await p.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("refuses to start (E_OUT_DIR_UNSAFE, no stack trace); after chmod 700 it starts", async () => {
    // Mallory, another local user, holds a certificate of her own and plants it in the shared directory.
    const token = (await runCli(["token", "create", "--dir", caDir, "--namespace", "jobs", "--app-id", "mallory"])).stdout.trim().split("\n").pop() as string;
    const mallory = join(work, "mallory");
    const issued = await runCli(["cert", "issue", "--ca", caAddress, "--bundle", bundle, "--token", token, "--out", mallory]);
    expect(issued.code, issued.stderr).toBe(0);
    const shared = join(work, "shared");
    mkdirSync(shared);
    chmodSync(shared, 0o777);
    for (const file of ["cert.pem", "key.pem"]) copyFileSync(join(mallory, file), join(shared, file));

    // The workload restarts without a token, relying on its files.
    const refused = await runCli(["identity", "--ca", caAddress, "--bundle", bundle, "--out", shared], { timeoutMs: 20_000 });
    expect(refused.stdout).not.toMatch(/identity ready/);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/meshward: --out .*shared: .*writable by group or others \(mode 0777\).*chmod go-w .*\[E_OUT_DIR_UNSAFE\]/);
    expect(refused.stderr).not.toMatch(/\n\s+at |unexpected error/);
    // cert issue checks the same, before the CA is asked (the token is not spent).
    const issueRefused = await runCli(["cert", "issue", "--ca", caAddress, "--bundle", bundle, "--token", token, "--out", shared]);
    expect(issueRefused.code).toBe(1);
    expect(issueRefused.stderr).toMatch(/\[E_OUT_DIR_UNSAFE\]/);
    expect(readFileSync(join(shared, "cert.pem"), "utf8")).toBe(readFileSync(join(mallory, "cert.pem"), "utf8"));

    chmodSync(shared, 0o700);
    const started = await startCli(["identity", "--ca", caAddress, "--bundle", bundle, "--out", shared], /identity ready: (\S+)/);
    running.push(started);
    expect(started.match[1]).toBe("spiffe://plant.test/ns/jobs/mallory");
    expect(await started.stop()).toBe(0);
  }, 60_000);
});

/**
 * Red team (review files MEDIUM-2): another local user (nobody, uid 65534) plants a symbolic link
 * in a sticky shared directory (as /tmp) pointing at a directory of root's that holds another
 * service's key. With fs.protected_symlinks=0 (a host-global sysctl, 0 on some hosts) the kernel
 * follows it, and `cert issue --out /tmp/NAME` replaced that key. The path as given is now
 * checked: a link owned by neither this user nor root is refused before anything is written or
 * the CA is asked. Giving a link to another uid needs root (lchown): the test machines run as
 * root, and the first assertion says so rather than skipping.
 */
describe("a symbolic link owned by another user on the way to --out, the socket directory or --dir is refused (real processes)", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-foreign-link-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const NOBODY = 65534;

  it("cert issue, identity --out, --workload-api-socket and ca status --dir refuse it; the victim's key is untouched; a link of root's is still followed", async () => {
    expect(process.getuid?.(), "lchown to uid 65534 needs root: run as root (the tests' container does)").toBe(0);
    const shared = makeDir(work, "tmp", 0o1777);
    const victim = makeDir(work, "victim-tls", 0o700);
    writeFileSync(join(victim, "key.pem"), "PRECIOUS key of another service\n", { mode: 0o600 });
    const link = join(shared, "meshward-out");
    symlinkSync(victim, link);
    lchownSync(link, NOBODY, NOBODY);
    const bundle = join(work, "bundle.pem");
    writeFileSync(bundle, (await createTestPki()).rootPem);
    // The CA address is never dialled: the local checks come first (the token is not spent).
    const base = ["--ca", "127.0.0.1:9", "--bundle", bundle, "--token", "mwjt_unused", "--namespace", "ns1", "--app-id", "app1"];
    const runs = [
      { args: ["cert", "issue", ...base, "--out", link], code: "E_OUT_DIR_UNSAFE", flag: `--out ${link}` },
      { args: ["identity", ...base, "--out", link], code: "E_OUT_DIR_UNSAFE", flag: `--out ${link}` },
      { args: ["identity", ...base, "--workload-api-socket", join(link, "api.sock")], code: "E_SOCKET_DIR_UNSAFE", flag: `--workload-api-socket ${join(link, "api.sock")}` },
      { args: ["ca", "status", "--dir", link], code: "E_CA_DIR_UNSAFE", flag: `--dir ${link}` },
    ];
    for (const run of runs) {
      const r = await runCli(run.args, { timeoutMs: 20_000 });
      expect(r.code, `${run.args.join(" ")}\n${r.stderr}`).toBe(1);
      expect(r.stderr).toContain(`meshward: ${run.flag}: ${link} is a symbolic link owned by uid ${NOBODY}, not by this user (uid 0) or root`);
      expect(r.stderr).toContain(`[${run.code}]`);
      expect(r.stderr).not.toMatch(/\n\s+at |unexpected error/);
    }
    expect(readdirSync(victim)).toEqual(["key.pem"]);
    expect(readFileSync(join(victim, "key.pem"), "utf8")).toBe("PRECIOUS key of another service\n");
    // The SDK's file sink checks the same.
    expect(() => startFileSink({ source: manualIdentitySource(), dir: link })).toThrow(expect.objectContaining({ code: "E_OUT_DIR_UNSAFE" }));
    // Control: the same link, root's, is followed (the check is about who owns it).
    lchownSync(link, 0, 0);
    expect(prepareOutDir(link)).toBe(victim);
    expect(() => checkSocketDir(join(link, "api.sock"), "--workload-api-socket")).not.toThrow();
  }, 90_000);
});
