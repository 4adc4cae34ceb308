/**
 * The CA as several replicas (issue 17), over the API: certs/s of 3 `meshward ca serve`
 * replicas on one PostgreSQL next to 1 replica on SQLite, in the same run, with the same load
 * (N h2 clients renewing with their SVID over mTLS; client c talks to replica c mod 3).
 * PostgreSQL is Debian's, started in a temp dir as the tests do (test/helpers/postgres.ts).
 * Run: node --import tsx bench/ca/ha-bench.ts [--duration-ms 5000] [--clients 64]
 * On a 2-core machine the three replicas, PostgreSQL and the load generator share the same
 * two cores, so this measures the cost of the shared store, not the gain of more machines.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as os from "node:os";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { caLayout, initAnchors } from "../../src/ca/anchors.ts";
import { issueJoinToken } from "../../src/ca/tokens.ts";
import { requestCertificate } from "../../src/identity/ca-client.ts";
import { createCsr, encodePrivateKey, generateKeyPair } from "../../src/pki/index.ts";
import { decodeSignResponse, encodeSignRequest, SIGN_CERTIFICATE_PATH, TokenValidator } from "../../src/protocol/sentry.ts";
import { openStore } from "../../src/store/index.ts";
import { bundleCli } from "../../scripts/bundle.ts";
import { startPostgres } from "../../test/helpers/postgres.ts";
import { drive, makeCsrPool, waitForLine } from "./api-bench.ts";
import { connectH2Grpc } from "./h2-grpc-client.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const TD = "bench-ha.test";
const PASSPHRASE = "bench passphrase";

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

async function measure(bin: string, dirs: readonly string[], storeUrl: string | undefined, passphraseFile: string, clients: number, durationMs: number, csrs: string[]): Promise<number> {
  const children: ChildProcess[] = [];
  try {
    const addresses: string[] = [];
    for (const dir of dirs) {
      // Thousands of certificates a second from one address: the per-address limit is off here.
      const config = join(dir, "..", `${dir.split("/").pop()}-bench.yaml`);
      writeFileSync(config, "signRateLimit: false\n");
      const child = spawn(process.execPath, [bin, "ca", "serve", "--dir", dir, "--config", config, "--listen", "127.0.0.1:0", "--log-level", "warn", "--passphrase-file", passphraseFile, ...(storeUrl ? ["--store", storeUrl] : [])], { stdio: ["ignore", "pipe", "pipe"] });
      children.push(child);
      addresses.push((await waitForLine(child, /listening on (\S+) as/))[1] as string);
    }
    const store = await openStore(storeUrl ?? `sqlite:${caLayout(dirs[0]!).database}`);
    await store.migrate();
    const t = await issueJoinToken(store, { spiffeId: `spiffe://${TD}/ns/bench/client`, ttlMs: 3_600_000, uses: clients });
    await store.close();
    const bundlePem = readFileSync(caLayout(dirs[0]!).bundle, "utf8");
    const calls: ((request: Uint8Array) => Promise<Buffer>)[] = [];
    const closers: (() => void)[] = [];
    for (let c = 0; c < clients; c++) {
      const address = addresses[c % addresses.length]!;
      const keyPair = generateKeyPair();
      const signed = await requestCertificate({ address, bundlePem, trustDomain: TD }, { csrPem: await createCsr({ keyPair }), token: t.token, validator: "JOIN_TOKEN", namespace: "", appId: "" });
      const client = await connectH2Grpc(address, { ca: bundlePem, key: encodePrivateKey(keyPair.privateKey), cert: signed.certChainPem, servername: "localhost" });
      calls.push((request) => client.unary(SIGN_CERTIFICATE_PATH, request));
      closers.push(() => client.close());
    }
    const call = async (client: number, i: number) => {
      const message = { id: "", token: "", trustDomain: TD, namespace: "", certificateSigningRequest: Buffer.from(csrs[(client * 7919 + i) % csrs.length]!), tokenValidator: TokenValidator.SVID };
      const reply = decodeSignResponse(await calls[client]!(encodeSignRequest(message)));
      if (reply.workloadCertificate.length === 0) throw new Error("empty certificate chain");
    };
    await drive(clients, Math.min(1000, durationMs / 4), call);
    const { perSec, errors } = await drive(clients, durationMs, call);
    if (errors > 0) console.log(`  (${errors} failed calls)`);
    for (const close of closers) close();
    return perSec;
  } finally {
    for (const child of children) child.kill("SIGKILL");
  }
}

export async function runHaBench(options: { durationMs?: number; clients?: number } = {}): Promise<{ sqliteOne: number; postgresThree: number }> {
  const durationMs = options.durationMs ?? 5000;
  const clients = options.clients ?? 64;
  const work = mkdtempSync(join(tmpdir(), "meshward-bench-ha-"));
  const pg = await startPostgres();
  try {
    const passphraseFile = join(work, "passphrase");
    writeFileSync(passphraseFile, PASSPHRASE, { mode: 0o600 });
    const original = join(work, "ca");
    await initAnchors({ dir: original, trustDomain: TD, now: new Date(), passphrase: PASSPHRASE });
    const copies = [0, 1, 2].map((i) => {
      const dir = join(work, `replica-${i}`);
      cpSync(original, dir, { recursive: true });
      return dir;
    });
    const csrs = await makeCsrPool(256);
    const bin = await bundleCli(join(ROOT, "node_modules/.cache/meshward-bench-ca"));
    const sqliteOne = await measure(bin, [original], undefined, passphraseFile, clients, durationMs, csrs);
    const postgresThree = await measure(bin, copies, await pg.createDatabase("bench_ha"), passphraseFile, clients, durationMs, csrs);
    console.log(`CA API HA, ${clients} h2 clients renewing over mTLS, ${durationMs} ms each (${os.availableParallelism()} cores, load average ${os.loadavg()[0]!.toFixed(2)})`);
    console.log(`  1 replica on SQLite:      ${sqliteOne.toFixed(0)} certs/s`);
    console.log(`  3 replicas on PostgreSQL: ${postgresThree.toFixed(0)} certs/s  (${(postgresThree / sqliteOne).toFixed(2)}x)`);
    return { sqliteOne, postgresThree };
  } finally {
    await pg.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  await runHaBench({ durationMs: arg("--duration-ms", 5000), clients: arg("--clients", 64) });
}
