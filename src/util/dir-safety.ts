import { existsSync, lstatSync, readFileSync, realpathSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { MeshwardError } from "../errors.ts";

/*
 * Directories that must be writable by their owner only, and the CA directory's check. Here in
 * util/ rather than identity/ because the CA (src/ca) runs the CA directory check too, when an SDK
 * user calls startCaServer without the CLI, and ca/ may not import identity/ (the layering in DESIGN.md).
 */

/**
 * Refuses `path` when someone other than this user, root or `trustedUid` owns it, or when group
 * or others can write it (a sticky bit does not help: a file planted first stays). `risk` says
 * what they could do, `own` what a safe directory looks like, `subdir` the name of a directory
 * of one's own to create in a shared one. `readOnlyMount` waives the mode rule (never the owner
 * rule) for a directory that is itself a read-only mount.
 */
export function assertNoOtherWriter(path: string, what: string, code: `E_${string}`, risk: string, own: string, trustedUid?: number, readOnlyMount = false, subdir: { name: string; mode: string } = { name: "meshward", mode: "700" }): void {
  const stats = statSync(path);
  const uid = process.getuid?.();
  if (uid !== undefined && stats.uid !== uid && stats.uid !== 0 && stats.uid !== trustedUid) {
    throw new MeshwardError(
      code,
      `${what}: the directory ${path} is owned by uid ${stats.uid}, not by this user (uid ${uid}) or root; its owner could ${risk}. Use a directory of your own (${own})`,
      { details: { path, uid: stats.uid } },
    );
  }
  const mode = stats.mode & 0o7777;
  if ((mode & 0o022) !== 0 && !readOnlyMount) {
    const octal = mode.toString(8).padStart(4, "0");
    if (isSharedDirectory(path, mode, stats.uid, uid)) {
      // chmod go-w on /tmp (the advice until the new-user review, M3) breaks every program that
      // uses it; the fix is a directory of one's own inside it.
      const mine = join(path, subdir.name);
      throw new MeshwardError(
        code,
        `${what}: the directory ${path} is writable by group or others (mode ${octal}), as a shared directory is meant to be; they could ${risk}. Do not change its mode (other programs rely on it): make a directory of your own in it and give that instead, e.g. mkdir -m ${subdir.mode} ${mine}`,
        { details: { path, mode } },
      );
    }
    throw new MeshwardError(
      code,
      `${what}: the directory ${path} is writable by group or others (mode ${octal}); they could ${risk}. Fix it with: chmod go-w ${path} (or use a directory of your own, ${own})`,
      { details: { path, mode } },
    );
  }
}

/** Shared places whose mode is part of the system, whoever runs meshward (root included). */
const SHARED_SYSTEM_DIRECTORIES = new Set(["/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/var/mail", "/var/spool/mail", "/var/crash"]);

/**
 * Whether a group- or world-writable directory is shared by design, so that `chmod go-w` would
 * break other programs rather than fix anything: a sticky one (mode 1777, as /tmp), one this user
 * does not own (then the chmod is not theirs to make), a known system directory, or the root
 * directory or one directly under it. Only a directory of the user's own that is none of these
 * gets the chmod advice.
 */
function isSharedDirectory(path: string, mode: number, owner: number, uid: number | undefined): boolean {
  if ((mode & 0o1000) !== 0) return true;
  if (uid !== undefined && owner !== uid) return true;
  let real = resolve(path);
  try {
    real = realpathSync(path);
  } catch {
    // keep the resolved path
  }
  return SHARED_SYSTEM_DIRECTORIES.has(real) || dirname(real) === "/" || real === "/";
}

/**
 * Refuses `realPath` (symbolic links resolved) when someone other than this user or root could
 * rename it, or a directory above it, and put a link to a directory of their choosing in its
 * place: every parent must be this user's or root's and writable by no one else, unless it has
 * the sticky bit (as /tmp), which keeps others from renaming an entry this user or root owns.
 * OpenSSH's secure_path checks the same. Paths are used as resolved afterwards, so a symbolic
 * link on the way, which its owner could repoint, is followed only once.
 */
export function assertNoOtherRenamer(realPath: string, what: string, code: `E_${string}`, risk: string): void {
  const uid = process.getuid?.();
  if (uid === undefined) return;
  const trusted = (owner: number) => owner === uid || owner === 0;
  for (let child = realPath, parent = dirname(realPath); child !== parent; child = parent, parent = dirname(parent)) {
    const stats = statSync(parent);
    const mode = stats.mode & 0o7777;
    const sticky = (mode & 0o1000) !== 0 && trusted(lstatSync(child).uid);
    if (trusted(stats.uid) && ((mode & 0o022) === 0 || sticky)) continue;
    const why = trusted(stats.uid) ? `is writable by group or others (mode ${mode.toString(8).padStart(4, "0")})` : `is owned by uid ${stats.uid}`;
    throw new MeshwardError(
      code,
      `${what}: ${parent}, a parent of ${realPath}, ${why}: whoever can write it could move ${child} away and put a link to a directory of theirs in its place, then ${risk}. Use a directory whose parents only root or this user (uid ${uid}) can change (e.g. under /run/meshward or this user's home)`,
      { details: { path: realPath, parent, uid: stats.uid, mode } },
    );
  }
}

/**
 * Refuses a path that, as given (`resolve(path)`, before any link is followed), passes through a
 * symbolic link owned by neither this user nor root: whoever owns the link can point it at a
 * directory of their choosing — a link planted in /tmp by another user sends files written
 * "into /tmp/NAME" into any directory of root's. This is what the kernel's
 * fs.protected_symlinks=1 enforces in sticky shared directories, checked here because hosts
 * set it to 0 (review files MEDIUM-2). Components are read with lstat from the root down; a
 * missing one ends the walk (nothing below it exists yet).
 */
export function assertNoForeignLink(path: string, what: string, code: `E_${string}`, risk: string): void {
  const uid = process.getuid?.();
  if (uid === undefined) return;
  const given = resolve(path);
  const parts = given.split("/").filter((part) => part !== "");
  let current = "";
  for (const part of parts) {
    current = `${current}/${part}`;
    let stats;
    try {
      stats = lstatSync(current);
    } catch {
      return;
    }
    if (!stats.isSymbolicLink() || stats.uid === uid || stats.uid === 0) continue;
    throw new MeshwardError(
      code,
      `${what}: ${current} is a symbolic link owned by uid ${stats.uid}, not by this user (uid ${uid}) or root: its owner could point it at a directory of their choosing, then ${risk}. Give the real directory, or a link of your own`,
      { details: { path: given, link: current, uid: stats.uid } },
    );
  }
}

/**
 * Both checks of the path as given, before its real path is checked (review files MEDIUM-2): no
 * link on the way owned by another user (assertNoForeignLink), and no one else able to rename
 * the entry the path names or a directory above it (assertNoOtherRenamer on the lexical path: a
 * link owned by another user in a sticky directory such as /tmp is not covered by the sticky
 * exception).
 */
export function assertGivenPathSafe(path: string, what: string, code: `E_${string}`, risk: string): void {
  assertNoForeignLink(path, what, code, risk);
  assertNoOtherRenamer(resolve(path), what, code, risk);
}

/**
 * The CA directory (`ca init|serve|status|rotate-*|import-*|migrate-store`, `cert`, `token`
 * --dir, and `startCaServer`'s `dir` for SDK users): whoever can write there can swap the root, the trust bundle, the issuer certificate
 * and key, or ca.db, and the CA then signs for them or hands out their bundle. So it must be
 * this user's or root's and writable by no one else (E_CA_DIR_UNSAFE), checked before anything
 * in it is read or written. A missing directory passes (`ca init` creates it 0700; the other
 * commands report it missing).
 *
 * One exception, narrow: a directory that is itself the mount point of a read-only mount, as the
 * Kubernetes HA overlay mounts the CA's Secret volume. The kubelet makes a Secret volume's
 * directory 0777 (an emptyDir on tmpfs, kubernetes pkg/volume/emptydir/empty_dir.go `perm`; with
 * fsGroup also setgid) and mounts it read-only into the container, so nobody in the pod can
 * write it whatever its mode (and making a mount takes root). A directory merely somewhere
 * below a read-only mount is not excepted. The owner rule still holds (the kubelet makes it root's).
 */
export function checkCaDir(dir: string, flag = "--dir", mountInfo: () => string | undefined = readMountInfo): void {
  const path = resolve(dir);
  if (!existsSync(path) || !statSync(path).isDirectory()) return;
  assertNoForeignLink(path, `${flag} ${dir}`, "E_CA_DIR_UNSAFE", "have the CA load a root, issuer key and ca.db of theirs");
  const real = realpathSync(path);
  const readOnly = readOnlyMountPoint(real, mountInfo()) === real;
  assertNoOtherWriter(path, `${flag} ${dir}`, "E_CA_DIR_UNSAFE", "replace the root, trust bundle, issuer certificate and key or ca.db the CA loads, and have it sign for them", "owned by the user the CA runs as, mode 0700", undefined, readOnly, { name: "meshward-ca", mode: "700" });
}

function readMountInfo(): string | undefined {
  try {
    return readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return undefined; // not Linux: no exception, the mode rule applies
  }
}

/** Whether `realPath` lies on a read-only mount (see readOnlyMountPoint). */
export function isOnReadOnlyMount(realPath: string, mountInfo: string | undefined): boolean {
  return readOnlyMountPoint(realPath, mountInfo) !== undefined;
}

/**
 * The mount point of the read-only mount `realPath` lies on, or undefined, from
 * /proc/self/mountinfo (proc(5)): the mount whose mount point (field 5, octal escapes) is the
 * longest prefix of the path, the last one listed when several share it (the topmost);
 * read-only when its mount options (field 6) or its super options (after the "-" separator)
 * hold `ro`. Unknown (no mountinfo) means writable.
 */
export function readOnlyMountPoint(realPath: string, mountInfo: string | undefined): string | undefined {
  if (mountInfo === undefined) return undefined;
  let best: { point: string; readOnly: boolean } | undefined;
  for (const line of mountInfo.split("\n")) {
    const fields = line.split(" ");
    const separator = fields.indexOf("-");
    if (fields.length < 7 || separator < 6) continue;
    const point = fields[4]!.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
    const inside = point === "/" || realPath === point || realPath.startsWith(`${point}/`);
    if (!inside || (best !== undefined && point.length < best.point.length)) continue;
    const options = [...fields[5]!.split(","), ...(fields[separator + 3] ?? "").split(",")];
    best = { point, readOnly: options.includes("ro") };
  }
  return best?.readOnly === true ? best.point : undefined;
}
