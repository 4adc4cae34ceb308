import * as z from "zod";
import { MeshwardError } from "../errors.ts";
import { parseTrustDomain } from "../spiffe/id.ts";
import { operationNameProblem } from "./operation.ts";

/**
 * Dapr's `accessControl` block (https://docs.dapr.io/operations/configuration/invoke-allowlist/),
 * accepted either inside a `kind: Configuration` document (`spec.accessControl`) or bare.
 */
export type Action = "allow" | "deny";

export interface OperationRule {
  /** As written (a leading "/" is added when missing), e.g. "/v1/orders/**" or "/pkg.Svc/Get". */
  readonly name: string;
  /** HTTP verbs as written (upper case; lower case is refused), "*" for any; empty = the rule applies to gRPC/TCP only (as in Dapr). */
  readonly httpVerb: readonly string[];
  readonly action: Action;
}

export interface AppPolicy {
  readonly appId: string;
  readonly namespace: string;
  /** Lower-cased; "public" when absent. */
  readonly trustDomain: string;
  /** Undefined: falls back to the global default action. */
  readonly defaultAction: Action | undefined;
  readonly operations: readonly OperationRule[];
}

export interface AccessControlConfig {
  /** Undefined: "allow" when there are no app policies, "deny" when there are (Dapr rules 2, 3). */
  readonly defaultAction: Action | undefined;
  /** The trust domain of the called app ("public" when absent); informational, not matched. */
  readonly trustDomain: string;
  readonly policies: readonly AppPolicy[];
  /**
   * Without a global defaultAction: the one Dapr implies (dapr/dapr pkg/acl/acl.go
   * ParseAccessControlSpec). Undefined when the block is empty, i.e. no access control: no
   * trustDomain and no policies. "deny" when the block has app policies, or a trustDomain but no
   * `policies` list; "allow" for a trustDomain with `policies: []`. Absent (objects built
   * elsewhere): "deny" with policies, no access control without.
   */
  readonly impliedDefaultAction?: Action | undefined;
  /** False when the document had no accessControl block at all (Dapr rule 1: allow all). */
  readonly present: boolean;
  readonly source: string | undefined;
}

export const DEFAULT_TRUST_DOMAIN = "public";

/** Turns a field path into "file:line" (from the YAML loader), or undefined when unknown. */
export type Locate = (path: readonly (string | number)[]) => string | undefined;

const IDENTIFIER = /^[a-zA-Z0-9._-]+$/;
const VERB = /^([A-Za-z]+|\*)$/;

const action = z
  .string()
  .transform((value) => value.trim().toLowerCase())
  .refine((value) => value === "allow" || value === "deny", { message: 'must be "allow" or "deny"' })
  .transform((value) => value as Action);

const identifier = (what: string) =>
  z
    .string()
    .min(1, { message: `the ${what} is empty` })
    .regex(IDENTIFIER, { message: `the ${what} may hold only a-z, A-Z, 0-9, '.', '-' and '_'` });

const trustDomain = z
  .string()
  .transform((value, ctx) => {
    const lowered = value.trim().toLowerCase();
    if (lowered === "") return DEFAULT_TRUST_DOMAIN;
    try {
      return parseTrustDomain(lowered);
    } catch (error) {
      ctx.addIssue({ code: "custom", message: error instanceof Error ? error.message : String(error) });
      return z.NEVER;
    }
  });

const operationSchema = z
  .object({
    name: z.string().superRefine((value, ctx) => {
      const problem = operationNameProblem(value);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    }),
    httpVerb: z
      .array(
        z
          .string()
          .regex(VERB, { message: 'an HTTP verb is a word such as "GET", or "*"' })
          // Methods are case-sensitive (RFC 9110 §9.1) and Dapr looks the verb up as written
          // (pkg/acl/acl.go VerbAction[verb]): "get" never matches a GET there. Refused rather
          // than read either way.
          .refine((verb) => verb === verb.toUpperCase(), {
            error: (issue) => `httpVerb ${JSON.stringify(issue.input)} is not a method: methods are case-sensitive, write ${JSON.stringify(String(issue.input).toUpperCase())}`,
          }),
      )
      .optional(),
    action: action.optional(),
  })
  .strict();

const policySchema = z
  .object({
    appId: identifier("appId"),
    namespace: identifier("namespace"),
    trustDomain: trustDomain.optional(),
    defaultAction: action.optional(),
    operations: z.array(operationSchema).optional(),
  })
  .strict();

const accessControlSchema = z
  .object({
    defaultAction: action.optional(),
    trustDomain: trustDomain.optional(),
    policies: z.array(policySchema).nullish(),
  })
  .strict();

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Validates and normalises an access-control document. Throws E_POLICY_INVALID naming the
 * bad field (and its file:line when `locate` knows it).
 *
 * Without an accessControl block the result is Dapr's "no access control" (every caller
 * allowed). `required` refuses that instead: for a file the sidecar was pointed at, an empty
 * file or one cut short mid-write (`kind: Configuration` and nothing after, `spec:`) reads the
 * same, and must never open access; allowing everyone must then be said (`defaultAction: allow`).
 */
export function parseAccessControl(doc: unknown, source?: string, locate?: Locate, options: { readonly required?: boolean } = {}): AccessControlConfig {
  const fail = (path: readonly (string | number)[], message: string): never => {
    const where = locate?.(path) ?? source;
    const field = path.length === 0 ? "(document)" : formatPath(path);
    throw new MeshwardError("E_POLICY_INVALID", `${where ? `${where}: ` : ""}${field}: ${message}`, {
      details: { path: [...path], source },
    });
  };
  /** No accessControl block: Dapr's "no access control", or refused when it is required. */
  const absent = (where: string | undefined, holder?: Record<string, unknown>): AccessControlConfig => {
    if (!options.required) return emptyConfig(source);
    const nearMiss = holder === undefined ? undefined : Object.keys(holder).find((key) => key !== "accessControl" && squeeze(key) === squeeze("accessControl"));
    const hint = nearMiss === undefined ? "" : ` (found ${JSON.stringify(nearMiss)}: did you mean accessControl?)`;
    throw new MeshwardError(
      "E_POLICY_INVALID",
      `${where ?? source ?? "the access policy"}: no access control: an access policy file must hold a Dapr Configuration with spec.accessControl (to allow every caller, say so: spec.accessControl.defaultAction: allow)${hint}; an empty or half-written file is refused, never read as "allow everything"`,
      { details: { source } },
    );
  };

  if (doc === undefined || doc === null) return absent(`${source ?? "the access policy"} is empty`);
  if (!isRecord(doc)) return fail([], "an access policy must be a mapping (a Dapr Configuration or an accessControl block)");

  let block: unknown = doc;
  let prefix: (string | number)[] = [];
  if ("kind" in doc || "spec" in doc || "apiVersion" in doc) {
    if (doc.kind !== undefined && doc.kind !== "Configuration") {
      return fail(["kind"], `expected kind: Configuration, found ${JSON.stringify(doc.kind)}`);
    }
    const spec = doc.spec;
    if (spec === undefined || spec === null) return absent(locate?.("spec" in doc ? ["spec"] : []));
    if (!isRecord(spec)) return fail(["spec"], "must be a mapping");
    block = spec.accessControl;
    prefix = ["spec", "accessControl"];
    if (block === undefined || block === null) return absent(locate?.(block === null ? prefix : ["spec"]), spec);
  } else if ("accessControl" in doc) {
    block = doc.accessControl;
    prefix = ["accessControl"];
    if (block === undefined || block === null) return absent(locate?.(prefix), doc);
  } else if (options.required && Object.keys(doc).length === 0) {
    return absent(`${source ?? "the access policy"} holds an empty mapping`);
  }
  if (isRecord(block) && "policies" in block && Array.isArray(block.policies)) {
    block.policies.forEach((policy, index) => {
      if (isRecord(policy) && "app" in policy && !("appId" in policy)) {
        fail([...prefix, "policies", index, "app"], 'use "appId" (Dapr renamed "app" to "appId")');
      }
    });
  }

  const result = accessControlSchema.safeParse(block);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const path = [...prefix, ...issue.path.filter((p): p is string | number => typeof p !== "symbol")];
    const message =
      issue.code === "unrecognized_keys"
        ? `unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((k) => JSON.stringify(k)).join(", ")}`
        : issue.message;
    return fail(path, message);
  }

  const parsed = result.data;
  const seen = new Map<string, number>();
  const policies: AppPolicy[] = (parsed.policies ?? []).map((policy, index) => {
    const td = policy.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    const key = `${td}\u0000${policy.namespace}\u0000${policy.appId}`;
    const earlier = seen.get(key);
    if (earlier !== undefined) {
      fail(
        [...prefix, "policies", index],
        `duplicate policy for appId ${policy.appId} in namespace ${policy.namespace} (trust domain ${td}); it repeats policies[${earlier}] — merge them`,
      );
    }
    seen.set(key, index);
    const operations = (policy.operations ?? []).map((operation, opIndex) => {
      // Dapr's CRD requires `action` (charts/dapr/crds/configuration.yaml) and its runtime denies
      // an operation without one (pkg/acl/acl.go isActionAllowed("") is false): refuse it rather
      // than guess, the open reading least of all.
      if (operation.action === undefined) {
        fail(
          [...prefix, "policies", index, "operations", opIndex],
          `app id ${policy.appId} (namespace ${policy.namespace}): operation ${JSON.stringify(operation.name)} has no action: add \`action: allow\` or \`action: deny\` (Dapr denies an operation without an action, and Kubernetes refuses such a Configuration)`,
        );
      }
      return {
        name: operation.name.startsWith("/") ? operation.name : `/${operation.name}`,
        httpVerb: operation.httpVerb ?? [],
        action: operation.action as Action,
      };
    });
    checkConflicts(operations, (opIndex, message) => fail([...prefix, "policies", index, "operations", opIndex], message));
    return { appId: policy.appId, namespace: policy.namespace, trustDomain: td, defaultAction: policy.defaultAction, operations };
  });

  // dapr/dapr pkg/acl/acl.go ParseAccessControlSpec: no trustDomain, no defaultAction and no
  // policies is no ACL; otherwise a missing defaultAction is deny unless `policies` is an empty
  // list (a nil list, the key absent or null, is deny: `accessControl: {trustDomain: x}` denies all).
  const rawTrustDomain = isRecord(block) ? block.trustDomain : undefined;
  const trustDomainGiven = typeof rawTrustDomain === "string" && rawTrustDomain.trim() !== "";
  const impliedDefaultAction: Action | undefined =
    parsed.defaultAction !== undefined || (!trustDomainGiven && policies.length === 0)
      ? undefined
      : policies.length > 0 || parsed.policies === undefined || parsed.policies === null
        ? "deny"
        : "allow";

  return {
    defaultAction: parsed.defaultAction,
    impliedDefaultAction,
    trustDomain: parsed.trustDomain ?? DEFAULT_TRUST_DOMAIN,
    policies,
    present: true,
    source,
  };
}

/** Two rules with the same name that give different actions for the same verb are ambiguous. */
function checkConflicts(operations: readonly OperationRule[], fail: (index: number, message: string) => never): void {
  const byName = new Map<string, { verbs: Map<string, Action>; grpc: Action | undefined }>();
  operations.forEach((operation, index) => {
    const key = operation.name;
    const entry = byName.get(key) ?? { verbs: new Map<string, Action>(), grpc: undefined };
    byName.set(key, entry);
    for (const verb of operation.httpVerb) {
      const previous = entry.verbs.get(verb);
      if (previous !== undefined && previous !== operation.action) {
        fail(index, `operation ${operation.name} is listed twice for verb ${verb} with different actions (${previous}, ${operation.action})`);
      }
      entry.verbs.set(verb, operation.action);
    }
    if (operation.httpVerb.length === 0) {
      if (entry.grpc !== undefined && entry.grpc !== operation.action) {
        fail(index, `operation ${operation.name} is listed twice with different actions (${entry.grpc}, ${operation.action})`);
      }
      entry.grpc = operation.action;
    }
  });
}

/** A key as a typo of it may read: lower case, letters only, no doubled letters (`accesControl`, `access_control`). */
function squeeze(key: string): string {
  return key.toLowerCase().replace(/[^a-z]/g, "").replace(/(.)\1+/g, "$1");
}

function emptyConfig(source: string | undefined): AccessControlConfig {
  return { defaultAction: undefined, trustDomain: DEFAULT_TRUST_DOMAIN, policies: [], present: false, source };
}

function formatPath(path: readonly (string | number)[]): string {
  let out = "";
  for (const part of path) out += typeof part === "number" ? `[${part}]` : out === "" ? part : `.${part}`;
  return out;
}
