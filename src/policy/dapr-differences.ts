/**
 * Where a valid policy means something else to Dapr than to meshward, because of two choices
 * meshward keeps on purpose (decide.ts rules 8 and the merge in compileApp):
 *
 *   - "precedence": when several operations match, meshward picks the most specific one; Dapr's
 *     trie (dapr/dapr pkg/config/acl_trie.go findNodeWithWildcard) walks children in insertion
 *     order and takes the first that matches, so a wildcard declared before a narrower operation
 *     it covers hides the narrower one there.
 *   - "repeated-name": meshward merges the verb tables of entries with the same name; Dapr keeps
 *     only the first entry (acl_trie.go PutOperationAction sets Data only when it is nil; older
 *     versions, a map in pkg/acl/acl.go, kept the last).
 *
 *   - "overlap": two operations neither of which covers the other both match some paths
 *     (`/a/*c` and `/a/bb*` both match `/a/bbc`). meshward picks the more specific there; Dapr's
 *     trie descends one segment at a time, taking at each node the first child in insertion
 *     order that matches (findNodeWithWildcard: a literal equal to the segment, `/**`, an
 *     in-segment glob, and `/*` only for the last segment) and never goes back, and answers with
 *     the first node on the way that holds an operation (Search). So Dapr may take the other
 *     operation, or none of them: a bare `*` segment before the last one never matches in
 *     Dapr, so for `/a/b/c` under the operations "/a/STAR/c" and "/STAR/b/**" (STAR a bare `*`),
 *     which both match it for meshward, Dapr descends into `/a`, finds no child for `b` and
 *     applies the default action.
 *
 * The precedence check is a sufficient one, not a complete one: it flags a wildcard operation
 * declared before a more specific operation it covers (it matches a path the later one matches,
 * built from the later name), when for that path Dapr's trie (daprTrieSearch) takes the wildcard
 * and meshward the later one, and the two would decide some verb, or gRPC, differently. Order
 * alone is not enough: `/a/**` declared before `/a` decides nothing in Dapr for the path `/a` (the
 * trie's node `/a` holds `/a`, and Search answers with it); what differs there, the paths below
 * `/a`, is the "prefix" check's.
 * The overlap check builds one path both operations of a pair match (wildcards filled in from
 * the other name), runs Dapr's trie on it (daprTrieSearch, a port of acl_trie.go's Search over
 * every operation of the policy) and meshward's most-specific choice, and reports the pair when
 * the two choices decide some verb, or gRPC, differently; pairs both read alike are not reported.
 * One path per pair is not enough: after the pairwise checks (whose messages name the pair's own
 * shape), every path class both matchers can tell apart is read by both (representativePaths,
 * which argues why that is complete for the names the grammar allows), and a pair that decides
 * differently there and was not reported yet is reported as "overlap", or "prefix" when a covering
 * operation decides. That catches what the pairwise paths missed, chiefly trailing `*`/`**` beside
 * literal branches: with `/a/a` allow and `/**` deny, Dapr's trie takes the `/a` branch for `/a/x`,
 * finds no child `x` there and does not go back to `/**`, so the default decides; with
 * `/orders/STAR/items` deny and `/orders/**` GET allow, Dapr takes the `/STAR` branch for `/orders/x`
 * (a `/STAR` child matches a last segment), finds no operation there and denies, meshward allows.
 * Where Dapr finds none, the message names the operation whose branch its walk took (daprTrieWalk).
 *
 *   - "prefix": an operation whose last segment is a literal or an in-segment glob (`/a`,
 *     `/files/*.pdf`) also decides the paths below it, in both; but Dapr's Search answers with the
 *     first such operation on the way down (the shortest), and only along the branch its trie
 *     walk took, while meshward ranks a covering operation for those paths as its name followed
 *     by `/**` (so the most specific decides). With `/a` deny and `/a/b/**` allow, Dapr denies
 *     `/a/b/x` (it meets `/a` first), meshward allows it (`/a/b/**` matches it). The check builds,
 *     for each covering operation and each other one, a few paths below the first along the
 *     second's name (wildcards filled in), runs daprTrieSearch and meshward's choice on them, and
 *     reports the pair where the two decide some verb, or gRPC, differently; the pass over every
 *     path class (above) reports what these paths miss.
 *   - "never-matches-in-dapr": a bare `*` before the last segment (`/orders/STAR/items`, STAR a bare
 *     `*`) never matches in Dapr (findNodeWithWildcard skips a `/*` child unless it is the path's last
 *     segment), so such an operation decides nothing there; meshward matches it (one segment).
 *     Reported when it allows a verb, or gRPC, that the app's default denies: meshward then allows
 *     what Dapr leaves to the default.
 * Pure: the sidecar logs these as warnings at load, `meshward audit` reports them.
 */
import { barePrefixName, belowPattern, compareSpecificity, compileOperation, coversBelow, matchesBelow, matchesGlob, matchesOperation, operationNames, PathSegments, SegmentKind, type OperationPattern } from "./operation.ts";
import type { AccessControlConfig, Action, OperationRule } from "./schema.ts";

export const POLICY_DIFFERS_FROM_DAPR = "policy-differs-from-dapr";

export interface DaprDifference {
  readonly kind: "precedence" | "repeated-name" | "overlap" | "prefix" | "never-matches-in-dapr";
  readonly appId: string;
  readonly namespace: string;
  readonly trustDomain: string;
  /** Index of the app policy in `policies`. */
  readonly policyIndex: number;
  /** The operations involved, as normalised names: [declared first, declared later]. */
  readonly operations: readonly [string, string];
  /** Their indexes in the app policy's `operations` (the first entry of each name). */
  readonly operationIndexes: readonly [number, number];
  /** What differs, for a person. */
  readonly message: string;
}

interface NamedOperation {
  readonly pattern: OperationPattern;
  readonly firstIndex: number;
  readonly rules: OperationRule[];
  readonly indexes: number[];
}

export function daprDifferences(config: AccessControlConfig): DaprDifference[] {
  if (!config.present) return [];
  const globalAction: Action = config.defaultAction ?? config.impliedDefaultAction ?? (config.policies.length > 0 ? "deny" : "allow");
  const found: DaprDifference[] = [];
  config.policies.forEach((policy, policyIndex) => {
    const fallback: Action = policy.defaultAction ?? globalAction;
    const app = `app id ${policy.appId} (namespace ${policy.namespace})`;
    const base = { appId: policy.appId, namespace: policy.namespace, trustDomain: policy.trustDomain, policyIndex };
    const byName = new Map<string, NamedOperation>();
    policy.operations.forEach((rule, index) => {
      const pattern = compileOperation(rule.name);
      const entry = byName.get(pattern.name);
      if (entry === undefined) {
        byName.set(pattern.name, { pattern, firstIndex: index, rules: [rule], indexes: [index] });
        return;
      }
      entry.rules.push(rule);
      entry.indexes.push(index);
    });

    for (const entry of byName.values()) {
      if (entry.rules.length < 2) continue;
      const name = entry.pattern.name;
      found.push({
        ...base,
        kind: "repeated-name",
        operations: [name, name],
        operationIndexes: [entry.indexes[0]!, entry.indexes[1]!],
        message: `${app}: operation ${name} is listed ${entry.rules.length} times (operations[${entry.indexes.join("], [")}]); meshward merges the entries, Dapr uses only the first one and ignores the rest: list the verbs in one entry (httpVerb: [GET, DELETE])`,
      });
    }

    const named = [...byName.values()];
    const path = new PathSegments();
    const trie = daprTrie(named.map((entry) => entry.pattern.name.toLowerCase()));
    for (const earlier of named) {
      for (const later of named) {
        if (later.firstIndex <= earlier.firstIndex) continue;
        // meshward picks `later` where both match only when it is more specific.
        if (compareSpecificity(later.pattern, earlier.pattern) >= 0) continue;
        const sample = samplePath(later.pattern);
        path.load(sample);
        if (!matchesOperation(earlier.pattern.segments, path)) continue;
        // Only where the order changes the decision: Dapr's trie takes `earlier` for the path and
        // meshward `later`. Not `/a/**` before `/a` (Dapr's node `/a` holds `/a`, which decides the
        // path `/a` in both), nor a wildcard whose node a third operation's literal precedes.
        const daprIndex = daprTrieSearch(trie, sample);
        if (daprIndex === undefined || named[daprIndex] !== earlier) continue;
        // The path `/` is decided as in Dapr (decide.ts rule 8): there the two agree, and `later`
        // (`/` behind a `/**` declared first) never decides its own path in either: still reported.
        const mine = meshwardPick(named, trie, path);
        const deadRoot = path.count === 0 && mine === earlier;
        if (mine !== later && !deadRoot) continue;
        const differing = differingKey(earlier.rules, later.rules, fallback);
        if (differing === undefined) continue;
        const outcome = deadRoot
          ? `for the path / Dapr and meshward both use the first declared ${earlier.pattern.name}, so ${later.pattern.name} never decides it: declare ${later.pattern.name} first if it is meant to`
          : `for ${sample} meshward uses the more specific ${later.pattern.name}, Dapr the first declared ${earlier.pattern.name}: declare ${later.pattern.name} first to mean the same in both`;
        found.push({
          ...base,
          kind: "precedence",
          operations: [earlier.pattern.name, later.pattern.name],
          operationIndexes: [earlier.firstIndex, later.firstIndex],
          message: `${app}: operation ${earlier.pattern.name} (operations[${earlier.firstIndex}]) is declared before ${later.pattern.name} (operations[${later.firstIndex}]), which it covers, and they decide ${differing} differently; ${outcome}`,
        });
      }
    }

    // Overlaps neither side of which covers the other (covering pairs are the precedence check's).
    for (const earlier of named) {
      for (const later of named) {
        if (later.firstIndex <= earlier.firstIndex) continue;
        path.load(samplePath(later.pattern));
        if (matchesOperation(earlier.pattern.segments, path)) continue;
        path.load(samplePath(earlier.pattern));
        if (matchesOperation(later.pattern.segments, path)) continue;
        const sample = overlapPath(earlier.pattern, later.pattern);
        if (sample === undefined) continue;
        path.load(sample);
        if (!matchesOperation(earlier.pattern.segments, path) || !matchesOperation(later.pattern.segments, path)) continue;
        const mine = meshwardPick(named, trie, path);
        const daprIndex = daprTrieSearch(trie, sample);
        const theirs = daprIndex === undefined ? undefined : named[daprIndex];
        if (mine === theirs) continue;
        const differing = differingKey(mine?.rules ?? [], theirs?.rules ?? [], fallback);
        if (differing === undefined) continue;
        const daprReads = theirs === undefined ? `Dapr none of them (its trie does not go back once it has taken a branch, and a bare '*' before the last segment never matches there), so the default action (${fallback})` : `Dapr ${theirs.pattern.name}`;
        found.push({
          ...base,
          kind: "overlap",
          operations: [earlier.pattern.name, later.pattern.name],
          operationIndexes: [earlier.firstIndex, later.firstIndex],
          message: `${app}: operations ${earlier.pattern.name} (operations[${earlier.firstIndex}]) and ${later.pattern.name} (operations[${later.firstIndex}]) both match ${sample}, neither covering the other; there meshward uses ${mine?.pattern.name ?? "none of them"}, ${daprReads}, and they decide ${differing} differently: declare ${mine?.pattern.name ?? "an operation for the paths they share"} first, or add an operation for the paths they share declared before both, or narrow one so that they no longer overlap`,
        });
      }
    }

    // Covering operations (a last literal or in-segment glob) against every other operation; a pair
    // already reported above is not reported again, nor a cover with a bare '*' before its last
    // segment (never-matches-in-dapr below).
    const reported = new Set(found.filter((d) => d.policyIndex === policyIndex).map((d) => `${d.operationIndexes[0]}/${d.operationIndexes[1]}`));
    for (const cover of named) {
      if (!coversBelow(cover.pattern.segments) || hasInnerAny(cover.pattern)) continue;
      for (const other of named) {
        if (other === cover) continue;
        const pair = cover.firstIndex < other.firstIndex ? [cover, other] as const : [other, cover] as const;
        const key = `${pair[0].firstIndex}/${pair[1].firstIndex}`;
        if (reported.has(key)) continue;
        for (const sample of belowPaths(cover.pattern, other.pattern)) {
          path.load(sample);
          if (!matchesBelow(cover.pattern.segments, path)) continue;
          const mine = meshwardPick(named, trie, path);
          const daprIndex = daprTrieSearch(trie, sample);
          const theirs = daprIndex === undefined ? undefined : named[daprIndex];
          if (mine === theirs || (mine !== cover && theirs !== cover)) continue;
          const differing = differingKey(mine?.rules ?? [], theirs?.rules ?? [], fallback);
          if (differing === undefined) continue;
          reported.add(key);
          const daprReads =
            theirs === cover
              ? `Dapr ${cover.pattern.name}, the first operation its trie meets on the way down, which decides everything below it there`
              : theirs === undefined
                ? `Dapr none (its trie took another branch on the way down and does not go back, or a bare '*' before the last segment, which never matches there), so the default action (${fallback})`
                : `Dapr ${theirs.pattern.name} (the branch its trie took on the way down)`;
          const meshwardReads = mine === cover ? `${cover.pattern.name}, which covers the paths below it` : (mine?.pattern.name ?? "none of them");
          found.push({
            ...base,
            kind: "prefix",
            operations: [pair[0].pattern.name, pair[1].pattern.name],
            operationIndexes: [pair[0].firstIndex, pair[1].firstIndex],
            message: `${app}: operation ${cover.pattern.name} (operations[${cover.firstIndex}]) also decides the paths below it, in Dapr as in meshward, and ${other.pattern.name} (operations[${other.firstIndex}]) lies along it; for ${sample} meshward uses ${meshwardReads}, ${daprReads}, and they decide ${differing} differently: give the two the same action for the paths they share, or remove or rename the one that should not apply there (in Dapr an operation such as ${cover.pattern.name} always decides every path below it that its trie reaches)`,
          });
          break;
        }
      }
    }

    // A bare '*' before the last segment: never matches in Dapr.
    for (const entry of named) {
      if (!hasInnerAny(entry.pattern)) continue;
      const allowed = allowedOverDefault(entry.rules, fallback);
      if (allowed === undefined) continue;
      const name = entry.pattern.name;
      found.push({
        ...base,
        kind: "never-matches-in-dapr",
        operations: [name, name],
        operationIndexes: [entry.firstIndex, entry.firstIndex],
        message: `${app}: operation ${name} (operations[${entry.firstIndex}]) has a bare '*' before its last segment, which never matches in Dapr (its trie takes a '*' segment only for a path's last one), so Dapr leaves its paths to the default action (${fallback}) or another operation, while meshward matches it (one segment) and allows ${allowed}: name the segments (one operation per value), or use an in-segment glob such as 'x*' if that is meant, or '**' as the last segment`,
      });
    }

    // Every other difference: the paths of every class both matchers can tell apart (representativePaths),
    // each read by Dapr's trie and by meshward; a pair already reported is not reported again.
    const reportedPairs = new Set(found.filter((d) => d.policyIndex === policyIndex).map((d) => `${d.operationIndexes[0]}/${d.operationIndexes[1]}`));
    for (const sample of representativePaths(named.map((entry) => entry.pattern))) {
      path.load(sample);
      const mine = meshwardPick(named, trie, path);
      const walk = daprTrieWalk(trie, sample);
      const theirs = walk.index === undefined ? undefined : named[walk.index];
      if (mine === theirs) continue;
      const differing = differingKey(mine?.rules ?? [], theirs?.rules ?? [], fallback);
      if (differing === undefined) continue;
      // Dapr found none: the operation whose branch its walk took (the first declared below the last node it reached).
      const branch = theirs ?? (walk.branch === undefined ? undefined : named[walk.branch]);
      const other = branch ?? mine;
      if (mine === undefined || other === undefined) continue; // not reached: what Dapr finds, meshward matches (dapr-trie.property.test.ts)
      // Dapr reaches none where meshward uses an operation with a bare '*' before its last segment, which
      // Dapr never takes whatever else the policy holds: never-matches-in-dapr's (reported where meshward
      // allows more; where meshward is the stricter, on purpose not).
      if (theirs === undefined && hasInnerAny(mine.pattern)) continue;
      const pair = mine.firstIndex <= other.firstIndex ? ([mine, other] as const) : ([other, mine] as const);
      const key = `${pair[0].firstIndex}/${pair[1].firstIndex}`;
      if (reportedPairs.has(key)) continue;
      reportedPairs.add(key);
      const below = (entry: NamedOperation) => !matchesOperation(entry.pattern.segments, path) && matchesBelow(entry.pattern.segments, path);
      const kind = below(mine) || (theirs !== undefined && below(theirs)) ? "prefix" : "overlap";
      const meshwardReads = below(mine) ? `${mine.pattern.name}, which covers the paths below it` : mine.pattern.name;
      const daprReads =
        theirs !== undefined
          ? `Dapr ${theirs.pattern.name}${below(theirs) ? ", the first operation its trie meets on the way down, which decides everything below it there" : " (the first declared branch its trie takes at each segment)"}`
          : branch !== undefined && branch !== mine
            ? `Dapr none, so the default action (${fallback}): its trie took the branch of ${branch.pattern.name} (operations[${branch.firstIndex}]) on the way down, found nothing there for the rest of the path, and does not go back`
            : `Dapr none, so the default action (${fallback}): its trie does not reach ${mine.pattern.name} for this path (a bare '*' before the last segment never matches there, and its walk does not go back)`;
      found.push({
        ...base,
        kind,
        operations: [pair[0].pattern.name, pair[1].pattern.name],
        operationIndexes: [pair[0].firstIndex, pair[1].firstIndex],
        message: `${app}: for ${sample} meshward uses ${meshwardReads} (operations[${mine.firstIndex}]), ${daprReads}, and they decide ${differing} differently: give the operations that meet there the same action for the paths they share, or add an operation for ${sample} with the action meant, declared before both (then check again: Dapr lets an operation decide every path below its name)`,
      });
    }
  });
  return found;
}

/**
 * The operation meshward's decide() applies to the path (operation.ts, decide.ts rule 8): for `/`,
 * the one Dapr's trie takes; for any other path, the most specific that matches it, a covering operation ranked for the paths below its name as that name
 * followed by `/**` (belowPattern); ties go to the first declared, and a declared operation before
 * a covering one of the same rank (a stable sort over the declared ones, then the covering ones).
 */
function meshwardPick(named: readonly NamedOperation[], trie: DaprNode, path: PathSegments): NamedOperation | undefined {
  // The path `/`: the operation Dapr's trie takes (decide.ts rule 8, compileApp's root).
  if (path.count === 0) {
    const index = daprTrieSearch(trie, "/");
    return index === undefined ? undefined : named[index];
  }
  // A trailing `/*` does not match its bare prefix where that prefix is an operation of its own.
  const names = operationNames(named.map((entry) => entry.pattern));
  const bare = (entry: NamedOperation) => {
    const prefix = barePrefixName(entry.pattern);
    return prefix === undefined || !names.has(prefix);
  };
  let best: { entry: NamedOperation; pattern: OperationPattern; covering: boolean } | undefined;
  const consider = (entry: NamedOperation, pattern: OperationPattern, covering: boolean) => {
    if (best === undefined) {
      best = { entry, pattern, covering };
      return;
    }
    const order = compareSpecificity(pattern, best.pattern);
    if (order < 0 || (order === 0 && best.covering && !covering)) best = { entry, pattern, covering };
  };
  for (const entry of named) if (matchesOperation(entry.pattern.segments, path, bare(entry))) consider(entry, entry.pattern, false);
  for (const entry of named) if (matchesBelow(entry.pattern.segments, path)) consider(entry, belowPattern(entry.pattern), true);
  return best?.entry;
}

/**
 * Paths below `cover` along `other`'s name: `other`'s own path and one segment further, and the
 * path both begin with (the first |cover| segments filled in from the two names) followed by the
 * rest of `other`'s name (and one segment further), and by one and by two other segments; and
 * paths that follow `other`'s name for k segments, then `cover`'s, then go one below it.
 */
function belowPaths(cover: OperationPattern, other: OperationPattern): string[] {
  const out: string[] = [];
  const own = samplePath(other);
  out.push(own, `${own === "/" ? "" : own}/x`);
  const head = other.segments.slice(0, cover.segments.length);
  const shared = overlapPath(cover, { ...other, segments: head, ranks: head.map((s) => s.kind) });
  if (shared !== undefined) {
    const rest = sampleSegments(other.segments.slice(cover.segments.length));
    if (rest.length > 0) out.push(`${shared}/${rest.join("/")}`, `${shared}/${rest.join("/")}/x`);
    out.push(`${shared}/x`, `${shared}/x/x`);
  }
  // Dapr's walk diverted: the first k segments along `other`'s name (its branch, if declared
  // first), then the rest of `cover`'s name, then one segment below it.
  for (let k = 1; k < cover.segments.length && k <= other.segments.length; k++) {
    const head = other.segments.slice(0, k);
    const start = overlapPath({ ...cover, segments: cover.segments.slice(0, k), ranks: cover.ranks.slice(0, k) }, { ...other, segments: head, ranks: head.map((s) => s.kind) });
    if (start !== undefined) out.push(`${start}/${sampleSegments(cover.segments.slice(k)).join("/")}/x`);
  }
  return out;
}

/** A bound on the paths representativePaths returns (a policy would need thousands of overlapping wildcards to reach it). */
const MAX_REPRESENTATIVE_PATHS = 50_000;

/**
 * One path (normalised, lower case) for each class of paths that meshward's matcher and Dapr's trie
 * (dapr/dapr pkg/config/acl_trie.go Search and findNodeWithWildcard, pkg/acl/acl.go
 * IsOperationAllowedByAccessControlPolicy) cannot tell apart, so that reading these paths with both finds
 * every path the two decide differently.
 *
 * Why this is enough. Both read a path `/s1/.../sn` only through n and, at each depth i, which of the
 * operations' segments at depth i match s_i: meshward (matchesOperation, matchesBelow) compares segment i of
 * a name with segment i of the path (a literal by equality, an in-segment glob by matchesGlob, a bare `*`
 * always, a last `**` ends the comparison); Dapr's trie holds segment i of each name at depth i, and
 * findNodeWithWildcard compares a child with s_i by equality or acl_trie.go isMatch (the same globs), takes
 * `/**` always and `/*` for the last segment, or, for s_i equal to `*`, by equality also before it. So two
 * paths of the same length whose segments have, depth by depth, the same signature (segmentSignature: which
 * segments at that depth match, and whether s_i is `*`) are decided alike by both, and one path per
 * realisable sequence of signatures suffices. segmentRepresentatives gives one segment per realisable
 * signature at each depth; lengths run from 1 to one more than the longest name. A prefix that no name with
 * a further non-`**` segment matches is extended by one segment only: every longer path is then matched by
 * the same operations (those ending in `**` and those covering the paths below their name), in Dapr as in
 * meshward, as that one is.
 *
 * Complete for names whose segments are literals, `*`, a last `**`, and in-segment globs with at most one
 * `*` (`a*`, `*.pdf`, `v1-*-beta`: a prefix and a suffix), up to ten distinct such globs at one depth.
 * Globs with two or three `*`s (`*-*.pdf`) get witnesses with their middle pieces in declared and reversed
 * order: sufficient, not complete. Bounded by MAX_REPRESENTATIVE_PATHS.
 */
export function representativePaths(patterns: readonly OperationPattern[]): string[] {
  const depth = Math.max(0, ...patterns.map((p) => p.segments.length));
  const at: string[][] = [];
  for (let i = 0; i <= depth; i++) {
    at.push(segmentRepresentatives(patterns.map((p) => p.segments[i]).filter((s): s is PatternSegment => s !== undefined && s.kind !== SegmentKind.Rest)));
  }
  const out = ["/"];
  const visit = (prefix: readonly string[]): void => {
    const i = prefix.length;
    for (const segment of at[i] ?? []) {
      if (out.length >= MAX_REPRESENTATIVE_PATHS) return;
      const next = [...prefix, segment];
      out.push(`/${next.join("/")}`);
      if (live(patterns, next)) visit(next);
      else out.push(`/${next.join("/")}/${at[depth]![0]!}`);
    }
  };
  visit([]);
  return out;
}

/** Whether a name with a further segment other than `**` matches the path's segments so far. */
function live(patterns: readonly OperationPattern[], segments: readonly string[]): boolean {
  const n = segments.length;
  return patterns.some((p) => p.segments.length > n && p.segments[n]!.kind !== SegmentKind.Rest && segments.every((s, i) => p.segments[i]!.kind !== SegmentKind.Rest && segmentMatches(p.segments[i]!, s)));
}

/** Characters a fresh segment or filler may be made of (never `.`: a dot segment is resolved away). */
const FRESH = "xyzqjkw0123456789~-_";

/** One segment per realisable signature (segmentSignature) at a depth whose operations' segments are `segments`. */
function segmentRepresentatives(segments: readonly PatternSegment[]): string[] {
  const distinct = [...new Map(segments.map((s) => [s.literal, s])).values()];
  const used = distinct.map((s) => s.literal).join("");
  const fill = [...FRESH].find((c) => !used.includes(c)) ?? "x";
  const candidates: string[] = [fill];
  if (distinct.some((s) => s.kind === SegmentKind.Any)) candidates.push("*");
  for (const s of distinct) if (s.kind === SegmentKind.Literal) candidates.push(s.literal);
  const globs = distinct.filter((s) => s.kind === SegmentKind.Glob);
  const subsets: PatternSegment[][] = [];
  if (globs.length <= 10) {
    for (let mask = 1; mask < 1 << globs.length; mask++) subsets.push(globs.filter((_, j) => (mask & (1 << j)) !== 0));
  } else {
    globs.forEach((g, j) => {
      subsets.push([g]);
      for (const h of globs.slice(j + 1)) subsets.push([g, h]);
    });
  }
  const longest = Math.max(0, ...globs.map((g) => g.pieces![0]!.length + g.pieces![g.pieces!.length - 1]!.length)) + 1;
  for (const subset of subsets) candidates.push(...globWitnesses(subset, fill, longest));
  const bySignature = new Map<string, string>();
  for (const candidate of candidates) {
    const signature = segmentSignature(distinct, candidate);
    if (!bySignature.has(signature)) bySignature.set(signature, candidate);
  }
  return [...bySignature.values()];
}

/**
 * Segments every glob of `subset` matches. For globs with one `*` (a first piece P_j and a last Q_j), a
 * segment matching them all starts with the longest first piece P and ends with the longest last Q; which
 * other such globs it matches then depends only on its length (a glob whose pieces are a prefix of P and a
 * suffix of Q matches it when long enough), except where it holds other text, which only makes it match
 * globs the subset does not imply (their own subset gives a witness). So the strings P·fill…·Q of each
 * length up to the longest glob's, and the unique overlapped ones shorter than |P|+|Q|, realise every
 * signature in which the globs matched are exactly some subset.
 */
function globWitnesses(subset: readonly PatternSegment[], fill: string, longest: number): string[] {
  const firsts = subset.map((g) => g.pieces![0]!);
  const lasts = subset.map((g) => g.pieces![g.pieces!.length - 1]!);
  const p = firsts.reduce((a, b) => (b.length > a.length ? b : a), "");
  const q = lasts.reduce((a, b) => (b.length > a.length ? b : a), "");
  if (!firsts.every((f) => p.startsWith(f)) || !lasts.every((l) => q.endsWith(l))) return [];
  const out: string[] = [];
  if (subset.every((g) => g.pieces!.length === 2)) {
    for (let length = Math.max(p.length, q.length, 1); length <= Math.max(longest, p.length + q.length + 1); length++) {
      out.push(length <= p.length + q.length ? p + q.slice(p.length + q.length - length) : p + fill.repeat(length - p.length - q.length) + q);
    }
  } else {
    for (const order of [subset, [...subset].reverse()]) {
      out.push([p, ...order.flatMap((g) => g.pieces!.slice(1, -1)), q].join(fill));
    }
  }
  return out.filter((w) => w.startsWith(p) && w.endsWith(q) && subset.every((g) => segmentMatches(g, w)));
}

/** Which of the segments at a depth match `text`, in meshward and in Dapr, and whether it is a `*` (Dapr's equality with a `/*` child). */
function segmentSignature(segments: readonly PatternSegment[], text: string): string {
  let signature = text === "*" ? "*" : "-";
  for (const s of segments) signature += `${segmentMatches(s, text) ? 1 : 0}${s.kind === SegmentKind.Any || daprIsMatch(`/${text}`, `/${s.literal}`) ? 1 : 0}`;
  return signature;
}

/** A bare `*` segment before the last one, which never matches in Dapr. */
function hasInnerAny(pattern: OperationPattern): boolean {
  return pattern.segments.slice(0, -1).some((segment) => segment.kind === SegmentKind.Any);
}

/** The first verb (or "gRPC calls") the operation allows where the app's default denies, or undefined. */
function allowedOverDefault(rules: readonly OperationRule[], fallback: Action): string | undefined {
  if (fallback === "allow") return undefined;
  const verbs = [...new Set(rules.flatMap((rule) => rule.httpVerb))].sort();
  for (const verb of verbs) if (httpAction(rules, verb, fallback) === "allow") return verb === "*" ? "every verb" : verb;
  if (grpcAction(rules, fallback) === "allow") return "gRPC calls";
  return undefined;
}

/** A path the pattern matches: wildcards filled with "x" (lower case, as requests are matched). */
function samplePath(pattern: OperationPattern): string {
  if (pattern.segments.length === 0) return "/";
  return `/${sampleSegments(pattern.segments).join("/")}`;
}

type PatternSegment = OperationPattern["segments"][number];

function sampleSegments(segments: readonly PatternSegment[]): string[] {
  const out: string[] = [];
  for (const segment of segments) {
    if (segment.kind === SegmentKind.Rest) break;
    out.push(segment.kind === SegmentKind.Literal ? segment.literal : segment.kind === SegmentKind.Glob ? segment.pieces!.join("x") : "x");
  }
  return out;
}

/** A path both patterns match, built segment by segment (undefined when none is found this way). */
function overlapPath(a: OperationPattern, b: OperationPattern): string | undefined {
  const out: string[] = [];
  for (let i = 0; ; i++) {
    const x = a.segments[i];
    const y = b.segments[i];
    if (x === undefined && y === undefined) break;
    if (x?.kind === SegmentKind.Rest) {
      out.push(...sampleSegments(b.segments.slice(i)));
      break;
    }
    if (y?.kind === SegmentKind.Rest) {
      out.push(...sampleSegments(a.segments.slice(i)));
      break;
    }
    if (x === undefined || y === undefined) return undefined;
    const segment = overlapSegment(x, y);
    if (segment === undefined) return undefined;
    out.push(segment);
  }
  return out.length === 0 ? undefined : `/${out.join("/")}`;
}

function overlapSegment(x: PatternSegment, y: PatternSegment): string | undefined {
  const fill = (s: PatternSegment) => (s.kind === SegmentKind.Literal ? s.literal : s.kind === SegmentKind.Glob ? s.pieces!.join("x") : "x");
  const candidates = [fill(x), fill(y)];
  if (x.kind === SegmentKind.Glob && y.kind === SegmentKind.Glob) {
    for (const [p, q] of [[x.pieces!, y.pieces!], [y.pieces!, x.pieces!]] as const) {
      candidates.push(`${p[0]}${q[0]}x${p.slice(1, -1).join("x")}x${q.slice(1, -1).join("x")}x${q[q.length - 1]}${p[p.length - 1]}`);
    }
  }
  return candidates.find((c) => c !== "" && segmentMatches(x, c) && segmentMatches(y, c));
}

function segmentMatches(segment: PatternSegment, text: string): boolean {
  if (segment.kind === SegmentKind.Literal) return segment.literal === text;
  if (segment.kind === SegmentKind.Glob) return matchesGlob(segment.pieces!, text, 0, text.length);
  return true;
}

/**
 * Dapr's operations trie (dapr/dapr pkg/config/acl_trie.go), ported as it reads: each operation
 * (normalised, lower case, as pkg/acl/acl.go ParseAccessControlSpec stores HTTP ones) is put in
 * declaration order, one node per "/segment"; a repeated name keeps its first data.
 */
export interface DaprNode {
  readonly char: string;
  data: number | undefined;
  readonly subNodes: DaprNode[];
}

export function daprTrie(names: readonly string[]): DaprNode {
  const root: DaprNode = { char: "/", data: undefined, subNodes: [] };
  names.forEach((name, index) => {
    const parts = name.split("/");
    let node = root;
    for (let i = 1; i < parts.length; i++) {
      const char = `/${parts[i]}`;
      const sub = node.subNodes.find((n) => n.char === char);
      if (sub === undefined) {
        const created: DaprNode = { char, data: i === parts.length - 1 ? index : undefined, subNodes: [] };
        node.subNodes.push(created);
        node = created;
      } else if (i === parts.length - 1) {
        if (sub.data === undefined) sub.data = index;
      } else {
        node = sub;
      }
    }
  });
  return root;
}

/** acl_trie.go Search: the index of the operation Dapr applies to `path` (normalised, lower case), or undefined for none. */
export function daprTrieSearch(root: DaprNode, path: string): number | undefined {
  return daprTrieWalk(root, path).index;
}

/**
 * acl_trie.go Search, also telling, when it finds none, the branch its walk took: the first declared
 * operation below the last node it reached (undefined when it took no branch at all).
 */
export function daprTrieWalk(root: DaprNode, path: string): { index: number | undefined; branch: number | undefined } {
  const parts = path.split("/");
  let node: DaprNode | undefined = root;
  let reached: DaprNode | undefined;
  const none = () => ({ index: undefined, branch: reached === undefined ? undefined : firstBelow(reached) });
  for (let i = 1; i < parts.length; i++) {
    const isEnd = i === parts.length - 1;
    node = daprFindSubNode(node, `/${parts[i]}`, isEnd);
    if (node === undefined) return none();
    reached = node;
    if (node.data !== undefined) {
      if (!isEnd && node.char.endsWith("/*") && !node.char.endsWith("/**")) continue;
      return { index: node.data, branch: undefined };
    } else if (isEnd) {
      const wildcard = daprFindSubNode(node, "/*", isEnd);
      if (wildcard?.data !== undefined) return { index: wildcard.data, branch: undefined };
      if (wildcard !== undefined) reached = wildcard;
    }
  }
  return none();
}

function firstBelow(node: DaprNode): number | undefined {
  let first = node.data;
  for (const sub of node.subNodes) {
    const below = firstBelow(sub);
    if (below !== undefined && (first === undefined || below < first)) first = below;
  }
  return first;
}

/** acl_trie.go findNodeWithWildcard: the first child, in insertion order, that matches. */
function daprFindSubNode(node: DaprNode, char: string, isEnd: boolean): DaprNode | undefined {
  for (const sub of node.subNodes) {
    if (sub.char === char) return sub;
    if (sub.char === "/*") {
      if (isEnd) return sub;
      continue;
    }
    if (sub.char === "/**") return sub;
    if (daprIsMatch(char, sub.char)) return sub;
  }
  return undefined;
}

/** acl_trie.go isMatch: '*' matches any run of characters, empty included. */
function daprIsMatch(target: string, pattern: string): boolean {
  let row = new Array<boolean>(pattern.length + 1).fill(false);
  row[0] = true;
  for (let j = 1; j <= pattern.length && pattern[j - 1] === "*"; j++) row[j] = true;
  for (let i = 1; i <= target.length; i++) {
    const next = new Array<boolean>(pattern.length + 1).fill(false);
    for (let j = 1; j <= pattern.length; j++) {
      if (pattern[j - 1] === "*") next[j] = next[j - 1]! || row[j]!;
      else if (target[i - 1] === pattern[j - 1]) next[j] = row[j - 1]!;
    }
    row = next;
  }
  return row[pattern.length]!;
}

/** The first verb (or "gRPC") the two sets of entries decide differently, as meshward reads each. */
function differingKey(a: readonly OperationRule[], b: readonly OperationRule[], fallback: Action): string | undefined {
  const verbs = new Set<string>();
  for (const rule of [...a, ...b]) for (const verb of rule.httpVerb) if (verb !== "*") verbs.add(verb);
  const keys = [...[...verbs].sort(), "*"];
  for (const verb of keys) {
    if (httpAction(a, verb, fallback) !== httpAction(b, verb, fallback)) return verb === "*" ? "the other verbs" : verb;
  }
  if (grpcAction(a, fallback) !== grpcAction(b, fallback)) return "gRPC calls";
  return undefined;
}

function httpAction(rules: readonly OperationRule[], verb: string, fallback: Action): Action {
  return rules.find((rule) => rule.httpVerb.includes(verb))?.action ?? rules.find((rule) => rule.httpVerb.includes("*"))?.action ?? fallback;
}

function grpcAction(rules: readonly OperationRule[], fallback: Action): Action {
  return (rules.find((rule) => rule.httpVerb.length === 0) ?? rules.find((rule) => rule.action === "deny"))?.action ?? fallback;
}
