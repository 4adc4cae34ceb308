import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { isCelError, parse, run } from "@bufbuild/cel";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { reviewAdmission } from "../../src/inject/admission.ts";
import { validateK8sObjects } from "../helpers/k8s-schema.ts";
import { injectedPod, plainPod, podUpdateReview, type Pod } from "../helpers/injected-pod.ts";

// The webhooks' CEL matchConditions (deploy/kubernetes/base/injector.yaml, sidecar-guard.meshward.io)
// checked offline, as there is no cluster here. An expression the API server cannot compile makes it
// refuse the whole MutatingWebhookConfiguration at `kubectl apply`; one that filters out an update
// the injector would refuse lets that update through unjudged.
//
// 1. Every expression of every webhook of both overlays (rendered by `kubectl kustomize`) is parsed
//    with @bufbuild/cel and type-checked by `checkCel` below, in the environment Kubernetes declares
//    for webhook matchConditions: kubernetes/kubernetes
//    staging/src/k8s.io/apiserver/pkg/admission/plugin/cel/compile.go (createEnvForOpts: `object` and
//    `oldObject` are cel.DynType, `request` is the object type kubernetes.AdmissionRequest of
//    BuildRequestType, `namespaceObject` kubernetes.Namespace of BuildNamespaceType, and with
//    HasAuthorizer `authorizer` and `authorizer.requestResource`), which
//    staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/accessors.go (GetCompiledMatcher:
//    HasParams false, HasAuthorizer true) uses for MutatingWebhook and ValidatingWebhook; the base
//    environment (staging/src/k8s.io/apiserver/pkg/cel/environment/base.go) has
//    HomogeneousAggregateLiterals, enforced here too. The result must be exactly bool, as
//    CompileCELExpression requires (matchconditions.MatchCondition returns BoolType; dyn is refused).
//    @bufbuild/cel 0.6.1 has no type checker of its own (its checker handles constants and
//    identifiers only), hence `checkCel`: the CEL standard operators and functions
//    (https://github.com/google/cel-spec/blob/master/doc/langdef.md#standard-definitions) that
//    such conditions use, and nothing else: an undeclared variable, function, macro (e.g. `exist(`)
//    or field of a declared object type, a non-bool condition or operands of the wrong type fail.
//    Where it cannot be as exact as cel-go (a comprehension over an empty list literal), it types
//    dyn, which is laxer than cel-go but never stricter.
// 2. Each expression is evaluated with @bufbuild/cel over AdmissionReview pod UPDATEs built from
//    real Pods (validated against the Kubernetes OpenAPI schema), next to the injector's own
//    reviewAdmission: every update the injector refuses must be sent to it (all conditions true),
//    and ordinary updates of injected pods (labels, annotations, finalizers, app images...) and
//    updates of pods without the sidecar must be filtered out (so failurePolicy Fail does not hold
//    them up while the injector is down).
//
// What an offline check cannot prove (a cluster, `kubectl apply --dry-run=server` against
// Kubernetes >= 1.28, can): the API server's cost limits (the estimated cost per expression at
// compile time, celconfig.PerCallLimit, and the runtime budget of all matchConditions of a webhook,
// RuntimeCELCostBudgetMatchConditions); Kubernetes' extension libraries (authorizer, quantity,
// lists, regex, urls, ip/cidr, format, semver, cel-go's strings/sets and optional types), which
// `checkCel` does not declare, so an expression using them fails here and needs this check extended
// first; cel-go's exact typing where `checkCel` falls back to dyn; and that cel-go evaluates the
// samples as @bufbuild/cel does (both implement the CEL spec; the API server's values come from the
// stored, defaulted pod, of which the samples model only what the conditions read).

const ROOT = new URL("../../", import.meta.url).pathname;
const K8S_DIR = join(ROOT, "deploy/kubernetes");

type Doc = Record<string, any>;
type Expr = ReturnType<typeof parse>["expr"];

function kustomize(dir: string): Doc[] {
  const result = spawnSync("kubectl", ["kustomize", join(K8S_DIR, dir)], { encoding: "utf8", timeout: 60_000 });
  expect(result.status, result.stderr).toBe(0);
  return parseAllDocuments(result.stdout).map((d) => {
    if (d.errors.length > 0) throw new Error(`${dir}: ${d.errors[0]?.message}`);
    return d.toJS() as Doc;
  });
}

// ---------------------------------------------------------------------------------------------
// A CEL type checker for the subset above.

type CelT =
  | { kind: "bool" | "int" | "uint" | "double" | "string" | "bytes" | "null" | "dyn" | "timestamp" | "duration" }
  /** the element type of an empty list literal, still free (cel-go's type parameter) */
  | { kind: "free" }
  | { kind: "list"; elem: CelT }
  | { kind: "map"; key: CelT; value: CelT }
  | { kind: "object"; name: string; fields: Record<string, CelT> }
  | { kind: "opaque"; name: string };

const T = {
  bool: { kind: "bool" },
  int: { kind: "int" },
  uint: { kind: "uint" },
  double: { kind: "double" },
  string: { kind: "string" },
  bytes: { kind: "bytes" },
  null: { kind: "null" },
  dyn: { kind: "dyn" },
  timestamp: { kind: "timestamp" },
  free: { kind: "free" },
} as const satisfies Record<string, CelT>;
const list = (elem: CelT): CelT => ({ kind: "list", elem });
const map = (key: CelT, value: CelT): CelT => ({ kind: "map", key, value });
const object = (name: string, fields: Record<string, CelT>): CelT => ({ kind: "object", name, fields });

// compile.go, BuildRequestType and BuildNamespaceType.
const gvk = object("kubernetes.GroupVersionKind", { group: T.string, version: T.string, kind: T.string });
const gvr = object("kubernetes.GroupVersionResource", { group: T.string, version: T.string, resource: T.string });
const userInfo = object("kubernetes.UserInfo", { username: T.string, uid: T.string, groups: list(T.string), extra: map(T.string, list(T.string)) });
const admissionRequest = object("kubernetes.AdmissionRequest", {
  kind: gvk, resource: gvr, subResource: T.string, requestKind: gvk, requestResource: gvr, requestSubResource: T.string,
  name: T.string, namespace: T.string, operation: T.string, userInfo, dryRun: T.bool, options: T.dyn,
});
const namespaceCondition = object("kubernetes.NamespaceCondition", { status: T.string, type: T.string, lastTransitionTime: T.timestamp, message: T.string, reason: T.string });
const namespaceObject = object("kubernetes.Namespace", {
  metadata: object("kubernetes.NamespaceMetadata", {
    name: T.string, generateName: T.string, namespace: T.string, labels: map(T.string, T.string), annotations: map(T.string, T.string),
    UID: T.string, creationTimestamp: T.timestamp, deletionGracePeriodSeconds: T.int, deletionTimestamp: T.timestamp, generation: T.int,
    resourceVersion: T.string, finalizers: list(T.string),
  }),
  spec: object("kubernetes.NamespaceSpec", { finalizers: list(T.string) }),
  status: object("kubernetes.NamespaceStatus", { conditions: list(namespaceCondition), phase: T.string }),
});

/** The variables of a webhook's matchConditions (compile.go createEnvForOpts, HasAuthorizer true). */
const WEBHOOK_VARIABLES = new Map<string, CelT>([
  ["object", T.dyn],
  ["oldObject", T.dyn],
  ["request", admissionRequest],
  ["namespaceObject", namespaceObject],
  // library.AuthorizerType and library.ResourceCheckType: their functions are not declared here.
  ["authorizer", { kind: "opaque", name: "kubernetes.authorization.Authorizer" }],
  ["authorizer.requestResource", { kind: "opaque", name: "kubernetes.authorization.ResourceCheck" }],
]);

const show = (t: CelT): string =>
  t.kind === "list" ? `list(${show(t.elem)})` : t.kind === "map" ? `map(${show(t.key)}, ${show(t.value)})` : t.kind === "object" || t.kind === "opaque" ? t.name : t.kind;

function assignable(a: CelT, b: CelT): boolean {
  if (a.kind === "dyn" || b.kind === "dyn" || a.kind === "free" || b.kind === "free") return true;
  if ((a.kind === "null" && (b.kind === "object" || b.kind === "opaque")) || (b.kind === "null" && (a.kind === "object" || a.kind === "opaque"))) return true;
  if (a.kind !== b.kind) return false;
  if (a.kind === "list" && b.kind === "list") return assignable(a.elem, b.elem);
  if (a.kind === "map" && b.kind === "map") return assignable(a.key, b.key) && assignable(a.value, b.value);
  if ((a.kind === "object" || a.kind === "opaque") && (b.kind === "object" || b.kind === "opaque")) return a.name === b.name;
  return true;
}
function mostGeneral(a: CelT, b: CelT): CelT {
  if (a.kind === "dyn" || b.kind === "free") return a;
  if (b.kind === "dyn" || a.kind === "free") return b;
  if (a.kind === "list" && b.kind === "list") return list(mostGeneral(a.elem, b.elem));
  if (a.kind === "map" && b.kind === "map") return map(mostGeneral(a.key, b.key), mostGeneral(a.value, b.value));
  return a;
}
const isNumeric = (t: CelT) => t.kind === "int" || t.kind === "uint" || t.kind === "double";
const is = (t: CelT, ...kinds: CelT["kind"][]) => t.kind === "dyn" || kinds.includes(t.kind);

/** The standard functions and operators `checkCel` declares (the parser's names: `@in` is `in`). */
const STANDARD_FUNCTIONS = new Set([
  "_&&_", "_||_", "!_", "@not_strictly_false", "__not_strictly_false__", "_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_", "@in", "_in_",
  "_?_:_", "_[_]", "_+_", "_-_", "_*_", "_/_", "_%_", "-_", "size", "contains", "startsWith", "endsWith", "matches",
]);

/** Type-checks `source` against `variables`; returns its type, or throws what cel-go would refuse. */
function checkCel(source: string, variables: Map<string, CelT> = WEBHOOK_VARIABLES): CelT {
  const fail = (message: string): never => {
    throw new Error(`${message} (in ${JSON.stringify(source)})`);
  };
  const check = (e: Expr, scope: Map<string, CelT>): CelT => {
    const k = e.exprKind;
    switch (k.case) {
      case "constExpr": {
        const c = k.value.constantKind.case;
        const types: Record<string, CelT> = { boolValue: T.bool, int64Value: T.int, uint64Value: T.uint, doubleValue: T.double, stringValue: T.string, bytesValue: T.bytes, nullValue: T.null };
        return types[c ?? ""] ?? fail(`unsupported constant ${c}`);
      }
      case "identExpr": {
        const name = k.value.name;
        return scope.get(name) ?? variables.get(name) ?? fail(`undeclared reference to '${name}'`);
      }
      case "selectExpr": {
        const { operand, field, testOnly } = k.value;
        if (operand === undefined) return fail("select without operand");
        // A qualified variable name (authorizer.requestResource) wins over field selection.
        if (!testOnly && operand.exprKind.case === "identExpr" && !scope.has(operand.exprKind.value.name)) {
          const qualified = variables.get(`${operand.exprKind.value.name}.${field}`);
          if (qualified !== undefined) return qualified;
        }
        const t = check(operand, scope);
        let result: CelT;
        if (t.kind === "dyn") result = T.dyn;
        else if (t.kind === "map" && is(t.key, "string")) result = t.value;
        else if (t.kind === "object") result = t.fields[field] ?? fail(`undefined field '${field}' of ${t.name}`);
        else result = fail(`type '${show(t)}' does not support field selection ('.${field}')`);
        return testOnly ? T.bool : result;
      }
      case "listExpr": {
        if (k.value.optionalIndices.length > 0) return fail("optional list elements are not modelled here");
        let elem: CelT = T.free;
        for (const element of k.value.elements) {
          const t = check(element, scope);
          if (!assignable(elem, t)) fail(`list literal: expected type '${show(elem)}' but found '${show(t)}' (HomogeneousAggregateLiterals)`);
          elem = mostGeneral(elem, t);
        }
        return list(elem);
      }
      case "structExpr": {
        if (k.value.messageName !== "") return fail(`message construction ${k.value.messageName} is not modelled here`);
        let key: CelT = T.free;
        let value: CelT = T.free;
        for (const entry of k.value.entries) {
          if (entry.keyKind.case !== "mapKey" || entry.value === undefined || entry.optionalEntry) return fail("unsupported map literal entry");
          const kt = check(entry.keyKind.value, scope);
          const vt = check(entry.value, scope);
          if (!is(kt, "int", "uint", "bool", "string")) fail(`map literal: unsupported key type '${show(kt)}'`);
          if (!assignable(key, kt) || !assignable(value, vt)) fail(`map literal: heterogeneous entries (HomogeneousAggregateLiterals)`);
          key = mostGeneral(key, kt);
          value = mostGeneral(value, vt);
        }
        return map(key, value);
      }
      case "comprehensionExpr": {
        const c = k.value;
        if (c.iterVar2 !== "") return fail("two-variable comprehensions are not modelled here");
        if (c.iterRange === undefined || c.accuInit === undefined || c.loopCondition === undefined || c.loopStep === undefined || c.result === undefined) return fail("incomplete comprehension");
        const range = check(c.iterRange, scope);
        const iter = range.kind === "list" ? range.elem : range.kind === "map" ? range.key : range.kind === "dyn" ? T.dyn : fail(`expression of type '${show(range)}' cannot be the range of a comprehension`);
        const accu0 = check(c.accuInit, scope);
        const inner = new Map([...scope, [c.iterVar, iter.kind === "free" ? T.dyn : iter], [c.accuVar, accu0]]);
        const condition = check(c.loopCondition, inner);
        if (!assignable(T.bool, condition)) fail(`comprehension loop condition is '${show(condition)}', not bool`);
        const step = check(c.loopStep, inner);
        if (!assignable(accu0, step)) fail(`comprehension step '${show(step)}' does not match accumulator '${show(accu0)}'`);
        return check(c.result, new Map([...scope, [c.accuVar, mostGeneral(accu0, step)]]));
      }
      case "callExpr": {
        const { function: fn, target, args } = k.value;
        // Also every function of Kubernetes' libraries (authorizer checks, quantity, lists, regex,
        // urls, strings...): not declared here, so an expression using one fails here until this
        // check declares it.
        if (!STANDARD_FUNCTIONS.has(fn)) return fail(`undeclared reference to '${fn}'`);
        const recv = target === undefined ? undefined : check(target, scope);
        const a = args.map((arg) => check(arg, scope));
        const arity = (n: number, receiver: boolean) => {
          if (a.length !== n || (recv !== undefined) !== receiver) fail(`found no matching overload for '${fn}' with ${recv === undefined ? "" : "a receiver and "}${a.length} argument(s)`);
        };
        const overload = (ok: boolean) => {
          if (!ok) fail(`found no matching overload for '${fn}' applied to '(${[...(recv ? [recv] : []), ...a].map(show).join(", ")})'`);
        };
        switch (fn) {
          case "_&&_":
          case "_||_":
            arity(2, false);
            overload(a.every((t) => assignable(T.bool, t)));
            return T.bool;
          case "!_":
          case "@not_strictly_false":
          case "__not_strictly_false__":
            arity(1, false);
            overload(assignable(T.bool, a[0]!));
            return T.bool;
          case "_==_":
          case "_!=_":
            arity(2, false);
            overload(assignable(a[0]!, a[1]!));
            return T.bool;
          case "_<_":
          case "_<=_":
          case "_>_":
          case "_>=_": {
            arity(2, false);
            const [x, y] = [a[0]!, a[1]!];
            // CrossTypeNumericComparisons (Kubernetes >= 1.28): int, uint and double compare.
            overload(x.kind === "dyn" || y.kind === "dyn" || (isNumeric(x) && isNumeric(y)) || (x.kind === y.kind && ["string", "bytes", "bool", "timestamp", "duration"].includes(x.kind)));
            return T.bool;
          }
          case "@in":
          case "_in_": {
            arity(2, false);
            const [x, y] = [a[0]!, a[1]!];
            overload(y.kind === "dyn" || (y.kind === "list" && assignable(y.elem, x)) || (y.kind === "map" && assignable(y.key, x)));
            return T.bool;
          }
          case "_?_:_": {
            arity(3, false);
            overload(assignable(T.bool, a[0]!) && assignable(a[1]!, a[2]!));
            return mostGeneral(a[1]!, a[2]!);
          }
          case "_[_]": {
            arity(2, false);
            const [x, i] = [a[0]!, a[1]!];
            if (x.kind === "dyn") return T.dyn;
            if (x.kind === "list" && is(i, "int", "uint")) return x.elem.kind === "free" ? T.dyn : x.elem;
            if (x.kind === "map" && assignable(x.key, i)) return x.value.kind === "free" ? T.dyn : x.value;
            return fail(`found no matching overload for '_[_]' applied to '(${show(x)}, ${show(i)})'`);
          }
          case "_+_": {
            arity(2, false);
            const [x, y] = [a[0]!, a[1]!];
            if (x.kind === "dyn" || y.kind === "dyn") return T.dyn;
            if (x.kind === "list" && y.kind === "list") {
              overload(assignable(x.elem, y.elem));
              return list(mostGeneral(x.elem, y.elem));
            }
            overload(x.kind === y.kind && ["int", "uint", "double", "string", "bytes"].includes(x.kind));
            return x;
          }
          case "_-_":
          case "_*_":
          case "_/_":
          case "_%_": {
            arity(2, false);
            const [x, y] = [a[0]!, a[1]!];
            if (x.kind === "dyn" || y.kind === "dyn") return T.dyn;
            overload(x.kind === y.kind && isNumeric(x) && !(fn === "_%_" && x.kind === "double"));
            return x;
          }
          case "-_":
            arity(1, false);
            overload(is(a[0]!, "int", "double"));
            return a[0]!;
          case "size": {
            const x = recv ?? a[0];
            if (x === undefined || a.length !== (recv === undefined ? 1 : 0)) return fail("found no matching overload for 'size'");
            overload(is(x, "string", "bytes", "list", "map"));
            return T.int;
          }
          case "contains":
          case "startsWith":
          case "endsWith":
          case "matches":
            arity(1, true);
            overload(is(recv!, "string") && is(a[0]!, "string"));
            return T.bool;
          default:
            return fail(`undeclared reference to '${fn}'`);
        }
      }
      default:
        return fail(`unsupported expression kind ${k.case}`);
    }
  };
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(source);
  } catch (error) {
    return fail(`syntax error: ${(error as Error).message}`);
  }
  return check(parsed.expr, new Map());
}

// ---------------------------------------------------------------------------------------------
// Pod UPDATE samples, as test/inject/webhook-pod-update.test.ts builds them.


const tokenMount = { name: "meshward-token", mountPath: "/t", readOnly: true };

/** [what, stored pod (oldObject), the update (object)] */
type Sample = [string, Pod, Pod];

/** Updates the injector refuses (E_INJECT_SIDECAR_IMMUTABLE): every one must be sent to it. */
const REFUSED: Sample[] = [
  ["sidecar image (kubectl set image pod/X meshward=…)", injectedPod(), injectedPod((p) => (p.spec.initContainers[0].image = "registry.example/evil:1"))],
  ["sidecar image, and the injected mark dropped", injectedPod(), injectedPod((p) => { p.spec.initContainers[0].image = "evil:1"; delete p.metadata.annotations; })],
  ["sidecar image, all annotations of the stored pod absent but the init container", injectedPod((p) => delete p.metadata.annotations), injectedPod((p) => { delete p.metadata.annotations; p.spec.initContainers[0].image = "evil:1"; })],
  ["sidecar resources", injectedPod(), injectedPod((p) => (p.spec.initContainers[0].resources.limits.memory = "8Gi"))],
  ["sidecar args", injectedPod(), injectedPod((p) => (p.spec.initContainers[0].args = ["sh", "-c", "cat /var/run/secrets/meshward.io/token/token"]))],
  ["sidecar removed", injectedPod(), injectedPod((p) => delete p.spec.initContainers)],
  ["sidecar renamed", injectedPod(), injectedPod((p) => (p.spec.initContainers[0].name = "meshward-old"))],
  ["token volume audience", injectedPod(), injectedPod((p) => (p.spec.volumes[1].projected.sources[0].serviceAccountToken.audience = "elsewhere"))],
  ["token volume removed", injectedPod(), injectedPod((p) => p.spec.volumes.splice(1, 1))],
  ["app mounts the token", injectedPod(), injectedPod((p) => p.spec.containers[0].volumeMounts.push(tokenMount))],
  ["app volumeDevices the token", injectedPod(), injectedPod((p) => (p.spec.containers[0].volumeDevices = [{ name: "meshward-token", devicePath: "/dev/t" }]))],
  ["another init container mounts the token", injectedPod(), injectedPod((p) => p.spec.initContainers.push({ name: "setup", image: "busybox", volumeMounts: [tokenMount] }))],
  ["an ephemeral container in the body mounts the token", injectedPod(), injectedPod((p) => (p.spec.ephemeralContainers = [{ name: "debugger", image: "busybox", volumeMounts: [tokenMount] }]))],
  [
    "marked injected without the init container, app mounts the token",
    injectedPod((p) => delete p.spec.initContainers),
    injectedPod((p) => { delete p.spec.initContainers; p.spec.containers[0].volumeMounts.push(tokenMount); }),
  ],
];

/** Ordinary updates the injector admits: the conditions must filter them out (not sent). */
const FILTERED: Sample[] = [
  ["label added", injectedPod(), injectedPod((p) => (p.metadata.labels.version = "v2"))],
  ["annotation added", injectedPod(), injectedPod((p) => (p.metadata.annotations.team = "shop"))],
  ["the injected mark removed", injectedPod(), injectedPod((p) => delete p.metadata.annotations["meshward.io/injected"])],
  ["app image (kubectl set image pod/X app=…)", injectedPod(), injectedPod((p) => (p.spec.containers[0].image = "app:2"))],
  ["toleration added", injectedPod(), injectedPod((p) => (p.spec.tolerations = [{ key: "node.kubernetes.io/unreachable", operator: "Exists", effect: "NoExecute", tolerationSeconds: 300 }]))],
  ["finalizer added", injectedPod(), injectedPod((p) => (p.metadata.finalizers = ["example.com/keep"]))],
  ["a Job's finalizer removed", injectedPod((p) => (p.metadata.finalizers = ["batch.kubernetes.io/job-tracking"])), injectedPod()],
  ["activeDeadlineSeconds", injectedPod(), injectedPod((p) => (p.spec.activeDeadlineSeconds = 600))],
  ["the same sidecar with its keys in another order", injectedPod(), injectedPod((p) => (p.spec.initContainers[0] = Object.fromEntries(Object.entries(p.spec.initContainers[0]).reverse())))],
  ["pod without the sidecar: app image", plainPod(), plainPod((p) => (p.spec.containers[0].image = "app:2"))],
  ["pod without the sidecar: the body adds the injected mark", plainPod(), plainPod((p) => (p.metadata.annotations = { "meshward.io/injected": "true" }))],
  ["pod without the sidecar: the body adds a meshward init container", plainPod(), plainPod((p) => (p.spec.initContainers = [injectedPod().spec.initContainers[0]]))],
];

/** Admitted, yet sent (costs availability only): a pod injected before token mounts were refused. */
const SENT_ADMITTED: Sample[] = [
  [
    "app already mounted the token in the stored pod, label added",
    injectedPod((p) => p.spec.containers[0].volumeMounts.push(tokenMount)),
    injectedPod((p) => { p.spec.containers[0].volumeMounts.push(tokenMount); p.metadata.labels.version = "v2"; }),
  ],
];

/** An AdmissionReview v1 for an UPDATE of a Pod itself, as k8s.io/api/admission/v1 has it. */
const review = (oldObject: Pod, object: Pod) => podUpdateReview("0e0e0e0e-0000-0000-0000-000000000003", oldObject, object);
const injectorAllows = (oldObject: Pod, object: Pod): boolean =>
  reviewAdmission(review(oldObject, object), { options: { image: "meshward:0.1.0", caAddress: "ca:8443", audience: "meshward" } as never, ownNamespace: "meshward-system" }).response.allowed;

/** JSON as the API server hands it to CEL: objects as maps, integers as int. */
const toCel = (v: unknown): unknown =>
  Array.isArray(v) ? v.map(toCel)
  : v !== null && typeof v === "object" ? new Map(Object.entries(v).map(([k, x]) => [k, toCel(x)]))
  : typeof v === "number" && Number.isInteger(v) ? BigInt(v)
  : v;

interface Condition { name: string; expression: string }
interface Webhook { name: string; rules?: { operations: string[]; resources: string[] }[]; matchConditions?: Condition[] }

/** What each condition gives for a sample: true, false or an evaluation error (a failed update with failurePolicy Fail). */
function evaluate(conditions: Condition[], oldObject: Pod, object: Pod): (boolean | string)[] {
  const { request } = review(oldObject, object);
  const { object: _o, oldObject: _old, uid: _uid, ...requestVariable } = request; // compile.go: request omits these
  return conditions.map(({ expression }) => {
    const result = run(expression, { object: toCel(object), oldObject: toCel(oldObject), request: toCel(requestVariable) } as never);
    return isCelError(result) ? `error: ${result.message}` : typeof result === "boolean" ? result : `not bool: ${String(result)}`;
  });
}

const rendered = { single: kustomize("overlays/single"), ha: kustomize("overlays/ha") };
const webhooksOf = (docs: Doc[]): Webhook[] =>
  docs.filter((d) => d.kind === "MutatingWebhookConfiguration" || d.kind === "ValidatingWebhookConfiguration").flatMap((d) => (d.webhooks ?? []) as Webhook[]);
const sendsPodUpdates = (w: Webhook) => (w.rules ?? []).some((r) => (r.operations.includes("UPDATE") || r.operations.includes("*")) && (r.resources.includes("pods") || r.resources.includes("*")));

describe("deploy/kubernetes: the webhooks' CEL matchConditions", () => {
  it("the type check refuses what the API server would (negative controls), and accepts the standard forms", () => {
    const guard = webhooksOf(rendered.single).find((w) => w.name === "sidecar-guard.meshward.io");
    const expression = guard?.matchConditions?.[0]?.expression ?? "";
    expect(expression).toContain(".exists(");
    expect(() => checkCel(expression.replace(".exists(", ".exist("))).toThrow(/undeclared reference to 'exist'/);
    for (const [broken, reason] of [
      ["has(oldObject.metadata.annotations) &&", /syntax error/],
      ["oldObject.metadata.name", /^$/], // dyn, not bool: checked below
      ["objet.metadata.name == 'x'", /undeclared reference to 'objet'/],
      ["request.operaton == 'UPDATE'", /undefined field 'operaton' of kubernetes\.AdmissionRequest/],
      ["request.operation == 1", /no matching overload for '_==_'/],
      ["object.spec.containers.exists(c, 'x')", /no matching overload for '_\|\|_'/], // `c.name` (dyn) passes, as in cel-go
      ["[1, 'a'].size() > 0", /HomogeneousAggregateLiterals/],
      ["object.spec.containers.filter(c, c.name == 'x')", /^$/], // a list: checked below
      ["authorizer.group('').resource('pods').check('update').allowed()", /undeclared reference to 'allowed'/], // Kubernetes' Authz library: not declared here,
    ] as const) {
      if (reason.source === "^$") expect(checkCel(broken).kind, broken).not.toBe("bool");
      else expect(() => checkCel(broken), broken).toThrow(reason);
    }
    for (const ok of [
      "request.operation == 'UPDATE' && request.userInfo.groups.exists(g, g == 'system:masters')",
      "has(object.metadata.labels) && 'app' in object.metadata.labels && object.metadata.labels['app'].startsWith('orders')",
      "object.spec.containers.all(c, c.image != '') && size(object.spec.containers) >= 1 && object.spec.containers.map(c, c.name).size() < 10",
      "(has(object.spec.volumes) ? object.spec.volumes : []).exists_one(v, v.name == 'data') || !has(object.spec.volumes)",
      "request.dryRun == false && 1 < 2.5",
    ]) {
      expect(checkCel(ok), ok).toEqual(T.bool);
    }
  });

  for (const [overlay, docs] of Object.entries(rendered)) {
    it(`${overlay}: every matchConditions expression of every webhook compiles in Kubernetes' webhook CEL environment and returns bool`, () => {
      const conditions = webhooksOf(docs).flatMap((w) => (w.matchConditions ?? []).map((c) => ({ webhook: w.name, ...c })));
      expect(conditions.map((c) => `${c.webhook}/${c.name}`)).toEqual(["sidecar-guard.meshward.io/stored-pod-has-sidecar", "sidecar-guard.meshward.io/sidecar-or-token-differs"]);
      for (const c of conditions) expect(show(checkCel(c.expression)), `${c.webhook}/${c.name}`).toBe("bool");
    });

    it(`${overlay}: every pod UPDATE the injector refuses is sent to it; ordinary updates of injected pods are not`, () => {
      const guards = webhooksOf(docs).filter((w) => (w.matchConditions ?? []).length > 0 && sendsPodUpdates(w));
      expect(guards.map((w) => w.name)).toEqual(["sidecar-guard.meshward.io"]);
      for (const guard of guards) {
        const conditions = guard.matchConditions ?? [];
        const check = ([what, oldObject, object]: Sample, injectorAdmits: boolean, sent: boolean) => {
          expect(validateK8sObjects([oldObject, object]), what).toBe(2);
          expect(injectorAllows(oldObject, object), `${what}: the injector ${injectorAdmits ? "admits" : "refuses"} it`).toBe(injectorAdmits);
          const results = evaluate(conditions, oldObject, object);
          // No sample errors: an error fails the update (failurePolicy Fail), ordinary ones included.
          expect(results.every((r) => typeof r === "boolean"), `${what}: ${JSON.stringify(results)}`).toBe(true);
          expect(results.every((r) => r === true), `${what}: conditions ${JSON.stringify(results)} (the webhook is called only when all are true)`).toBe(sent);
        };
        for (const sample of REFUSED) check(sample, false, true);
        for (const sample of FILTERED) check(sample, true, false);
        for (const sample of SENT_ADMITTED) check(sample, true, true);
      }
    });
  }
});
