import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from "node:fs";
import { open } from "node:fs/promises";
import { MeshwardError } from "../errors.ts";

/*
 * The one reader for small files a user names (flags, config fields): PEM, configs, policies,
 * tokens, passphrases (review files LOW-3). readFileSync read whatever the path named, whole:
 * /dev/zero grew memory without bound, and a FIFO with no writer hung the command (or, re-read
 * by a daemon, its event loop) forever with no message.
 */

const MiB = 1024 * 1024;

/** How much each kind of input may hold; more is refused (E_FILE_TOO_LARGE). */
export const INPUT_LIMITS = {
  /** Certificates, keys, trust bundles, CRLs given as files, JWKS. */
  pem: 8 * MiB,
  /** YAML configs and policy files. */
  config: 4 * MiB,
  /** Join tokens, JWTs, passphrases, status tokens. */
  secret: 1 * MiB,
} as const;

export interface ReadInputOptions {
  /** What the file holds, for messages: "trust bundle", "config file". */
  readonly what: string;
  /** At most this many bytes (INPUT_LIMITS). */
  readonly maxBytes: number;
  /**
   * Whether a pipe may be read (`--passphrase-file <(pass show ca)`, `/dev/stdin` fed by a pipe):
   * read without blocking, up to maxBytes. One with no writer ends within a moment (an error,
   * not a hang). False for files a long-running process re-reads on its event loop, where a writer
   * that holds a pipe open without writing would stall everything.
   */
  readonly pipes?: boolean;
}

/**
 * The content of `path` as bytes. The file is opened without blocking (O_NONBLOCK: opening a
 * FIFO never waits for a writer) and judged on the open file (fstat): a regular file is read up
 * to `maxBytes`, a pipe as `pipes` says; a device, a socket or anything else is refused
 * (E_FILE_UNREADABLE, naming the path and what it is). A directory and open failures are thrown
 * as the errno errors they are (EISDIR, ENOENT, EACCES), which callers turn into their own
 * messages (fileReadError); the refusals here are MeshwardErrors, to be passed on as they are.
 */
export function readInputBytes(path: string, options: ReadInputOptions): Buffer {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stats = fstatSync(fd);
    if (stats.isDirectory()) throw Object.assign(new Error(`EISDIR: illegal operation on a directory, read '${path}'`), { code: "EISDIR", path });
    const pipe = stats.isFIFO();
    if (!stats.isFile() && !(pipe && options.pipes !== false)) {
      const hint = pipe ? "; it is re-read while the process runs, where a pipe could stall it" : "";
      throw new MeshwardError("E_FILE_UNREADABLE", `${options.what} ${path} is ${kindOf(stats)}, not a regular file${hint}: give a file that holds the ${options.what}`, { details: { path } });
    }
    const data = readCapped(fd, path, options, pipe);
    if (pipe && data.length === 0) {
      throw new MeshwardError("E_FILE_UNREADABLE", `${options.what} ${path} is a named pipe (FIFO) and nothing was written to it (no program had it open for writing): give a regular file, or start the program that writes it first`, { details: { path } });
    }
    return data;
  } finally {
    closeSync(fd);
  }
}

/** readInputBytes as UTF-8 text. */
export function readInputText(path: string, options: ReadInputOptions): string {
  return readInputBytes(path, options).toString("utf8");
}

function readCapped(fd: number, path: string, options: ReadInputOptions, pipe: boolean): Buffer {
  const chunks: Buffer[] = [];
  let total = 0;
  const sleeper = pipe ? new Int32Array(new SharedArrayBuffer(4)) : undefined;
  let graceLeft = PIPE_WRITER_GRACE_MS;
  for (;;) {
    // One byte beyond the limit tells "exactly the limit" from "more".
    const chunk = Buffer.allocUnsafe(Math.min(64 * 1024, options.maxBytes + 1 - total));
    let n: number;
    try {
      n = readSync(fd, chunk, 0, chunk.length, null);
    } catch (error) {
      // A pipe whose writer has not written yet: wait a little (no busy loop), as a blocking read would.
      if (sleeper !== undefined && (error as NodeJS.ErrnoException).code === "EAGAIN") {
        Atomics.wait(sleeper, 0, 0, 10);
        continue;
      }
      throw error;
    }
    if (n === 0) {
      // A named pipe whose writer is just opening it (blocked in open() until a reader came) is
      // counted as a writer only once that open returns: give it a moment before taking the end
      // of input with nothing read for "no writer".
      if (sleeper !== undefined && total === 0 && graceLeft > 0) {
        graceLeft -= 10;
        Atomics.wait(sleeper, 0, 0, 10);
        continue;
      }
      break;
    }
    chunks.push(chunk.subarray(0, n));
    total += n;
    if (total > options.maxBytes) {
      throw new MeshwardError(
        "E_FILE_TOO_LARGE",
        `${options.what} ${path} holds more than ${describeBytes(options.maxBytes)}, the most a ${options.what} may hold${pipe ? "" : " (is it the right file?)"}: give the file that holds the ${options.what}`,
        { details: { path, maxBytes: options.maxBytes } },
      );
    }
  }
  return Buffer.concat(chunks, total);
}

/** How long a pipe with nothing in it and no writer is given for a writer to appear. */
const PIPE_WRITER_GRACE_MS = 200;

function kindOf(stats: Stats): string {
  if (stats.isCharacterDevice()) return "a character device (as /dev/zero or a terminal)";
  if (stats.isBlockDevice()) return "a block device (a disk)";
  if (stats.isSocket()) return "a unix socket";
  if (stats.isFIFO()) return "a named pipe (FIFO)";
  return "not a regular file";
}

function describeBytes(bytes: number): string {
  return bytes % MiB === 0 ? `${bytes / MiB} MiB` : `${bytes} bytes`;
}

/**
 * readInputBytes for a long-running process that must not block its event loop: the same rules
 * (opened with O_NONBLOCK, a regular file only — never a pipe, which a writer holding it open
 * without writing could stall forever — at most `maxBytes`), read asynchronously.
 */
export async function readInputBytesAsync(path: string, options: Omit<ReadInputOptions, "pipes">): Promise<Buffer> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stats = await handle.stat();
    if (stats.isDirectory()) throw Object.assign(new Error(`EISDIR: illegal operation on a directory, read '${path}'`), { code: "EISDIR", path });
    if (!stats.isFile()) {
      throw new MeshwardError("E_FILE_UNREADABLE", `${options.what} ${path} is ${kindOf(stats)}, not a regular file: give a file that holds the ${options.what}`, { details: { path } });
    }
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(Math.min(64 * 1024, options.maxBytes + 1 - total));
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      chunks.push(chunk.subarray(0, bytesRead));
      total += bytesRead;
      if (total > options.maxBytes) {
        throw new MeshwardError("E_FILE_TOO_LARGE", `${options.what} ${path} holds more than ${describeBytes(options.maxBytes)}, the most a ${options.what} may hold (is it the right file?): give the file that holds the ${options.what}`, { details: { path, maxBytes: options.maxBytes } });
      }
    }
    return Buffer.concat(chunks, total);
  } finally {
    await handle.close();
  }
}
