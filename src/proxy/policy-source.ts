import { statSync, unwatchFile, watchFile } from "node:fs";
import type { Stats } from "node:fs";
import { LineCounter, parseDocument } from "yaml";
import { describeError, MeshwardError } from "../errors.ts";
import { compilePolicy, daprDifferences, operationsNeverApplyingToTcp, parseAccessControl, POLICY_DIFFERS_FROM_DAPR, POLICY_OPERATIONS_NEVER_APPLY_TCP, tcpInapplicableMessage } from "../policy/index.ts";
import type { AccessPolicy, DaprDifference, TcpInapplicableOperation } from "../policy/index.ts";
import type { TlsLogger } from "../tls/logger.ts";
import { INPUT_LIMITS, readInputText } from "../util/read-input.ts";
import { excessiveNestingMessage } from "../util/yaml-depth.ts";

/** Parses a Dapr `kind: Configuration` (or bare accessControl) YAML into a compiled policy; throws E_POLICY_INVALID. */
export function loadPolicyFile(file: string): AccessPolicy {
  return readPolicyFile(file).policy;
}

/**
 * loadPolicyFile, with where the valid policy means something else to Dapr, and the operations a
 * TCP-mode sidecar can never apply, each with the file:line:column of its entry (logged as warnings).
 */
export function readPolicyFile(file: string): { policy: AccessPolicy; differences: DaprDifference[]; tcpInapplicable: (TcpInapplicableOperation & { at: string })[] } {
  let text: string;
  try {
    // Re-read on the event loop when the file changes: never a pipe.
    text = readInputText(file, { what: "policy file", maxBytes: INPUT_LIMITS.config, pipes: false });
  } catch (error) {
    throw new MeshwardError("E_POLICY_INVALID", `cannot read policy file ${file}: ${error instanceof MeshwardError ? error.message : ((error as NodeJS.ErrnoException).code ?? describeError(error))}`);
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
  const js: unknown = doc.toJS();
  const config = parseAccessControl(js, file, locate, { required: true });
  const policy = compilePolicy(config);
  // Where parseAccessControl found the block (it accepted the document, so it is one of these).
  const holder = typeof js === "object" && js !== null ? js : {};
  const prefix = "kind" in holder || "spec" in holder || "apiVersion" in holder ? ["spec", "accessControl"] : "accessControl" in holder ? ["accessControl"] : [];
  const differences = daprDifferences(config).map((difference) => ({
    ...difference,
    message: `${locate([...prefix, "policies", difference.policyIndex, "operations", difference.operationIndexes[1]])}: ${difference.message}`,
  }));
  const tcpInapplicable = operationsNeverApplyingToTcp(config).map((operation) => ({
    ...operation,
    at: locate([...prefix, "policies", operation.policyIndex, "operations", operation.operationIndex]),
  }));
  return { policy, differences, tcpInapplicable };
}

/** What policy-foreign-trust-domain reports: the warning, and the sidecar's own trust domain. */
export type ForeignTrustDomainWarning = NonNullable<ReturnType<typeof foreignTrustDomainWarning>>;

/**
 * policy-foreign-trust-domain, kept current: `warn` is called at start, after each policy reload,
 * and after each change of the trust domains the sidecar can verify (a federated trust domain's
 * root added to or removed from its trust bundle), each time the policy names callers of a trust
 * domain it cannot verify. A bundle refresh that leaves the set of trust domains as it was says
 * nothing again. Returns `trusted(next)`, to be called with the bundle's trust domains whenever
 * it changes, and the unsubscribe.
 */
export function watchForeignTrustDomains(
  policy: Pick<PolicySource, "current" | "onReload">,
  file: string,
  own: string,
  initial: ReadonlySet<string>,
  warn: (warning: ForeignTrustDomainWarning) => void,
): { trusted(next: ReadonlySet<string>): void; close(): void } {
  let trusted = new Set(initial);
  const check = () => {
    const warning = foreignTrustDomainWarning(policy.current(), file, own, trusted);
    if (warning !== undefined) warn(warning);
  };
  check();
  const unsubscribe = policy.onReload(check);
  return {
    trusted(next) {
      if (next.size === trusted.size && [...next].every((domain) => trusted.has(domain))) return;
      trusted = new Set(next);
      check();
    },
    close: unsubscribe,
  };
}

/**
 * App policies for callers of a trust domain this sidecar cannot verify (neither its own nor one
 * its trust bundle holds a root of) match no caller: such a caller gets the global default, so
 * an allowed caller of the sidecar's own trust domain named under another one (a policy copied
 * from a guide with another domain, or without trustDomain, which Dapr reads as "public") gets
 * 403 with nothing said at start (review newuser M2). Returns the warning, or undefined.
 */
export function foreignTrustDomainWarning(policy: AccessPolicy, file: string, own: string, trusted: ReadonlySet<string>): { message: string; trustDomains: string[]; appIds: string[] } | undefined {
  const foreign = policy.appPolicies.filter((p) => p.trustDomain !== own && !trusted.has(p.trustDomain));
  if (foreign.length === 0) return undefined;
  const trustDomains = [...new Set(foreign.map((p) => p.trustDomain))];
  const appIds = foreign.map((p) => p.appId);
  const others = [...trusted].filter((td) => td !== own);
  const message =
    `the access policy ${file} names callers of trust domain ${trustDomains.join(", ")} (app policies ${foreign.map((p) => `${p.appId} in ${p.namespace}`).join(", ")}), ` +
    `but this sidecar is in ${own}${others.length > 0 ? ` and trusts only ${others.join(", ")} besides` : " and trusts no other trust domain"}: ` +
    `those policies match no caller, who get the global default instead. Write trustDomain: ${own} in them` +
    `${trustDomains.includes("public") ? ' (a policy without trustDomain is for "public", Dapr\'s default)' : ""}`;
  return { message, trustDomains, appIds };
}

const sameFile = (a: Stats, b: Stats): boolean => a.mtimeMs === b.mtimeMs && a.size === b.size && a.ino === b.ino;

export interface PolicySource {
  current(): AccessPolicy;
  /** Bumps on every successful reload. */
  readonly generation: number;
  /** Calls `listener` after each successful reload (the new policy is current()); returns the unsubscribe. */
  onReload(listener: () => void): () => void;
  close(): void;
}

/**
 * The access policy, reloaded when its file changes. A file that no longer parses is refused
 * with a logged error and the previous policy stays in force (fail safe, not open).
 */
export interface WatchPolicyOptions {
  intervalMs: number;
  logger: TlsLogger;
  /**
   * Logs a warning with structured fields (a pino logger's `warn(fields, message)`); without it
   * `logger.warn` gets the event name at the start of the message.
   */
  warn?: (fields: Record<string, unknown>, message: string) => void;
  /** `tcp`: warn once per load (start, each reload) about the operations a TCP-mode sidecar never applies. */
  protocol?: "http" | "tcp";
}

/**
 * Logs one `policy-operations-never-apply-tcp` warning when the sidecar runs in TCP mode and its
 * policy has operations that never decide a connection (a path other than `/`, HTTP verbs only,
 * shadowed by the operation that decides `/`, as in Dapr the first declared), with what decides instead.
 */
function warnTcpInapplicable(file: string, operations: readonly (TcpInapplicableOperation & { at: string })[], options: WatchPolicyOptions): void {
  if (options.protocol !== "tcp" || operations.length === 0) return;
  const message = `the access policy ${file}: ${tcpInapplicableMessage(operations)} (at ${operations.map((operation) => operation.at).join(", ")})`;
  const fields = {
    event: POLICY_OPERATIONS_NEVER_APPLY_TCP,
    operations: operations.map(({ appId, namespace, trustDomain, name, action, why, decidedBy, at }) => ({ appId, namespace, trustDomain, name, action, why, decidedBy, at })),
  };
  if (options.warn !== undefined) options.warn(fields, message);
  else options.logger.warn(`${POLICY_OPERATIONS_NEVER_APPLY_TCP}: ${message}`);
}

/**
 * Logs one `policy-differs-from-dapr` warning per place the policy means something else to Dapr
 * (a wildcard declared before a narrower operation it covers, a repeated operation name, two
 * overlapping operations Dapr's trie and meshward pick differently between, an operation covering the
 * paths below it that Dapr's trie applies otherwise, an allow behind a bare '*' Dapr never matches).
 */
function warnDifferences(differences: readonly DaprDifference[], options: WatchPolicyOptions): void {
  for (const difference of differences) {
    const fields = {
      event: POLICY_DIFFERS_FROM_DAPR,
      kind: difference.kind,
      appId: difference.appId,
      namespace: difference.namespace,
      trustDomain: difference.trustDomain,
      operations: [...difference.operations],
    };
    if (options.warn !== undefined) options.warn(fields, difference.message);
    else options.logger.warn(`${POLICY_DIFFERS_FROM_DAPR}: ${difference.message}`);
  }
}

export function watchPolicy(file: string | undefined, options: WatchPolicyOptions): PolicySource {
  if (file === undefined) {
    const everything = compilePolicy(undefined);
    return { current: () => everything, generation: 0, onReload: () => () => undefined, close: () => undefined };
  }
  // Taken before the first read: watchFile's own baseline is taken later, asynchronously, and a
  // change in between (a policy tightened as the sidecar starts) would never be seen.
  const loaded = statSync(file, { throwIfNoEntry: false });
  const first = readPolicyFile(file);
  let policy = first.policy;
  warnDifferences(first.differences, options);
  warnTcpInapplicable(file, first.tcpInapplicable, options);
  let generation = 0;
  let settling: NodeJS.Timeout | undefined;
  const listeners = new Set<() => void>();
  const reload = () => {
    try {
      const next = readPolicyFile(file);
      policy = next.policy;
      generation++;
      options.logger.info(`access policy reloaded from ${file}`);
      warnDifferences(next.differences, options);
      warnTcpInapplicable(file, next.tcpInapplicable, options);
    } catch (error) {
      options.logger.error(`the changed access policy ${file} was refused; the previous policy stays in force: ${describeError(error)}`);
      return;
    }
    for (const listener of listeners) listener();
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
  // Whatever changed between the first read and the watcher's baseline: compared once.
  const sinceLoad = setTimeout(() => {
    const now = statSync(file, { throwIfNoEntry: false });
    if (now !== undefined && loaded !== undefined) onChange(now, loaded);
  }, options.intervalMs);
  sinceLoad.unref();
  return {
    current: () => policy,
    get generation() {
      return generation;
    },
    onReload(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close: () => {
      listeners.clear();
      clearTimeout(settling);
      clearTimeout(sinceLoad);
      unwatchFile(file, onChange);
    },
  };
}
