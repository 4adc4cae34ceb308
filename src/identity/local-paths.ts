import { accessSync, constants, existsSync, mkdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { describeError, MeshwardError } from "../errors.ts";

/*
 * Checks of local paths, run before anything is sent to the CA: a local mistake must never
 * spend a single-use join token, and is reported as a MeshwardError, never a stack trace
 * (issue 15, item 4).
 */

/**
 * The directory an identity is written to: missing directories are created with `mode` (0700 by
 * default; parents included), and it must be writable by this user and by no one else (see
 * `assertOwnDirectory`). Returns the absolute path. A caller that hands the files to another
 * user (file owner options) passes a mode that user can traverse, and that user's uid as
 * `filesOwner`: a directory of theirs is accepted, since they own the files anyway.
 */
export function prepareOutDir(dir: string, flag = "--out", mode = 0o700, filesOwner?: number): string {
  const path = resolve(dir);
  try {
    mkdirSync(path, { recursive: true, mode });
  } catch (error) {
    throw new MeshwardError("E_OUT_DIR", `${flag} ${dir}: cannot create the directory (${errno(error)}); create it, writable by this user, or choose another`);
  }
  if (!statSync(path).isDirectory()) throw new MeshwardError("E_OUT_DIR", `${flag} ${dir}: not a directory`);
  try {
    accessSync(path, constants.W_OK | constants.X_OK);
  } catch (error) {
    throw new MeshwardError("E_OUT_DIR", `${flag} ${dir}: not writable by this user (${errno(error)})`);
  }
  assertOwnDirectory(path, `${flag} ${dir}`, filesOwner);
  return path;
}

/**
 * Refuses a directory that someone other than this user (or root, or `filesOwner`, who gets
 * the files anyway) can write into: that person could replace the files a server loads — a
 * trust bundle of theirs lets them in as any identity — or plant a certificate and key that a
 * restart renews (resume), so the workload would run as another identity. A sticky bit does not
 * help (a file planted first stays). OpenSSH's StrictModes refuses such directories for the
 * same reason. A symlink is judged by the directory it leads to.
 */
export function assertOwnDirectory(path: string, what: string, filesOwner?: number): void {
  assertNoOtherWriter(path, what, "E_OUT_DIR_UNSAFE", "replace the trust bundle, certificate or key written there, or plant a certificate this process would renew at its next start", "created 0700", filesOwner);
}

function assertNoOtherWriter(path: string, what: string, code: `E_${string}`, risk: string, own: string, trustedUid?: number, readOnlyMount = false): void {
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
    throw new MeshwardError(
      code,
      `${what}: the directory ${path} is writable by group or others (mode ${mode.toString(8).padStart(4, "0")}); they could ${risk}. Fix it with: chmod go-w ${path} (or use a directory of your own, ${own})`,
      { details: { path, mode } },
    );
  }
}

/**
 * The directory of a unix socket must exist, be writable, and be writable by no one else
 * (owned by this user or root, no group/other write bit, sticky or not): whoever can write there
 * can rename the socket away, or bind while this process restarts, and serve workloads their own
 * SVID and trust bundle. It is not created: who may reach the socket is decided by that
 * directory's owner and mode, which the operator chooses.
 */
export function checkSocketDir(socketPath: string, flag: string): void {
  const dir = dirname(resolve(socketPath));
  let isDirectory: boolean;
  try {
    isDirectory = statSync(dir).isDirectory();
  } catch (error) {
    throw new MeshwardError("E_SOCKET_DIR", `${flag} ${socketPath}: the directory ${dir} does not exist (${errno(error)}); create it with the owner and mode that decide who may connect, e.g. install -d -m 0755 ${dir}`);
  }
  if (!isDirectory) throw new MeshwardError("E_SOCKET_DIR", `${flag} ${socketPath}: ${dir} is not a directory`);
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (error) {
    throw new MeshwardError("E_SOCKET_DIR", `${flag} ${socketPath}: the directory ${dir} is not writable by this user (${errno(error)})`);
  }
  assertNoOtherWriter(dir, `${flag} ${socketPath}`, "E_SOCKET_DIR_UNSAFE", "bind its own socket there and hand workloads another SVID and trust bundle", `e.g. install -d -m 0755 ${dir}`);
}

/**
 * The CA directory (`ca init|serve|status|rotate-*|import-*|migrate-store`, `cert`, `token`
 * --dir): whoever can write there can swap the root, the trust bundle, the issuer certificate
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
  const real = realpathSync(path);
  const readOnly = readOnlyMountPoint(real, mountInfo()) === real;
  assertNoOtherWriter(path, `${flag} ${dir}`, "E_CA_DIR_UNSAFE", "replace the root, trust bundle, issuer certificate and key or ca.db the CA loads, and have it sign for them", "owned by the user the CA runs as, mode 0700", undefined, readOnly);
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

function errno(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? describeError(error);
}
