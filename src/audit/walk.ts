import { closeSync, lstatSync, openSync, readSync, readdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import { join, sep } from "node:path";
import type { SkippedFile } from "./types.ts";

export const DEFAULT_MAX_FILE_BYTES = 4 * 1024 * 1024;
const IGNORED_DIRECTORIES = new Set([".git", "node_modules", ".hg", ".svn"]);

export interface ReadFile {
  file: string;
  text: string;
  /** Read as this format whatever the name says (rendered output, stdin). */
  format?: "yaml";
  /** The kustomize overlay folder this text was rendered from (`kubectl kustomize DIR`). */
  rendered?: string;
  /** Rendered output: the local source file of each object (by objectKey) and its text, to point findings there. */
  origins?: ReadonlyMap<string, OriginText>;
  /** Only the raw-file rules (private keys) read it: a file of an overlay audited as rendered output. */
  rawOnly?: boolean;
}

/** The source of a rendered object: a file and its text; `untrusted`: why its origin annotation was not taken (file is then the overlay's kustomization). */
export interface OriginText {
  file: string;
  text: string;
  untrusted?: string;
}

export interface WalkResult {
  files: ReadFile[];
  skipped: SkippedFile[];
  /** Binary files (a NUL byte in them) are counted, not listed. */
  binaryFiles: number;
}

/**
 * Collects the text files under `roots` (files or folders, recursively). Symlinks are
 * followed only while they stay inside the root they were found under: a link whose real path
 * leaves that root (to /etc, to a parent folder) is skipped as `outside-root`, never read, so a
 * hostile tree cannot make the audit read (and quote) files it was not given. A link
 * to a folder that encloses it (its real path is one of the folders being
 * walked) is a loop and is reported; a link that aliases a folder scanned elsewhere is not a
 * loop, the folder is simply not read twice; a file reached twice is read once. Files over
 * `maxFileBytes` are skipped and reported, never read; binary files (a NUL byte in the first
 * 8 KiB) are counted; named pipes, sockets and devices are listed as skipped, never opened.
 */
export function walk(roots: readonly string[], maxFileBytes = DEFAULT_MAX_FILE_BYTES): WalkResult {
  const result: WalkResult = { files: [], skipped: [], binaryFiles: 0 };
  const seenDirectories = new Set<string>();
  const seenFiles = new Set<string>();

  const skip = (file: string, reason: SkippedFile["reason"], detail: string): void => {
    result.skipped.push({ file, reason, detail });
  };

  /** Real paths of the folders currently being walked (the ancestors of the path visited). */
  const ancestors: string[] = [];
  /** `root` is the real path of the root being walked; undefined when visiting the root itself. */
  const visit = (path: string, root: string | undefined): void => {
    const isRoot = root === undefined;
    let stats;
    let real: string;
    try {
      const link = lstatSync(path);
      stats = link.isSymbolicLink() ? statSync(path) : link;
      real = realpathSync(path);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ELOOP") skip(path, "symlink-loop", "symbolic link points back at itself");
      else skip(path, "unreadable", code === "ENOENT" ? (isRoot ? "does not exist" : "dangling symbolic link") : String(code ?? error));
      return;
    }
    if (root !== undefined && real !== root && !real.startsWith(root.endsWith(sep) ? root : root + sep)) {
      skip(path, "outside-root", `symbolic link to ${real}, outside ${root}: not followed`);
      return;
    }
    if (stats.isDirectory()) {
      if (ancestors.includes(real)) {
        skip(path, "symlink-loop", `links back to ${real}, a folder that contains it`);
        return;
      }
      // An alias of a folder scanned elsewhere: read once, not reported.
      if (seenDirectories.has(real)) return;
      seenDirectories.add(real);
      let entries: string[];
      try {
        entries = readdirSync(path).sort();
      } catch (error) {
        skip(path, "unreadable", String((error as NodeJS.ErrnoException).code ?? error));
        return;
      }
      ancestors.push(real);
      for (const entry of entries) {
        if (IGNORED_DIRECTORIES.has(entry)) continue;
        visit(join(path, entry), root ?? real);
      }
      ancestors.pop();
      return;
    }
    if (!stats.isFile()) {
      const what = stats.isFIFO() ? "named pipe" : stats.isSocket() ? "socket" : stats.isCharacterDevice() || stats.isBlockDevice() ? "device" : "not a regular file";
      skip(path, "not-regular", `${what}, not read`);
      return;
    }
    if (seenFiles.has(real)) return;
    seenFiles.add(real);
    if (stats.size > maxFileBytes) {
      skip(path, "too-large", `${stats.size} bytes is over the ${maxFileBytes}-byte limit`);
      return;
    }
    const text = readText(path, stats.size);
    if (text === undefined) {
      result.binaryFiles += 1;
      return;
    }
    result.files.push({ file: path, text });
  };

  for (const root of roots) visit(root, undefined);
  return result;
}

function readText(path: string, size: number): string | undefined {
  if (size === 0) return "";
  const probe = Buffer.alloc(Math.min(size, 8192));
  const fd = openSync(path, "r");
  try {
    readSync(fd, probe, 0, probe.length, 0);
  } finally {
    closeSync(fd);
  }
  if (probe.includes(0)) return undefined;
  const buffer = readFileSync(path);
  if (buffer.includes(0)) return undefined;
  return buffer.toString("utf8").replace(/^\uFEFF/, "");
}
