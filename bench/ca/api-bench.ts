/**
 * CA API throughput: SignCertificate over gRPC (mTLS renewal, the steady-state load of a
 * mesh) with N concurrent clients against `meshward ca serve` in its own process, and
 * `cfssl serve` (Debian's golang-cfssl) signing the same CSRs in the same run, over HTTPS
 * (-tls-cert/-tls-key with a P-256 server certificate made by openssl at bench time), so that
 * both sides pay for TLS; --cfssl-plain adds cfssl on plain HTTP as an extra figure.
 * Run: node --import tsx bench/ca/api-bench.ts [--duration-ms 5000] [--rounds 3] [--clients 64] [--cfssl-plain]
 *        [--client h2|grpc-js] [--signing-workers N] [--ca-bin path/to/bin/meshward.js]
 * The load generator runs in this process; its CPU per certificate is printed beside the
 * server's, because on a 2-core machine every millisecond it burns is one the CA lacks.
 * The CA runs from a bundle of the working tree (scripts/bundle.ts, as `npm run build` makes it
 * and the published package runs it), written to node_modules/.cache/meshward-bench-ca: never a
 * dist/ left over from an older build, and not the TypeScript sources through tsx.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest, Agent } from "node:http";
import { request as httpsRequest, Agent as HttpsAgent } from "node:https";
import { createServer } from "node:net";
import * as os from "node:os";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { caLayout, initAnchors } from "../../src/ca/anchors.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { requestCertificate } from "../../src/identity/ca-client.ts";
import { createCsr, encodePrivateKey, generateKeyPair } from "../../src/pki/index.ts";
import { decodeSignResponse, encodeSignRequest, SIGN_CERTIFICATE_PATH, TokenValidator } from "../../src/protocol/sentry.ts";
import { openStore } from "../../src/store/index.ts";
import { bundleCli } from "../../scripts/bundle.ts";
import { connectH2Grpc } from "./h2-grpc-client.ts";

export type LoadClient = "h2" | "grpc-js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const TD = "bench.test";

export interface ApiBenchResult {
  readonly clients: number;
  readonly loadClient: LoadClient;
  readonly meshwardGrpcPerSec: number;
  /** CPU milliseconds per certificate: the CA process (all threads) and the load generator. */
  readonly meshwardCpuMsPerCert: { readonly server: number; readonly client: number };
  /** cfssl serve over HTTPS (-tls-cert/-tls-key), the headline comparison. */
  readonly cfsslPerSec: number | undefined;
  readonly cfsslCpuMsPerCert: { readonly server: number; readonly client: number } | undefined;
  /** cfssl serve on plain HTTP, measured only with cfsslPlain / --cfssl-plain. */
  readonly cfsslPlainPerSec: number | undefined;
  /** meshward / cfssl over TLS: the median of the rounds' ratios. */
  readonly ratioToCfssl: number | undefined;
  /** meshward / cfssl over TLS in each round. */
  readonly ratios: readonly number[];
  readonly target: number;
}

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** utime + stime of a process (all its threads), in ms, from /proc (Linux). */
function processCpuMs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return Number.NaN;
  }
}
const CLOCK_TICKS = 100;

/** CPU ms of each thread of a process (Linux /proc/<pid>/task), keyed "tid name". */
function threadCpuMs(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
        const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
        const fields = stat.slice(stat.lastIndexOf(") ") + 2).split(" ");
        out.set(`${tid} ${name}`, ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS);
      } catch {
        // the thread ended between the listing and the read
      }
    }
  } catch {
    // not Linux, or the process is gone
  }
  return out;
}

/** Per-thread CPU per certificate between two threadCpuMs readings, busiest first, threads under 0.01 ms/cert folded into "other". */
function threadBreakdown(pid: number, before: Map<string, number>, after: Map<string, number>, done: number): string {
  const rows: [string, number][] = [];
  let other = 0;
  for (const [key, ms] of after) {
    const perCert = (ms - (before.get(key) ?? 0)) / done;
    const tid = key.slice(0, key.indexOf(" "));
    const name = tid === String(pid) ? "main" : `${key.slice(key.indexOf(" ") + 1)}:${tid}`;
    if (perCert >= 0.01) rows.push([name, perCert]);
    else other += perCert;
  }
  rows.sort((a, b) => b[1] - a[1]);
  return [...rows.map(([name, v]) => `${name} ${v.toFixed(3)}`), `other ${other.toFixed(3)}`].join(", ");
}

function ownCpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

export function waitForLine(child: ChildProcess, pattern: RegExp, stream: "stdout" | "stderr" = "stdout", timeoutMs = 20_000): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let text = "";
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${pattern}: ${text}`)), timeoutMs);
    child[stream]!.on("data", (d) => {
      text += d;
      const m = text.match(pattern);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    child.once("exit", (code) => reject(new Error(`exited with ${code}: ${text}`)));
  });
}

export async function makeCsrPool(size: number): Promise<string[]> {
  const pool: string[] = [];
  for (let i = 0; i < size; i++) pool.push(await createCsr({ keyPair: generateKeyPair() }));
  return pool;
}

const CALL_TIMEOUT_MS = 30_000;

/** Runs `clients` loops of `call` for `durationMs`; returns completed calls per second. */
export async function drive(clients: number, durationMs: number, call: (client: number, i: number) => Promise<void>): Promise<{ perSec: number; errors: number; done: number }> {
  let done = 0;
  let errors = 0;
  const deadline = performance.now() + durationMs;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, client) => {
      let i = 0;
      while (performance.now() < deadline) {
        let timer: NodeJS.Timeout | undefined;
        try {
          // A call that never answers is a failure, not a bench that hangs.
          const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error("no answer within 30 s")), CALL_TIMEOUT_MS)));
          await Promise.race([call(client, i++), timeout]);
          done += 1;
        } catch {
          errors += 1;
        } finally {
          clearTimeout(timer);
        }
      }
    }),
  );
  return { perSec: (done * 1000) / (performance.now() - start), errors, done };
}

/** The bench CA of one round (both servers sign with its issuer), created on first use. */
async function ensureCa(work: string): Promise<string> {
  const dir = join(work, "ca");
  if (!existsSync(caLayout(dir).bundle)) await initAnchors({ dir, trustDomain: TD, now: new Date() });
  return dir;
}

async function benchMeshward(work: string, clients: number, durationMs: number, csrs: string[], loadClient: LoadClient, signingWorkers: number | undefined, bin: string): Promise<Figures> {
  const dir = await ensureCa(work);
  const store = await openStore(`sqlite:${caLayout(dir).database}`);
  await store.migrate();
  const t = await issueJoinToken(store, { spiffeId: `spiffe://${TD}/ns/bench/client`, ttlMs: 3_600_000, uses: clients });
  await store.close();

  // Thousands of certificates a second from one address: the per-address limit is off here.
  writeFileSync(join(work, "ca.yaml"), `signRateLimit: false\n${signingWorkers !== undefined ? `signingWorkers: ${signingWorkers}\n` : ""}`);
  const configArgs = ["--config", join(work, "ca.yaml")];
  const ca = spawn(process.execPath, [bin, "ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0", "--log-level", "warn", ...configArgs], { stdio: ["ignore", "pipe", "pipe"] });
  try {
    const [, address] = await waitForLine(ca, /listening on (\S+) as/);
    const bundlePem = readFileSync(caLayout(dir).bundle, "utf8");
    // Each client joins once with the token, then renews with its SVID over mTLS.
    const calls: ((request: Uint8Array) => Promise<Buffer>)[] = [];
    const closers: (() => void)[] = [];
    let tlsVersion: string | undefined;
    for (let c = 0; c < clients; c++) {
      const keyPair = generateKeyPair();
      const signed = await requestCertificate({ address: address as string, bundlePem, trustDomain: TD }, { csrPem: await createCsr({ keyPair }), token: t.token, validator: "JOIN_TOKEN", namespace: "", appId: "" });
      const keyPem = encodePrivateKey(keyPair.privateKey);
      if (loadClient === "h2") {
        const client = await connectH2Grpc(address as string, { ca: bundlePem, key: keyPem, cert: signed.certChainPem, servername: "localhost" });
        tlsVersion ??= client.tlsVersion;
        calls.push((request) => client.unary(SIGN_CERTIFICATE_PATH, request));
        closers.push(() => client.close());
      } else {
        const creds = grpc.credentials.createSsl(Buffer.from(bundlePem), Buffer.from(keyPem), Buffer.from(signed.certChainPem), { checkServerIdentity: () => undefined });
        const channel = new grpc.Client(address as string, creds, { "grpc.ssl_target_name_override": "localhost" });
        calls.push(
          (request) =>
            new Promise((resolve, reject) =>
              channel.makeUnaryRequest(SIGN_CERTIFICATE_PATH, (m: Uint8Array) => Buffer.from(m), (b: Buffer) => b, request, (error, value) => (error ? reject(error) : resolve(value as Buffer))),
            ),
        );
        closers.push(() => channel.close());
      }
    }
    const call = async (client: number, i: number) => {
      const message = { id: "", token: "", trustDomain: TD, namespace: "", certificateSigningRequest: Buffer.from(csrs[(client * 7919 + i) % csrs.length] as string), tokenValidator: TokenValidator.SVID };
      const reply = decodeSignResponse(await calls[client]!(encodeSignRequest(message)));
      if (reply.workloadCertificate.length === 0) throw new Error("empty certificate chain");
    };
    await drive(clients, Math.min(1000, durationMs / 4), call); // warm-up
    const serverBefore = processCpuMs(ca.pid!);
    const threadsBefore = threadCpuMs(ca.pid!);
    const clientBefore = ownCpuMs();
    const { perSec, errors, done } = await drive(clients, durationMs, call);
    const cpuMsPerCert = { server: (processCpuMs(ca.pid!) - serverBefore) / done, client: (ownCpuMs() - clientBefore) / done };
    const threads = threadBreakdown(ca.pid!, threadsBefore, threadCpuMs(ca.pid!), done);
    if (errors > 0) console.log(`  (meshward: ${errors} failed calls)`);
    for (const close of closers) close();
    return { perSec, cpuMsPerCert, tlsVersion, threads };
  } finally {
    // SIGTERM first, so that a CA run with --cpu-prof writes its profile.
    const exited = new Promise((resolve) => ca.once("exit", resolve));
    ca.kill("SIGTERM");
    const timer = setTimeout(() => ca.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  }
}

/**
 * A serving certificate for cfssl, made at bench time with openssl in the bench's temporary
 * directory (removed afterwards): a throwaway ECDSA P-256 CA and a leaf for 127.0.0.1 signed by
 * it, the same key type as meshward's SVIDs. The load generator trusts that CA only.
 */
function makeCfsslTlsFiles(work: string): { cert: string; key: string; caPem: string } {
  const d = join(work, "cfssl-tls");
  mkdirSync(d, { recursive: true, mode: 0o700 });
  const f = (n: string) => join(d, n);
  const openssl = (...args: string[]) => {
    const r = spawnSync("openssl", args, { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
  };
  writeFileSync(f("leaf.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n");
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f("ca.key"), "-out", f("ca.pem"), "-days", "1", "-subj", "/CN=bench cfssl TLS CA");
  openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=127.0.0.1");
  openssl("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial", "-days", "1", "-extfile", f("leaf.ext"), "-out", f("server.pem"));
  return { cert: f("server.pem"), key: f("server.key"), caPem: readFileSync(f("ca.pem"), "utf8") };
}

async function benchCfssl(work: string, clients: number, durationMs: number, csrs: string[], tls: boolean): Promise<Figures> {
  const layout = caLayout(await ensureCa(work));
  // cfssl wants an unencrypted issuer key; the bench CA was created without a passphrase.
  writeFileSync(join(work, "cfssl-config.json"), JSON.stringify({ signing: { default: { expiry: "24h", usages: ["digital signature", "server auth", "client auth"] } } }));
  const port = await freePort();
  const tlsFiles = tls ? makeCfsslTlsFiles(work) : undefined;
  const tlsArgs = tlsFiles ? ["-tls-cert", tlsFiles.cert, "-tls-key", tlsFiles.key] : [];
  const cfssl = spawn("cfssl", ["serve", "-address", "127.0.0.1", "-port", String(port), "-ca", layout.issuerCert, "-ca-key", layout.issuerKey, "-config", join(work, "cfssl-config.json"), ...tlsArgs], { stdio: ["ignore", "pipe", "pipe"] });
  try {
    await waitForLine(cfssl, /Now listening on/, "stderr");
    // Keep-alive on both: the handshake is paid once per client, as meshward's h2 clients pay it.
    const agent = tlsFiles ? new HttpsAgent({ keepAlive: true, maxSockets: clients, ca: tlsFiles.caPem }) : new Agent({ keepAlive: true, maxSockets: clients });
    const send = tlsFiles ? httpsRequest : httpRequest;
    let tlsVersion: string | undefined;
    const call = (client: number, i: number) =>
      new Promise<void>((resolve, reject) => {
        const body = JSON.stringify({ certificate_request: csrs[(client * 7919 + i) % csrs.length] });
        const req = send({ host: "127.0.0.1", port, path: "/api/v1/cfssl/sign", method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
          if (tlsFiles && tlsVersion === undefined) tlsVersion = (res.socket as TLSSocket).getProtocol?.() ?? undefined;
          let text = "";
          res.on("data", (d) => (text += d));
          res.on("end", () => (res.statusCode === 200 && text.includes('"success":true') ? resolve() : reject(new Error(text))));
        });
        req.on("error", reject);
        req.end(body);
      });
    await drive(clients, Math.min(1000, durationMs / 4), call);
    const serverBefore = processCpuMs(cfssl.pid!);
    const clientBefore = ownCpuMs();
    const { perSec, errors, done } = await drive(clients, durationMs, call);
    const cpuMsPerCert = { server: (processCpuMs(cfssl.pid!) - serverBefore) / done, client: (ownCpuMs() - clientBefore) / done };
    if (errors > 0) console.log(`  (cfssl${tls ? " TLS" : ""}: ${errors} failed calls)`);
    agent.destroy();
    return { perSec, cpuMsPerCert, tlsVersion };
  } finally {
    cfssl.kill("SIGKILL");
  }
}

interface Figures {
  readonly perSec: number;
  readonly cpuMsPerCert: { readonly server: number; readonly client: number };
  readonly tlsVersion: string | undefined;
  /** The server's CPU per certificate by thread (meshward only). */
  readonly threads?: string;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * `rounds` paired runs (default 3), the order alternating (meshward first, then cfssl first),
 * each round on a fresh bench CA: on a shared machine the load of other processes drifts over
 * minutes, and a pair measured seconds apart sees about the same. The result holds the medians.
 */
export async function runApiBench(options: { durationMs?: number; clients?: number; rounds?: number; loadClient?: LoadClient; signingWorkers?: number; caBin?: string; cfsslPlain?: boolean; print?: boolean } = {}): Promise<ApiBenchResult> {
  const durationMs = options.durationMs ?? 5000;
  const clients = options.clients ?? 64;
  const rounds = Math.max(1, options.rounds ?? 3);
  const loadClient = options.loadClient ?? "h2";
  const print = options.print ?? true;
  const ms = (x: number) => x.toFixed(3);
  const cpuLine = (who: string, f: Figures) => `    CPU per certificate: ${who} ${ms(f.cpuMsPerCert.server)} ms, load generator ${ms(f.cpuMsPerCert.client)} ms, sum ${ms(f.cpuMsPerCert.server + f.cpuMsPerCert.client)} ms`;
  const work = mkdtempSync(join(tmpdir(), "meshward-bench-ca-"));
  try {
    const csrs = await makeCsrPool(256);
    const caBin = options.caBin ?? (await bundleCli(join(ROOT, "node_modules/.cache/meshward-bench-ca")));
    if (print) console.log(`CA API, ${clients} concurrent keep-alive clients, ${durationMs} ms per figure, ${rounds} rounds; node ${process.version} (OpenSSL ${process.versions.openssl}), ${os.availableParallelism()} cores, load average ${os.loadavg()[0]!.toFixed(2)}`);
    const cfssl = async (roundWork: string, tls: boolean): Promise<Figures | undefined> => {
      try {
        return await benchCfssl(roundWork, clients, durationMs, csrs, tls);
      } catch (error) {
        console.log(`  cfssl${tls ? " (TLS)" : ""} not measured: ${(error as Error).message} (install it with: bash scripts/ensure-system-deps.sh --bench)`);
        return undefined;
      }
    };
    const meshwardRuns: Figures[] = [];
    const cfsslRuns: Figures[] = [];
    const plainRuns: Figures[] = [];
    const ratios: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const roundWork = join(work, `round-${round}`);
      mkdirSync(roundWork);
      const runMeshward = () => benchMeshward(roundWork, clients, durationMs, csrs, loadClient, options.signingWorkers, caBin);
      let meshward: Figures;
      let cfsslTls: Figures | undefined;
      if (round % 2 === 0) {
        meshward = await runMeshward();
        cfsslTls = await cfssl(roundWork, true);
      } else {
        cfsslTls = await cfssl(roundWork, true);
        meshward = await runMeshward();
      }
      const cfsslPlain = options.cfsslPlain ? await cfssl(roundWork, false) : undefined;
      meshwardRuns.push(meshward);
      if (cfsslTls !== undefined) {
        cfsslRuns.push(cfsslTls);
        ratios.push(meshward.perSec / cfsslTls.perSec);
      }
      if (cfsslPlain !== undefined) plainRuns.push(cfsslPlain);
      if (!print) continue;
      console.log(`  round ${round + 1}/${rounds} (${round % 2 === 0 ? "meshward first" : "cfssl first"}; load average ${os.loadavg()[0]!.toFixed(2)})`);
      console.log(`  meshward gRPC SignCertificate (mTLS ${meshward.tlsVersion ?? "?"}, HTTP/2, renewal with an SVID, ${loadClient} clients${options.signingWorkers !== undefined ? `, signingWorkers ${options.signingWorkers}` : ""}): ${meshward.perSec.toFixed(0)} certs/s`);
      console.log(cpuLine("CA process", meshward));
      if (meshward.threads !== undefined) console.log(`      CA threads, ms/cert: ${meshward.threads}`);
      if (cfsslTls !== undefined) {
        console.log(`  cfssl serve /api/v1/cfssl/sign (HTTPS ${cfsslTls.tlsVersion ?? "?"}, HTTP/1.1 keep-alive, server-only TLS): ${cfsslTls.perSec.toFixed(0)} certs/s  -> meshward/cfssl = ${(meshward.perSec / cfsslTls.perSec).toFixed(2)}x`);
        console.log(cpuLine("cfssl process", cfsslTls));
      }
      if (cfsslPlain !== undefined) console.log(`  (extra) cfssl serve on plain HTTP: ${cfsslPlain.perSec.toFixed(0)} certs/s\n${cpuLine("cfssl process", cfsslPlain)}`);
    }
    const medianCpu = (runs: readonly Figures[]) => ({ server: median(runs.map((r) => r.cpuMsPerCert.server)), client: median(runs.map((r) => r.cpuMsPerCert.client)) });
    const result: ApiBenchResult = {
      clients,
      loadClient,
      meshwardGrpcPerSec: median(meshwardRuns.map((r) => r.perSec)),
      meshwardCpuMsPerCert: medianCpu(meshwardRuns),
      cfsslPerSec: cfsslRuns.length > 0 ? median(cfsslRuns.map((r) => r.perSec)) : undefined,
      cfsslCpuMsPerCert: cfsslRuns.length > 0 ? medianCpu(cfsslRuns) : undefined,
      cfsslPlainPerSec: plainRuns.length > 0 ? median(plainRuns.map((r) => r.perSec)) : undefined,
      ratioToCfssl: ratios.length > 0 ? median(ratios) : undefined,
      ratios,
      target: 5000,
    };
    if (print) {
      const m = result.meshwardCpuMsPerCert;
      console.log(`  median of ${rounds}: meshward ${result.meshwardGrpcPerSec.toFixed(0)} certs/s (CPU ${ms(m.server)} + ${ms(m.client)} ms)`);
      if (result.cfsslPerSec !== undefined) {
        const c = result.cfsslCpuMsPerCert!;
        console.log(`                cfssl over TLS ${result.cfsslPerSec.toFixed(0)} certs/s (CPU ${ms(c.server)} + ${ms(c.client)} ms); meshward/cfssl per round ${ratios.map((r) => r.toFixed(2)).join(", ")}, median ${result.ratioToCfssl!.toFixed(2)}x (target >= 1.00x: ${result.ratioToCfssl! >= 1 ? "MET" : "NOT MET"})`);
      }
      if (result.cfsslPlainPerSec !== undefined) console.log(`                cfssl on plain HTTP ${result.cfsslPlainPerSec.toFixed(0)} certs/s`);
      console.log("  (the load generator shares the 2 cores: its side of TLS, HTTP/2 or HTTP/1.1, protobuf or JSON is CPU the server under test cannot use, so it is counted for both)");
    }
    return result;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const client = process.argv[process.argv.indexOf("--client") + 1];
  const workers = process.argv.includes("--signing-workers") ? arg("--signing-workers", 0) : undefined;
  await runApiBench({
    rounds: arg("--rounds", 3),
    cfsslPlain: process.argv.includes("--cfssl-plain"),
    durationMs: arg("--duration-ms", 5000),
    clients: arg("--clients", 64),
    loadClient: process.argv.includes("--client") && client === "grpc-js" ? "grpc-js" : "h2",
    ...(workers !== undefined ? { signingWorkers: workers } : {}),
    // Another build of meshward to compare against: bin/meshward.js of a git worktree of an older commit, or a bundle.
    ...(process.argv.includes("--ca-bin") ? { caBin: process.argv[process.argv.indexOf("--ca-bin") + 1]! } : {}),
  });
}
