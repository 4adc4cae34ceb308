import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rotateIssuer } from "../../src/ca/rotation.ts";
import type { CaIdentitySource } from "../../src/identity/ca-source.ts";
import type { FileSink } from "../../src/identity/file-sink.ts";
import { certificatesFromPem } from "../../src/pki/pem.ts";
import { startNginx, type RunningNginx } from "../helpers/nginx.ts";
import { freePort, stopChild } from "../helpers/redis.ts";
import { startMeshCa, type IdentityFiles, type MeshCa } from "./fixtures.ts";
import { canConnect } from "../helpers/wait.ts";

// nginx `ssl_crl` and HAProxy `crl-file` turn on OpenSSL's whole-chain CRL check
// (X509_V_FLAG_CRL_CHECK_ALL): every certificate of a peer's chain needs a CRL, the issuer's one
// signed by the root. The files are what `meshward identity --out` writes (the real file sink fed
// by a real CA): crl.pem must hold the issuers' CRLs and the root's, before and after an issuer
// rotation, so that good peers get in and revoked ones are refused.
const TD = "crl-check-all.backends.test";
let ca: MeshCa;
let serverSource: CaIdentitySource;
let serverFiles: IdentityFiles & { sink: FileSink };
const clients = new Map<string, { source: CaIdentitySource; files: IdentityFiles }>();
const running: { stop(): Promise<void> }[] = [];

function crlBlocks(): number {
  return (readFileSync(join(serverFiles.dir, "crl.pem"), "utf8").match(/-----BEGIN X509 CRL-----/g) ?? []).length;
}

/** Pulls the CA's CRL set into the server's files until `ready` holds (the CA re-signs within its 1 s crlRefresh). */
async function refreshServerFiles(ready: () => boolean): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    await serverSource.refreshBundle();
    await serverFiles.sink.idle();
    if (ready()) return;
    if (Date.now() > deadline) throw new Error(`crl.pem never got there: ${crlBlocks()} CRL blocks`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function crlLists(serial: string): boolean {
  const text = spawnSync("openssl", ["crl", "-noout", "-text", "-in", join(serverFiles.dir, "crl.pem")], { encoding: "utf8" }).stdout;
  // `openssl crl` prints the first block only; every block lists every revocation (crl-publisher.ts).
  return text.toUpperCase().includes(serial.toUpperCase());
}

async function client(name: string): Promise<{ source: CaIdentitySource; files: IdentityFiles }> {
  const source = await ca.identity(name);
  const entry = { source, files: await ca.sink(name, source) };
  clients.set(name, entry);
  return entry;
}

async function revoke(name: string): Promise<string> {
  const serial = clients.get(name)!.source.current()!.svid.serial;
  await ca.server.store.revoke({ serial, revokedAt: new Date(), reason: "keyCompromise" });
  return serial;
}

/** An mTLS GET with the client's files: the HTTP status, or "refused" when the handshake failed. */
function call(port: number, name: string): Promise<number | "refused"> {
  const files = clients.get(name)!.files;
  return new Promise((resolve) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path: "/",
        servername: "localhost",
        ca: readFileSync(files.bundle),
        cert: readFileSync(files.cert),
        key: readFileSync(files.key),
        agent: false,
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      },
    );
    req.on("error", () => resolve("refused"));
    req.end();
  });
}

/** SHA-256 of the issuer certificate in the client's cert.pem (leaf + issuer). */
function issuerOf(name: string): string {
  const der = certificatesFromPem(readFileSync(clients.get(name)!.files.cert, "utf8"))[1]!;
  return new X509Certificate(der).fingerprint256;
}

function opensslVerify(name: string): string {
  const files = clients.get(name)!.files;
  const result = spawnSync(
    "openssl",
    ["verify", "-crl_check_all", "-CAfile", serverFiles.bundle, "-untrusted", files.cert, "-CRLfile", join(serverFiles.dir, "crl.pem"), files.cert],
    { encoding: "utf8" },
  );
  return `${result.stdout}${result.stderr}`.trim();
}

async function startServers(): Promise<{ nginx: number; haproxy: number }> {
  const nginx = await startNginx({
    ports: 1,
    http: ([port]) => `
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate         ${serverFiles.cert};
    ssl_certificate_key     ${serverFiles.key};
    ssl_client_certificate  ${serverFiles.bundle};
    ssl_verify_client       on;
    ssl_verify_depth        2;
    ssl_crl                 ${join(serverFiles.dir, "crl.pem")};
    ssl_protocols           TLSv1.2 TLSv1.3;
    location / { return 200 "verified=$ssl_client_verify\\n"; }
  }`,
  });
  running.push(nginx);
  const haproxy = await startHaproxy();
  return { nginx: nginx.ports[0]!, haproxy };
}

async function startHaproxy(): Promise<number> {
  const pem = join(serverFiles.dir, "haproxy.pem");
  writeFileSync(pem, `${readFileSync(serverFiles.cert, "utf8")}${readFileSync(serverFiles.key, "utf8")}`, { mode: 0o600 });
  let log = "";
  for (let attempt = 1; attempt <= 5; attempt++) {
    const port = await freePort();
    const cfg = join(ca.dir, `haproxy-${port}.cfg`);
    writeFileSync(
      cfg,
      `global
  maxconn 64
defaults
  mode http
  timeout connect 5s
  timeout client 10s
  timeout server 10s
frontend mtls_in
  bind 127.0.0.1:${port} ssl crt ${pem} ca-file ${serverFiles.bundle} crl-file ${join(serverFiles.dir, "crl.pem")} verify required ssl-min-ver TLSv1.2
  http-request return status 200 content-type text/plain lf-string "verify=%[ssl_c_verify]"
`,
    );
    log = "";
    const child: ChildProcess = spawn("haproxy", ["-db", "-f", cfg], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.on("data", (d: Buffer) => (log += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (log += d.toString()));
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && child.exitCode === null && !(await canConnect(port))) await new Promise((resolve) => setTimeout(resolve, 50));
    if (child.exitCode === null) {
      running.push({ stop: () => stopChild(child, "SIGUSR1") });
      return port;
    }
    if (!/Address already in use|cannot bind/i.test(log)) break;
  }
  throw new Error(`haproxy did not start:\n${log}`);
}

async function stopServers(): Promise<void> {
  for (const server of running.splice(0)) await server.stop();
}

beforeAll(async () => {
  ca = await startMeshCa(TD);
  serverSource = await ca.identity("server", { dnsNames: ["localhost"] });
  serverFiles = await ca.sink("server", serverSource);
});

afterAll(async () => {
  await stopServers();
  await ca?.close();
});

describe("crl.pem from `meshward identity --out` under OpenSSL's whole-chain CRL check (nginx ssl_crl, HAProxy crl-file)", () => {
  it("one issuer: a good client certificate is accepted, a revoked one refused", async () => {
    await client("good1");
    await client("bad1");
    const serial = await revoke("bad1");
    await refreshServerFiles(() => crlLists(serial));
    expect(opensslVerify("good1")).toMatch(/: OK$/);
    expect(opensslVerify("bad1")).toMatch(/certificate revoked/);
    const ports = await startServers();
    try {
      expect(await call(ports.nginx, "good1")).toBe(200);
      expect(await call(ports.nginx, "bad1")).toBe(400);
      expect(await call(ports.haproxy, "good1")).toBe(200);
      expect(await call(ports.haproxy, "bad1")).toBe("refused");
    } finally {
      await stopServers();
    }
    // The issuer's CRL and the root's.
    expect(crlBlocks()).toBe(2);
  });

  it("after an issuer rotation: certificates of the old and of the new issuer are accepted, revoked ones of either refused", async () => {
    await rotateIssuer({ dir: join(ca.dir, "ca"), now: new Date(), keepPrevious: true });
    // Until the CA publishes the previous issuer's CRL beside the current one's (it switched).
    const before = crlBlocks();
    await refreshServerFiles(() => crlBlocks() === before + 1);
    await client("good2");
    await client("bad2");
    // good2 and bad2 are signed by the new issuer, good1 and bad1 by the previous one.
    expect(issuerOf("good2")).toBe(issuerOf("bad2"));
    expect(issuerOf("good2")).not.toBe(issuerOf("good1"));
    const serial = await revoke("bad2");
    await refreshServerFiles(() => crlLists(serial));
    for (const name of ["good1", "good2"]) expect(opensslVerify(name)).toMatch(/: OK$/);
    for (const name of ["bad1", "bad2"]) expect(opensslVerify(name)).toMatch(/certificate revoked/);
    const ports = await startServers();
    try {
      for (const name of ["good1", "good2"]) {
        expect(await call(ports.nginx, name)).toBe(200);
        expect(await call(ports.haproxy, name)).toBe(200);
      }
      for (const name of ["bad1", "bad2"]) {
        expect(await call(ports.nginx, name)).toBe(400);
        expect(await call(ports.haproxy, name)).toBe("refused");
      }
    } finally {
      await stopServers();
    }
    // The previous issuer's CRL, the current issuer's and the root's.
    expect(crlBlocks()).toBe(3);
  });
});
