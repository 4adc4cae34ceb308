import { accessSync, constants, mkdirSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { describeError, MeshwardError } from "../errors.ts";

/*
 * Checks of local paths, run before anything is sent to the CA: a local mistake must never
 * spend a single-use join token, and is reported as a MeshwardError, never a stack trace
 * (issue 15, item 4).
 */

/**
 * The directory an identity is written to: missing directories are created with `mode` (0700 by
 * default; parents included), and it must be writable. Returns the absolute path. A caller that
 * hands the files to another user (file owner options) passes a mode that user can traverse.
 */
export function prepareOutDir(dir: string, flag = "--out", mode = 0o700): string {
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
  return path;
}

/**
 * The directory of a unix socket must exist and be writable. It is not created: who may reach
 * the socket is decided by that directory's owner and mode, which the operator chooses.
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
}

function errno(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? describeError(error);
}
