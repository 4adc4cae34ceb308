import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pino } from "pino";
import { initAnchors } from "../../src/ca/anchors.ts";
import { startCaServer } from "../../src/ca/server.ts";
import { caConfigSchema } from "../../src/config/ca.ts";
import { checkCaDir, isOnReadOnlyMount, readOnlyMountPoint } from "../../src/util/dir-safety.ts";
import { runCli, startCli } from "../helpers/cli.ts";
import { refusal } from "../helpers/refusal.ts";

/**
 * Red team: the CA directory (`--dir`) holds the root, the trust bundle, the issuer certificate
 * and key, state.json and ca.db. Whoever can write there can swap them, and the CA then signs
 * with their issuer and hands every workload their bundle. Every command that reads or writes
 * it now refuses a directory another user owns or group/others can write (E_CA_DIR_UNSAFE), as
 * --out and the Workload API socket's directory already do (test/identity/out-dir-safety.test.ts),
 * before reading or writing anything. Another owner needs chown: the test machines run as root
 * (said plainly, not skipped).
 */
describe("the CA --dir must be writable by its owner only", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-ca-dir-safety-"));
  const ca = join(work, "ca");
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  beforeAll(async () => {
    const init = await runCli(["ca", "init", "--trust-domain", "dir.test", "--dir", ca]);
    expect(init.code, init.stderr).toBe(0);
  });

  const refusedWith = (r: { code: number | null; stderr: string }, pattern: RegExp) => {
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(pattern);
    expect(r.stderr).toMatch(/\[E_CA_DIR_UNSAFE\]/);
    expect(r.stderr).not.toMatch(/\n\s+at |unexpected error/);
  };

  it("refuses a CA directory others or the group can write, in every command that uses it, naming the fix", async () => {
    expect(process.getuid?.()).toBe(0);
    const before = readdirSync(ca).sort();
    const issuer = readFileSync(join(ca, "issuer.pem"), "utf8");
    for (const mode of [0o777, 0o1777, 0o770]) {
      chmodSync(ca, mode);
      const octal = mode.toString(8).padStart(4, "0");
      // A sticky directory is shared by design: a directory of one's own inside it, not chmod (review newuser M3).
      const advice = mode === 0o1777 ? `mkdir -m 700 ${join(ca, "meshward-ca")}` : `chmod go-w ${ca}`;
      const fix = new RegExp(`--dir ${ca}: the directory ${ca} is writable by group or others \\(mode ${octal}\\).*root, trust bundle, issuer.*${advice}`);
      refusedWith(await runCli(["ca", "serve", "--dir", ca, "--listen", "127.0.0.1:0"]), fix);
    }
    chmodSync(ca, 0o777);
    for (const args of [
      ["ca", "status", "--dir", ca],
      ["ca", "rotate-issuer", "--dir", ca, "--now"],
      ["ca", "rotate-root", "prepare", "--dir", ca],
      ["ca", "import-issuer", "--dir", ca, "--issuer-cert", join(ca, "issuer.pem"), "--issuer-key", join(ca, "issuer.key")],
      ["cert", "list", "--dir", ca],
      ["token", "create", "--dir", ca, "--namespace", "default", "--app-id", "orders"],
    ]) {
      refusedWith(await runCli(args), /writable by group or others \(mode 0777\)/);
    }
    // Nothing was read or written: no rotation happened, no database was touched.
    expect(readdirSync(ca).sort()).toEqual(before);
    expect(readFileSync(join(ca, "issuer.pem"), "utf8")).toBe(issuer);
    chmodSync(ca, 0o700);
  });

  it("refuses a CA directory another user owns (mode 0700 or not)", async () => {
    chownSync(ca, 12345, 12345);
    try {
      refusedWith(await runCli(["ca", "serve", "--dir", ca, "--listen", "127.0.0.1:0"]), new RegExp(`--dir ${ca}: the directory ${ca} is owned by uid 12345, not by this user \\(uid 0\\) or root`));
    } finally {
      chownSync(ca, 0, 0);
    }
  });

  it("ca init refuses an existing directory others can write, before writing anything into it", async () => {
    const shared = join(work, "shared");
    mkdirSync(shared);
    chmodSync(shared, 0o777);
    refusedWith(await runCli(["ca", "init", "--trust-domain", "dir.test", "--dir", shared]), /writable by group or others \(mode 0777\)/);
    expect(readdirSync(shared)).toEqual([]);
    // After chmod 700 the same command works.
    chmodSync(shared, 0o700);
    const init = await runCli(["ca", "init", "--trust-domain", "dir.test", "--dir", shared]);
    expect(init.code, init.stderr).toBe(0);
  });

  it("serves from the directory once it is fixed with chmod 700 (and from a 0755 one)", async () => {
    for (const mode of [0o700, 0o755]) {
      chmodSync(ca, mode);
      const server = await startCli(["ca", "serve", "--dir", ca, "--listen", "127.0.0.1:0"], /meshward CA listening on/);
      expect(await server.stop()).toBe(0);
    }
    chmodSync(ca, 0o700);
  });
});

/**
 * The same check for SDK users: `initAnchors` and `startCaServer` (what `ca init` and `ca serve`
 * run) used to write to and start on any directory, since only the CLI's --dir hook checked it (src/ca may not import src/identity,
 * where the check lived; it is in src/util now, which both import).
 */
describe("initAnchors and startCaServer (the SDK) refuse a CA directory others can write", () => {
  it("E_CA_DIR_UNSAFE before anything is created in it, for group- or world-writable; inits and serves once it is 0700", async () => {
    const work = mkdtempSync(join(tmpdir(), "meshward-ca-dir-sdk-"));
    const dir = join(work, "ca");
    const start = () => startCaServer({ dir, config: caConfigSchema.parse({ listen: "127.0.0.1:0" }), logger: pino({ level: "silent" }) });
    try {
      mkdirSync(dir);
      chmodSync(dir, 0o777);
      const init = () => initAnchors({ dir, trustDomain: "dir.test", now: new Date() });
      const notInitialised = await refusal(init(), "the CA was initialised");
      expect(notInitialised).toMatchObject({ code: "E_CA_DIR_UNSAFE", message: expect.stringMatching(new RegExp(`^initAnchors dir ${dir}: the directory ${dir} is writable by group or others \\(mode 0777\\)`)) });
      expect(readdirSync(dir)).toEqual([]);
      chmodSync(dir, 0o700);
      await init();
      const before = readdirSync(dir).sort();
      for (const mode of [0o777, 0o770]) {
        chmodSync(dir, mode);
        // A server that starts anyway is closed, and the test fails.
        const refused = await refusal(start().then((server) => server.close()), "the CA started");
        expect(refused.code).toBe("E_CA_DIR_UNSAFE");
        expect(refused.message).toMatch(new RegExp(`^startCaServer dir ${dir}: the directory ${dir} is writable by group or others \\(mode 0${mode.toString(8)}\\).*chmod go-w ${dir}`));
        expect(readdirSync(dir).sort()).toEqual(before);
      }
      // Fixed, it serves, and creates its database there (what the refusals above did not).
      chmodSync(dir, 0o700);
      const server = await start();
      await server.close();
      expect(readdirSync(dir)).toContain("ca.db");
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

/**
 * The exception: the Kubernetes HA overlay (deploy/kubernetes/overlays/ha/ca-ha.yaml) mounts the
 * CA directory from a Secret, read-only. The kubelet makes that directory 0777 (a Secret volume
 * is an emptyDir on tmpfs, kubernetes pkg/volume/emptydir/empty_dir.go `perm = 0777`, setgid too
 * with fsGroup), owned by root, and mounts it read-only: nobody in the pod can write it.
 */
describe("a CA directory on a read-only mount (a Kubernetes Secret volume)", () => {
  const mountInfo = [
    "22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w",
    "30 22 0:25 / /etc/meshward/ca ro,relatime - tmpfs tmpfs rw,size=1024k,mode=777",
    "31 22 0:26 / /etc/meshward/ca\\040dir rw,relatime - tmpfs tmpfs rw",
    "32 22 0:27 / /srv/ro-sb rw,relatime - ext4 /dev/sda1 ro",
    "33 22 0:28 / /srv/stacked ro,relatime - tmpfs tmpfs rw",
    "34 22 0:29 / /srv/stacked rw,relatime - tmpfs tmpfs rw",
  ].join("\n");

  it("reads the read-only flag of the mount that holds the path (mount options or super options; the topmost; escapes)", () => {
    expect(isOnReadOnlyMount("/etc/meshward/ca", mountInfo)).toBe(true);
    expect(isOnReadOnlyMount("/etc/meshward/ca/..data", mountInfo)).toBe(true);
    expect(isOnReadOnlyMount("/etc/meshward/ca dir", mountInfo)).toBe(false);
    expect(isOnReadOnlyMount("/etc/meshward/cabinet", mountInfo)).toBe(false);
    expect(isOnReadOnlyMount("/etc/meshward", mountInfo)).toBe(false);
    expect(isOnReadOnlyMount("/srv/ro-sb/x", mountInfo)).toBe(true);
    expect(isOnReadOnlyMount("/srv/stacked", mountInfo)).toBe(false);
    expect(isOnReadOnlyMount("/etc/meshward/ca", undefined)).toBe(false);
    expect(readOnlyMountPoint("/etc/meshward/ca/..data", mountInfo)).toBe("/etc/meshward/ca");
    expect(readOnlyMountPoint("/etc/meshward/ca dir", mountInfo)).toBeUndefined();
  });

  /*
   * The decision with the mount table mocked: a test cannot mount where CAP_SYS_ADMIN is
   * missing (CI containers). The real mount follows when this machine allows it.
   */
  it("accepts a root-owned 0777 directory only when it is itself a read-only mount; the owner rule still holds", () => {
    const work = mkdtempSync(join(tmpdir(), "meshward-ca-dir-ro-"));
    try {
      const dir = join(work, "ca");
      mkdirSync(dir);
      chmodSync(dir, 0o3777);
      const readOnlyAt = (point: string) => () => `22 1 0:21 / / rw - overlay overlay rw\n30 22 0:25 / ${point} ro,relatime - tmpfs tmpfs rw`;
      expect(() => checkCaDir(dir, "--dir", readOnlyAt(dir))).not.toThrow();
      expect(() => checkCaDir(dir, "--dir", readOnlyAt(join(work, "elsewhere")))).toThrow(expect.objectContaining({ code: "E_CA_DIR_UNSAFE" }));
      // Somewhere below a read-only mount is not enough: the directory must be the mount itself.
      expect(() => checkCaDir(dir, "--dir", readOnlyAt(work))).toThrow(expect.objectContaining({ code: "E_CA_DIR_UNSAFE" }));
      expect(() => checkCaDir(dir, "--dir", () => undefined)).toThrow(expect.objectContaining({ code: "E_CA_DIR_UNSAFE" }));
      chownSync(dir, 12345, 12345);
      expect(() => checkCaDir(dir, "--dir", readOnlyAt(dir))).toThrow(expect.objectContaining({ code: "E_CA_DIR_UNSAFE", message: expect.stringMatching(/owned by uid 12345/) }));
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  // A real read-only tmpfs with a 0777 root, as the kubelet makes it. It needs root with
  // CAP_SYS_ADMIN, as the suite has (it installs its Debian peers as root); where mounting is not
  // allowed the test fails and says so rather than skipping.
  it("ca serve starts from a 0777 CA directory on a read-only tmpfs mount, and refuses it once remounted read-write", async () => {
    const work = mkdtempSync(join(tmpdir(), "meshward-ca-dir-mount-"));
    const source = join(work, "source");
    const mounted = join(work, "mounted");
    mkdirSync(mounted);
    let isMounted = false;
    try {
      const init = await runCli(["ca", "init", "--trust-domain", "dir.test", "--dir", source]);
      expect(init.code, init.stderr).toBe(0);
      try {
        execFileSync("mount", ["-t", "tmpfs", "-o", "mode=0777", "tmpfs", mounted], { stdio: "pipe" });
      } catch (error) {
        throw new Error(`this test mounts a tmpfs and needs root with CAP_SYS_ADMIN: ${(error as { stderr?: Buffer }).stderr?.toString().trim() || (error as Error).message}`);
      }
      isMounted = true;
      for (const file of readdirSync(source)) if (!file.startsWith("ca.db")) cpSync(join(source, file), join(mounted, file));
      execFileSync("mount", ["-o", "remount,ro", mounted]);
      const store = `sqlite:${join(work, "ca.db")}`;
      const server = await startCli(["ca", "serve", "--dir", mounted, "--store", store, "--listen", "127.0.0.1:0"], /meshward CA listening on/);
      expect(await server.stop()).toBe(0);
      execFileSync("mount", ["-o", "remount,rw", mounted]);
      refusedWith(await runCli(["ca", "serve", "--dir", mounted, "--store", store, "--listen", "127.0.0.1:0"]));
    } finally {
      if (isMounted) execFileSync("umount", [mounted]);
      rmSync(work, { recursive: true, force: true });
    }
  });

  const refusedWith = (r: { code: number | null; stderr: string }) => {
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/writable by group or others \(mode 0777\).*\[E_CA_DIR_UNSAFE\]/);
  };
});
