import { Worker } from "node:worker_threads";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compileOperation, matchesOperation, PathSegments } from "../../src/policy/operation.ts";

/**
 * In-segment globs (`/reports/*-*-*.pdf`) against one long, attacker-chosen segment. Compiled to
 * a backtracking RegExp they cost cubic time in its length: ~25 minutes for 16 KiB, during which
 * the sidecar's event loop serves nobody. The decision runs in a worker thread so that the test's
 * timeout can end it: 10 s is a tripwire, not a measurement (the linear matcher takes
 * microseconds, the old one orders of magnitude more than 10 s).
 */
describe("in-segment globs are matched in linear time", () => {
  let worker: Worker | undefined;
  // Loading the sources through tsx takes the worker a few seconds: done before the test's clock starts.
  beforeAll(async () => {
    const tsx = import.meta.resolve("tsx/esm/api");
    const policy = new URL("../../src/policy/index.ts", import.meta.url).href;
    const source = `
      const { parentPort } = require("node:worker_threads");
      import(${JSON.stringify(tsx)})
        .then((tsx) => { tsx.register(); return import(${JSON.stringify(policy)}); })
        .then(({ compilePolicy, parseAccessControl }) => {
          parentPort.on("message", ({ rule, paths }) => {
            const policy = compilePolicy(parseAccessControl({ accessControl: { defaultAction: "deny", policies: [
              { appId: "orders", namespace: "shop", operations: [{ name: rule, httpVerb: ["GET"], action: "allow" }] },
            ] } }));
            const caller = { trustDomain: "public", namespace: "shop", appId: "orders" };
            parentPort.postMessage(paths.map((operation) => policy.decide({ caller, operation, verb: "GET" }).allowed));
          });
          parentPort.postMessage("ready");
        });
    `;
    worker = new Worker(source, { eval: true });
    expect(await nextMessage(worker)).toBe("ready");
  }, 60_000);
  afterAll(async () => {
    await worker?.terminate();
  });

  function nextMessage(from: Worker): Promise<unknown> {
    return new Promise((resolve, reject) => {
      from.once("message", resolve);
      from.once("error", reject);
      from.once("exit", (code) => reject(new Error(`the worker exited with ${code} before answering`)));
    });
  }

  /** decide() for each path under a policy allowing GET on `rule` only, in the worker thread. */
  function decideInWorker(rule: string, paths: readonly string[]): Promise<unknown> {
    const answer = nextMessage(worker!);
    worker!.postMessage({ rule, paths });
    return answer;
  }

  it(
    "a 16 KiB segment against /reports/*-*-*.pdf is decided, matching and not matching",
    async () => {
      const long = 16 * 1024;
      const matching = `/reports/${"-".repeat(long - 4)}.pdf`;
      const notMatching = `/reports/${"-".repeat(long)}`; // the worst case for a backtracking matcher
      // A matching segment, then one more: below the operation's name, which covers it (as in Dapr).
      const below = `/reports/${"-".repeat(long - 4)}.pdf/x`;
      expect(await decideInWorker("/reports/*-*-*.pdf", [matching, notMatching, below, "/reports/a-b-c.pdf", "/reports/a-b.pdf"])).toEqual([
        true,
        false,
        true,
        true,
        false,
      ]);
    },
    10_000,
  );
});

describe("the glob matcher agrees with a regular expression (short inputs)", () => {
  // A small deterministic PRNG so that a failure reproduces.
  let seed = 0x5eed1;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const alphabet = "ab-.";
  const word = (min: number, max: number) => {
    let out = "";
    for (let n = min + rand(max - min + 1); n > 0; n--) out += alphabet[rand(alphabet.length)];
    return out;
  };
  /** What a glob segment meant as a RegExp: each run of "*" is any characters but "/". */
  const reference = (glob: string) => new RegExp(`^${glob.split(/\*+/).map((piece) => piece.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&")).join("[^/]*")}$`);

  it("for random globs of 1 to 3 stars and random segments, placed between other segments", () => {
    const path = new PathSegments();
    let matched = 0;
    for (let i = 0; i < 400; i++) {
      let glob = word(0, 3);
      for (let stars = 1 + rand(3); stars > 0; stars--) glob += `*${word(0, 3)}`;
      if (glob === "*" || glob === "**") continue; // whole-segment wildcards, not in-segment globs
      const pattern = compileOperation(`/x/${glob}/*`);
      const regexp = reference(glob);
      for (let j = 0; j < 40; j++) {
        const segment = word(1, 10);
        if (segment === "." || segment === "..") continue;
        // The next segment draws from the same alphabet: a piece found past the segment's end must not count.
        path.load(`/x/${segment}/${word(1, 6).replaceAll(".", "a")}`);
        const expected = regexp.test(segment);
        expect(matchesOperation(pattern.segments, path), `${glob} against ${segment}`).toBe(expected);
        if (expected) matched++;
      }
    }
    // Both answers were exercised.
    expect(matched).toBeGreaterThan(1000);
    expect(matched).toBeLessThan(14000);
  });
});
