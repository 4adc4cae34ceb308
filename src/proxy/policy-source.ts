import { readFileSync, statSync, unwatchFile, watchFile } from "node:fs";
import type { Stats } from "node:fs";
import { LineCounter, parseDocument } from "yaml";
import { describeError, MeshwardError } from "../errors.ts";
import { compilePolicy, parseAccessControl } from "../policy/index.ts";
import type { AccessPolicy } from "../policy/index.ts";
import type { TlsLogger } from "../tls/logger.ts";
import { excessiveNestingMessage } from "../util/yaml-depth.ts";

/** Parses a Dapr `kind: Configuration` (or bare accessControl) YAML into a compiled policy; throws E_POLICY_INVALID. */
export function loadPolicyFile(file: string): AccessPolicy {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new MeshwardError("E_POLICY_INVALID", `cannot read policy file ${file}: ${(error as NodeJS.ErrnoException).code ?? describeError(error)}`);
  }
  const tooDeep = excessiveNestingMessage(text, file);
  if (tooDeep !== undefined) throw new MeshwardError("E_POLICY_INVALID", tooDeep);
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const pos = lineCounter.linePos(first.pos[0]);
    throw new MeshwardError("E_POLICY_INVALID", `${file}:${pos.line}:${pos.col}: ${first.message.split("\n")[0]}`);
  }
  const locate = (path: readonly (string | number)[]) => {
    const node = doc.getIn(path, true) as { range?: [number, number, number] } | undefined;
    if (node?.range === undefined) return file;
    const pos = lineCounter.linePos(node.range[0]);
    return `${file}:${pos.line}:${pos.col}`;
  };
  const data: unknown = doc.toJS();
  requireAccessControl(data, file, locate);
  return compilePolicy(parseAccessControl(data, file, locate));
}

/** A key as a typo of it may read: lower case, letters only, no doubled letters (`accesControl`, `access_control`). */
const squeeze = (key: string): string => key.toLowerCase().replace(/[^a-z]/g, "").replace(/(.)\1+/g, "$1");

const isMapping = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value);

/**
 * A policy file must say what it allows. Dapr reads a Configuration without accessControl as
 * "no access control" (every caller allowed); for a file the sidecar was pointed at, that is
 * what an empty file, or one cut short mid-write (`kind: Configuration` and nothing after,
 * `spec:` and nothing after), would also read as: the sidecar would open up on a half-written
 * file. So the block must be there; `accessControl: {defaultAction: allow}` allows everyone
 * explicitly.
 */
function requireAccessControl(data: unknown, file: string, locate: (path: readonly (string | number)[]) => string): void {
  const missing = (where: string, hint = ""): never => {
    throw new MeshwardError(
      "E_POLICY_INVALID",
      `${where}: no access control: an access policy file must hold a Dapr Configuration with spec.accessControl (to allow every caller, say so: spec.accessControl.defaultAction: allow)${hint}; an empty or half-written file is refused, never read as "allow everything"`,
    );
  };
  if (data === undefined || data === null) missing(`${file} is empty`);
  if (!isMapping(data)) return; // parseAccessControl names what is wrong
  const configuration = "kind" in data || "spec" in data || "apiVersion" in data;
  const holder = configuration ? data["spec"] : data;
  const prefix = configuration ? ["spec"] : [];
  if (configuration && !isMapping(holder)) {
    if (holder === undefined || holder === null) missing(locate(configuration && "spec" in data ? ["spec"] : []));
    return;
  }
  if (!isMapping(holder)) return;
  if (!configuration && !("accessControl" in holder)) {
    // A bare accessControl block (defaultAction, trustDomain, policies at the top).
    if (Object.keys(holder).length === 0) missing(`${file} holds an empty mapping`);
    return;
  }
  const block = holder["accessControl"];
  if (block === undefined || block === null) {
    const nearMiss = Object.keys(holder).find((key) => key !== "accessControl" && squeeze(key) === squeeze("accessControl"));
    missing(locate(block === null ? [...prefix, "accessControl"] : prefix.length > 0 ? prefix : []), nearMiss === undefined ? "" : ` (found ${JSON.stringify(nearMiss)}: did you mean accessControl?)`);
  }
}

const sameFile = (a: Stats, b: Stats): boolean => a.mtimeMs === b.mtimeMs && a.size === b.size && a.ino === b.ino;

export interface PolicySource {
  current(): AccessPolicy;
  /** Bumps on every successful reload. */
  readonly generation: number;
  close(): void;
}

/**
 * The access policy, reloaded when its file changes. A file that no longer parses is refused
 * with a logged error and the previous policy stays in force (fail safe, not open).
 */
export function watchPolicy(file: string | undefined, options: { intervalMs: number; logger: TlsLogger }): PolicySource {
  if (file === undefined) {
    const everything = compilePolicy(undefined);
    return { current: () => everything, generation: 0, close: () => undefined };
  }
  let policy = loadPolicyFile(file);
  let generation = 0;
  let settling: NodeJS.Timeout | undefined;
  const reload = () => {
    try {
      policy = loadPolicyFile(file);
      generation++;
      options.logger.info(`access policy reloaded from ${file}`);
    } catch (error) {
      options.logger.error(`the changed access policy ${file} was refused; the previous policy stays in force: ${describeError(error)}`);
    }
  };
  // A change is applied once the file has stayed the same for one interval: a file being
  // written in place (`>` in a shell, an editor, `cp`) is read whole, not cut short mid-list,
  // where a truncated policy could still parse (fewer deny rules, a default without its
  // exceptions). A change during the wait is seen by the watcher and starts the wait again.
  const onChange = (now: Stats, before: Stats) => {
    if (sameFile(now, before)) return;
    clearTimeout(settling);
    settling = setTimeout(() => {
      settling = undefined;
      let current: Stats | undefined;
      try {
        current = statSync(file);
      } catch {
        current = undefined; // gone: reload says so, and keeps the policy in force
      }
      if (current === undefined || sameFile(current, now)) reload();
    }, options.intervalMs);
    settling.unref();
  };
  watchFile(file, { interval: options.intervalMs, persistent: false }, onChange);
  return {
    current: () => policy,
    get generation() {
      return generation;
    },
    close: () => {
      clearTimeout(settling);
      unwatchFile(file, onChange);
    },
  };
}
