/**
 * Full and resumed mTLS handshakes per second: meshward SDK raw TLS server vs nginx
 * (`ssl_verify_client on`, 1 worker) in the same run, same client (a separate process).
 * Prints figures; no assertions. Run: node --import tsx bench/handshake/bench.ts [seconds] [concurrency] [rounds]
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createNetServer } from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, createSecureContext } from "node:tls";
import { fileURLToPath } from "node:url";

interface LoadJob {
  port: number;
  seconds: number;
  concurrency: number;
  resume: boolean;
  ca: string;
  cert: string;
  key: string;
}

const REQUEST = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

async function runLoad(job: LoadJob): Promise<{ handshakes: number; resumed: number; errors: number; seconds: number }> {
  const context = createSecureContext({ ca: job.ca, cert: job.cert, key: job.key, minVersion: "TLSv1.3" });
  const deadline = Date.now() + job.seconds * 1000;
  let handshakes = 0;
  let resumed = 0;
  let errors = 0;
  const start = Date.now();
  const loop = async () => {
    let session: Buffer | undefined;
    while (Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const socket = tlsConnect({ host: "127.0.0.1", port: job.port, secureContext: context, checkServerIdentity: () => undefined, ...(job.resume && session ? { session } : {}) });
        socket.on("session", (s: Buffer) => (session = s));
        socket.once("secureConnect", () => socket.write(REQUEST));
        socket.once("data", () => {
          handshakes++;
          if (socket.isSessionReused()) resumed++;
          socket.destroy();
          resolve();
        });
        socket.once("error", () => {
          errors++;
          socket.destroy();
          resolve();
        });
      });
    }
  };
  await Promise.all(Array.from({ length: job.concurrency }, loop));
  return { handshakes, resumed, errors, seconds: (Date.now() - start) / 1000 };
}

if (process.argv[2] === "--load") {
  process.stdout.write(JSON.stringify(await runLoad(JSON.parse(process.argv[3]!) as LoadJob)));
} else {
  await main();
}

/** The client runs in its own process so it does not share the SDK server's event loop. */
function inWorker(job: LoadJob): Promise<Awaited<ReturnType<typeof runLoad>>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "--load", JSON.stringify(job)], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.once("error", reject);
    child.once("close", () => {
      try {
        resolve(JSON.parse(out));
      } catch (error) {
        reject(error);
      }
    });
  });
}

async function freePort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function main(): Promise<void> {
  const seconds = Number(process.argv[2] ?? 5);
  const concurrency = Number(process.argv[3] ?? 8);
  const { createTestPki } = await import("../../test/helpers/openssl-pki.ts");
  const { createMtlsServer } = await import("../../src/transport/index.ts");
  const { staticIdentity } = await import("../../src/identity/source.ts");
  const pki = createTestPki({ trustDomain: "bench.local" });
  const serverLeaf = pki.issueLeaf({ spiffeId: "spiffe://bench.local/ns/bench/server", dnsNames: ["localhost"] });
  const clientLeaf = pki.issueLeaf({ spiffeId: "spiffe://bench.local/ns/bench/client" });
  const bundle = { trustDomain: "bench.local", rootsPem: pki.root.certPem, revokedSerials: new Set<string>() };
  const identity = staticIdentity({
    svid: { spiffeId: serverLeaf.spiffeId!, certChainPem: serverLeaf.chainPem, privateKey: serverLeaf.key, notBefore: serverLeaf.notBefore, notAfter: serverLeaf.notAfter, serial: serverLeaf.serial },
    bundle,
  });
  const quiet = { info() {}, warn() {}, error: (m: string) => console.error(m) };
  const sdk = await createMtlsServer({ identity, logger: quiet }, (socket) => {
    socket.once("data", () => socket.end("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"));
    socket.on("error", () => undefined);
  });
  await new Promise<void>((r) => sdk.listen(0, "127.0.0.1", r));
  const sdkPort = (sdk.address() as AddressInfo).port;

  // Baseline: bare node:tls with the same options, to separate Node's cost from meshward's layer.
  const { buildSecureContextOptions } = await import("../../src/tls/policy.ts");
  const { createServer: createBareTlsServer } = await import("node:tls");
  const bare = createBareTlsServer(buildSecureContextOptions({ svid: identity.current()!.svid, bundle }, "server"), (socket) => {
    socket.once("data", () => socket.end("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"));
    socket.on("error", () => undefined);
  });
  await new Promise<void>((r) => bare.listen(0, "127.0.0.1", r));
  const barePort = (bare.address() as AddressInfo).port;

  const nginxDir = mkdtempSync(join(tmpdir(), "meshward-bench-nginx-"));
  const nginxPort = await freePort();
  writeFileSync(
    join(nginxDir, "nginx.conf"),
    `worker_processes 1;\ndaemon off;\npid ${nginxDir}/nginx.pid;\nerror_log ${nginxDir}/error.log warn;\nevents { worker_connections 1024; }\n` +
      `http {\n access_log off;\n client_body_temp_path ${nginxDir}; proxy_temp_path ${nginxDir}; fastcgi_temp_path ${nginxDir}; uwsgi_temp_path ${nginxDir}; scgi_temp_path ${nginxDir};\n` +
      ` server {\n  listen 127.0.0.1:${nginxPort} ssl;\n  ssl_certificate ${serverLeaf.chainPath};\n  ssl_certificate_key ${serverLeaf.keyPath};\n  ssl_client_certificate ${pki.rootPath};\n  ssl_verify_client on;\n  ssl_verify_depth 2;\n` +
      `  ssl_protocols TLSv1.2 TLSv1.3;\n  ssl_ecdh_curve X25519:prime256v1:secp384r1;\n  ssl_session_tickets on;\n  ssl_session_cache shared:SSL:10m;\n  location / { return 200 "ok\\n"; }\n }\n}\n`,
  );
  const nginx = spawn("nginx", ["-p", nginxDir, "-c", join(nginxDir, "nginx.conf"), "-e", join(nginxDir, "error.log")], { stdio: "ignore" });
  try {
    await waitForPort(nginxPort);
    const base = { seconds, concurrency, ca: pki.root.certPem, cert: clientLeaf.chainPem, key: clientLeaf.keyPem };
    console.log(`mTLS handshakes, ${seconds}s each, median of rounds, ${concurrency} concurrent client loops in a separate client process, TLS 1.3, ECDSA P-256`);
    const rounds = Number(process.argv[4] ?? 3);
    const servers = [["nginx (1 worker)", nginxPort], ["bare node:tls", barePort], ["meshward SDK", sdkPort]] as const;
    const samples: Record<string, number[]> = {};
    const rows: Record<string, { perSecond: number; samples: string; resumedShare: number; errors: number }> = {};
    for (const resume of [false, true]) {
      for (let round = 0; round < rounds; round++) {
        // Rotate the order each round: load from other processes drifts, so no server always goes first.
        const order = servers.map((_, i) => servers[(i + round) % servers.length]!);
        for (const [name, port] of order) {
          const key = `${name}${resume ? " resumed" : " full"}`;
          const r = await inWorker({ ...base, port, resume });
          (samples[key] ??= []).push(Math.round(r.handshakes / r.seconds));
          const row = rows[key] ?? { perSecond: 0, samples: "", resumedShare: 0, errors: 0 };
          row.errors += r.errors;
          row.resumedShare = r.handshakes ? Math.round((100 * r.resumed) / r.handshakes) : 0;
          rows[key] = row;
        }
      }
    }
    for (const [key, values] of Object.entries(samples)) {
      const sorted = [...values].sort((a, b) => a - b);
      rows[key]!.perSecond = sorted[Math.floor(sorted.length / 2)]!;
      rows[key]!.samples = values.join(" / ");
    }
    console.table(rows);
    for (const kind of ["full", "resumed"]) {
      const ratio = rows[`meshward SDK ${kind}`]!.perSecond / rows[`nginx (1 worker) ${kind}`]!.perSecond;
      const layer = rows[`meshward SDK ${kind}`]!.perSecond / rows[`bare node:tls ${kind}`]!.perSecond;
      console.log(`${kind}: meshward / nginx = ${(ratio * 100).toFixed(0)}% (target >= 80%) ${ratio >= 0.8 ? "MET" : "NOT MET"}; meshward / bare node:tls = ${(layer * 100).toFixed(0)}%`);
    }
  } finally {
    nginx.kill("SIGTERM");
    await sdk.meshward.close();
    bare.close();
    await new Promise((r) => setTimeout(r, 200));
    rmSync(nginxDir, { recursive: true, force: true });
    pki.cleanup();
  }
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = tlsConnect({ host: "127.0.0.1", port, rejectUnauthorized: false });
      s.once("secureConnect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("nginx did not start");
}
