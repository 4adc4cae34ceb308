import { readFileSync, unwatchFile, watchFile } from "node:fs";
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
  return compilePolicy(parseAccessControl(doc.toJS(), file, locate));
}

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
  const onChange = (now: Stats, before: Stats) => {
    if (now.mtimeMs === before.mtimeMs && now.size === before.size && now.ino === before.ino) return;
    try {
      policy = loadPolicyFile(file);
      generation++;
      options.logger.info(`access policy reloaded from ${file}`);
    } catch (error) {
      options.logger.error(`the changed access policy ${file} was refused; the previous policy stays in force: ${describeError(error)}`);
    }
  };
  watchFile(file, { interval: options.intervalMs, persistent: false }, onChange);
  return {
    current: () => policy,
    get generation() {
      return generation;
    },
    close: () => unwatchFile(file, onChange),
  };
}
