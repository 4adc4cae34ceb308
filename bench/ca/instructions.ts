/**
 * Instructions per certificate of the CA's API, counted rather than timed: `meshward ca serve`
 * runs under `valgrind --tool=callgrind`, which counts the user-mode instructions of all its
 * threads (the main thread's HTTP/2, gRPC, attestation and store reads; the signing workers'
 * ECDSA; the SQLite writer thread; V8's compiler and GC threads). Counters are zeroed before each
 * round and dumped after exactly N renewals, so the figure does not move with whatever else the
 * machine is doing — which api-bench.ts's certificates per second and CPU per certificate do: on
 * two shared cores they moved 0.5–1.1× cfssl within an hour. Use this to judge a change to the
 * CA's per-certificate work (`--base REF` for an A/B in the same run); the issue-20 target itself
 * stays on api-bench.ts (time, against cfssl).
 *
 * Each build's CA gets its own CA directory; `--clients` keep-alive HTTP/2 clients (default 4)
 * join once with a join token, then renew with their SVID over mTLS, `--clients` calls in flight,
 * CSRs from a pool made beforehand (as api-bench.ts). The first `--settle` rounds (default 2)
 * are printed but not counted (V8's concurrent compiler threads, serialised under valgrind,
 * finish then); the figure is the floor of the rest with the median beside it.
 *   node --import tsx bench/ca/instructions.ts [--certs 400] [--warmup 400] [--clients 4] [--rounds 5] [--settle 2] [--node-args "<flags>"] [--base <git-ref>]... [--keep]
 * `--keep` leaves the dumps (one per build and round) for `callgrind_annotate`: JIT compile (V8's
 * compiler functions) moves a 200-certificate round by ±20 %, what is left of it far less.
 * Each build's CA directory and join token are made with that build's own code (its store schema).
 * Needs valgrind (Debian's valgrind); under it the CA signs ~50× slower, ~1 minute per build and round at the defaults.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { requestCertificate } from "../../src/identity/ca-client.ts";
import { createCsr, encodePrivateKey, generateKeyPair } from "../../src/pki/index.ts";
import { decodeSignResponse, encodeSignRequest, SIGN_CERTIFICATE_PATH, TokenValidator } from "../../src/protocol/sentry.ts";
import { bundleCli } from "../../scripts/bundle.ts";
import { ROOT } from "../proxy/children.ts";
import { makeCsrPool } from "./api-bench.ts";
import { connectH2Grpc, type H2GrpcClient } from "./h2-grpc-client.ts";

const flag = (name: string, fallback: number): number => (process.argv.includes(name) ? Number(process.argv[process.argv.indexOf(name) + 1]) : fallback);
const CERTS = flag("--certs", 400);
const WARMUP = flag("--warmup", 400);
const CLIENTS = flag("--clients", 4);
const ROUNDS = flag("--rounds", 5);
const SETTLE = flag("--settle", 2);
/** `--node-args "<flags>"`: Node/V8 flags for the counted CA, e.g. `--single-threaded` (V8's compiler and GC work on the thread that caused it: fewer rounds moved by a concurrent compile). */
const NODE_ARGS = process.argv.includes("--node-args") ? process.argv[process.argv.indexOf("--node-args") + 1]!.split(" ").filter((a) => a !== "") : [];
const BASES = process.argv.flatMap((arg, i) => (arg === "--base" && process.argv[i + 1] !== undefined ? [process.argv[i + 1]!] : []));
/** Per checkout (worktrees share one node_modules through a link): two worktrees' runs at once do not take each other's bundles and base trees. */
const CACHE = join(ROOT, "node_modules/.cache", `ca-instructions-${basename(ROOT)}`);
const TD = "bench.test";
/** Start-up under valgrind (module loading, the signing and writer threads) takes tens of seconds. */
const VALGRIND_READY_MS = 240_000;

interface CountedCa {
  readonly name: string;
  readonly pid: number;
  readonly out: string;
  /** Fresh connections for a round, made before the counters are zeroed (the CA closes idle sessions). */
  connect(): Promise<H2GrpcClient[]>;
  readonly child: ChildProcess;
}

/** The CLI bundle of another commit: a detached worktree sharing this checkout's node_modules. */
async function bundleAt(ref: string, index: number): Promise<[string, string]> {
  const tree = join(CACHE, `meshward-ca-instructions-base-${index}`);
  if (existsSync(tree)) execFileSync("git", ["worktree", "remove", "--force", tree], { cwd: ROOT });
  execFileSync("git", ["worktree", "add", "--detach", tree, ref], { cwd: ROOT, stdio: "ignore" });
  execFileSync("ln", ["-s", join(ROOT, "node_modules"), join(tree, "node_modules")]);
  const { bundleCli: bundleBase } = (await import(join(tree, "scripts/bundle.ts"))) as { bundleCli: (out: string) => Promise<string> };
  return [await bundleBase(join(CACHE, `meshward-ca-instructions-base-${index}-bundle`)), tree];
}

/** Whether the CA built from `tree` knows signRateLimit (2026-12-04 on): older ones refuse the key, and had no limit. */
function hasSignRateLimit(tree: string): boolean {
  return spawnSync("grep", ["-rlq", "signRateLimit", join(tree, "src/ca")]).status === 0;
}

function waitForListening(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const timer = setTimeout(() => reject(new Error(`the CA did not listen within ${VALGRIND_READY_MS / 1000} s: ${text}`)), VALGRIND_READY_MS);
    const onData = (d: Buffer) => {
      text += d;
      const m = /listening on (\S+) as/.exec(text);
      if (m !== null) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the CA exited (${code}) before listening: ${text}`));
    });
  });
}

async function startCountedCa(name: string, cli: string, tree: string, work: string): Promise<CountedCa> {
  const dir = join(work, name, "ca");
  mkdirSync(join(work, name), { recursive: true, mode: 0o700 });
  // The CA directory and its join token are made with the build's own code (its store schema).
  const { initAnchors, caLayout } = (await import(join(tree, "src/ca/anchors.ts"))) as typeof import("../../src/ca/anchors.ts");
  const { issueJoinToken } = (await import(join(tree, "src/ca/tokens.ts"))) as typeof import("../../src/ca/tokens.ts");
  const { openStore } = (await import(join(tree, "src/store/index.ts"))) as typeof import("../../src/store/index.ts");
  await initAnchors({ dir, trustDomain: TD, now: new Date() });
  const store = await openStore(`sqlite:${caLayout(dir).database}`);
  await store.migrate();
  const token = await issueJoinToken(store, { spiffeId: `spiffe://${TD}/ns/bench/client`, ttlMs: 3_600_000, uses: CLIENTS });
  await store.close();
  // Renewals from one address as fast as the client goes: the per-address limit is off here.
  const configArgs = hasSignRateLimit(tree) ? ["--config", join(work, name, "ca.yaml")] : [];
  writeFileSync(join(work, name, "ca.yaml"), "signRateLimit: false\n");
  const out = join(work, name, "callgrind.out");
  const child = spawn(
    "valgrind",
    ["--tool=callgrind", "--collect-atstart=yes", `--callgrind-out-file=${out}`, process.execPath, ...NODE_ARGS, cli, "ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0", "--log-level", "warn", ...configArgs],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const address = await waitForListening(child);
  const bundlePem = readFileSync(caLayout(dir).bundle, "utf8");
  const identities: { key: string; cert: string }[] = [];
  for (let c = 0; c < CLIENTS; c++) {
    const keyPair = generateKeyPair();
    const signed = await requestCertificate({ address, bundlePem, trustDomain: TD, timeoutMs: 120_000 }, { csrPem: await createCsr({ keyPair }), token: token.token, validator: "JOIN_TOKEN", namespace: "", appId: "" });
    identities.push({ key: encodePrivateKey(keyPair.privateKey), cert: signed.certChainPem });
  }
  const connect = () => Promise.all(identities.map(({ key, cert }) => connectH2Grpc(address, { ca: bundlePem, key, cert, servername: "localhost" })));
  return { name, pid: child.pid!, out, connect, child };
}

/** `count` SVID renewals, CLIENTS in flight; every answer must carry a certificate. */
async function renew(ca: CountedCa, clients: H2GrpcClient[], csrs: string[], count: number): Promise<void> {
  let next = 0;
  await Promise.all(
    clients.map(async (client) => {
      while (next < count) {
        const i = next++;
        const message = { id: "", token: "", trustDomain: TD, namespace: "", certificateSigningRequest: Buffer.from(csrs[i % csrs.length]!), tokenValidator: TokenValidator.SVID };
        const reply = decodeSignResponse(await client.unary(SIGN_CERTIFICATE_PATH, encodeSignRequest(message)));
        if (reply.workloadCertificate.length === 0) throw new Error(`${ca.name}: an answer without a certificate`);
      }
    }),
  );
}

const zero = (pid: number) => execFileSync("callgrind_control", ["--zero", String(pid)], { stdio: "ignore" });

/** Dumps a process's counters and returns the instructions since the last zero. */
function dump(pid: number, out: string): number {
  const dir = join(out, "..");
  const before = new Set(readdirSync(dir));
  execFileSync("callgrind_control", ["--dump", String(pid)], { stdio: "ignore" });
  const file = readdirSync(dir).find((f) => !before.has(f) && f.startsWith("callgrind.out"));
  if (file === undefined) throw new Error(`callgrind wrote no dump for ${pid}`);
  const totals = /^(?:summary|totals): (\d+)/m.exec(readFileSync(join(dir, file), "utf8"));
  if (totals === null) throw new Error(`no totals in ${file}`);
  return Number(totals[1]);
}

async function main(): Promise<void> {
  execFileSync("valgrind", ["--version"], { stdio: "ignore" });
  if (ROUNDS <= SETTLE) throw new Error(`--rounds ${ROUNDS} leaves no round after the ${SETTLE} settling rounds`);
  const builds: [string, string, string][] = [["meshward", await bundleCli(join(CACHE, "meshward-ca-instructions")), ROOT]];
  for (const [i, ref] of BASES.entries()) builds.push([BASES.length === 1 ? "base" : `base-${ref.replace(/[^A-Za-z0-9_-]/g, "_")}`, ...(await bundleAt(ref, i))]);
  const work = mkdtempSync(join(tmpdir(), "meshward-ca-instructions-"));
  const cas: CountedCa[] = [];
  try {
    const csrs = await makeCsrPool(64);
    for (const [name, cli, tree] of builds) cas.push(await startCountedCa(name, cli, tree, work));
    console.log(`instructions per certificate (callgrind, the CA's every thread), ${CERTS} SVID renewals after ${WARMUP} of warm-up, ${CLIENTS} in flight, Node ${process.version}${NODE_ARGS.length > 0 ? `, node ${NODE_ARGS.join(" ")}` : ""}`);
    for (const ca of cas) {
      const clients = await ca.connect();
      await renew(ca, clients, csrs, WARMUP).finally(() => clients.forEach((client) => client.close()));
    }
    const results = new Map<string, number[]>();
    for (let round = 1; round <= ROUNDS; round++) {
      for (const ca of cas) {
        const clients = await ca.connect();
        zero(ca.pid);
        await renew(ca, clients, csrs, CERTS).finally(() => clients.forEach((client) => client.close()));
        const perCert = dump(ca.pid, ca.out) / CERTS;
        results.set(ca.name, [...(results.get(ca.name) ?? []), perCert]);
        console.log(`  round ${round} ${ca.name.padEnd(9)} ${Math.round(perCert).toLocaleString("en")} instructions per certificate`);
      }
    }
    const counted = (xs: number[]) => xs.slice(SETTLE);
    const floor = (xs: number[]) => Math.min(...counted(xs));
    const median = (xs: number[]) => [...counted(xs)].sort((a, b) => a - b)[Math.floor((counted(xs).length - 1) / 2)]!;
    const fmt = (x: number) => Math.round(x).toLocaleString("en");
    console.log(`rounds ${SETTLE + 1}–${ROUNDS}: floor (median) instructions per certificate`);
    for (const [name, xs] of results) console.log(`  ${name.padEnd(9)} ${fmt(floor(xs))} (${fmt(median(xs))})`);
    const mesh = results.get("meshward")!;
    for (const [name] of builds.slice(1)) {
      const base = results.get(name)!;
      // Both builds' rounds drift together (GC, V8's tiering), so each round's ratio is printed too.
      const ratios = mesh.map((m, i) => m / base[i]!);
      console.log(`meshward / ${name}: floor ${((floor(mesh) / floor(base)) * 100).toFixed(2)} %, median ${((median(mesh) / median(base)) * 100).toFixed(2)} %; per round ${ratios.map((r) => `${(r * 100).toFixed(1)} %`).join(", ")} (median of the counted ${(median(ratios) * 100).toFixed(2)} %)`);
    }
  } finally {
    for (const ca of cas) ca.child.kill("SIGKILL");
    // `--keep`: the callgrind dumps (one per build and round, callgrind.out.<pid>.<n>) stay for callgrind_annotate.
    if (process.argv.includes("--keep")) console.log(`callgrind dumps kept in ${work}/<build>/`);
    else rmSync(work, { recursive: true, force: true });
  }
}

await main();
