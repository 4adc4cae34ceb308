import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CaIdentitySource } from "../../src/identity/ca-source.ts";
import { createHttpsServer, httpsRequest, type MtlsHttpsServer } from "../../src/transport/index.ts";
import { exec } from "../helpers/exec.ts";
import { freePort, stopChild } from "../helpers/redis.ts";
import { quietTlsLogger, startMeshCa, type IdentityFiles, type MeshCa } from "./fixtures.ts";
import { canConnect } from "../helpers/wait.ts";

// Real HAProxy 2.6 with a meshward identity. HAProxy 2.6 wants certificate and key in ONE file,
// so the file sink's on-rotate command builds it (0600) from cert.pem + key.pem.
const TD = "haproxy.backends.test";
const HAPROXY_ID = `spiffe://${TD}/ns/backends/haproxy`;
let ca: MeshCa | undefined;
let haproxy: ChildProcess | undefined;
let haproxyLog = "";
let sdk: MtlsHttpsServer | undefined;
let files: IdentityFiles;
let app: CaIdentitySource;
let appFiles: IdentityFiles;
let ports: number[] = [];

/** The on-rotate command for HAProxy: combine certificate chain and key, privately and atomically. */
export function haproxyCombineCommand(dir: string): string {
  return `umask 077 && cat ${dir}/cert.pem ${dir}/key.pem > ${dir}/haproxy.pem.tmp && mv ${dir}/haproxy.pem.tmp ${dir}/haproxy.pem`;
}

function haproxyConfig(mtlsPort: number, plainPort: number, sdkPort: number): string {
  const pem = join(files.dir, "haproxy.pem");
  return `global
  maxconn 64
defaults
  mode http
  timeout connect 5s
  timeout client 10s
  timeout server 10s
frontend mtls_in
  bind 127.0.0.1:${mtlsPort} ssl crt ${pem} ca-file ${files.bundle} verify required ssl-min-ver TLSv1.2
  http-request return status 200 content-type text/plain lf-string "verify=%[ssl_c_verify] serial=%[ssl_c_serial,hex]"
frontend plain_in
  bind 127.0.0.1:${plainPort}
  default_backend meshward_api
backend meshward_api
  server api 127.0.0.1:${sdkPort} ssl crt ${pem} ca-file ${files.bundle} verify required verifyhost localhost sni str(localhost) ssl-min-ver TLSv1.2
`;
}

beforeAll(async () => {
  ca = await startMeshCa(TD);
  const source = await ca.identity("haproxy", { dnsNames: ["localhost"] });
  files = await ca.sink("haproxy", source, haproxyCombineCommand(join(ca.dir, "haproxy")));
  app = await ca.identity("app");
  appFiles = await ca.sink("app", app);
  sdk = await createHttpsServer({ identity: await ca.identity("api", { dnsNames: ["localhost"] }), logger: quietTlsLogger }, (req, res) => {
    res.end(JSON.stringify({ caller: req.peer.spiffeId }));
  });
  await new Promise<void>((resolve) => sdk!.listen(0, "127.0.0.1", resolve));
  const sdkPort = (sdk.address() as { port: number }).port;
  for (let attempt = 1; attempt <= 5; attempt++) {
    ports = [await freePort(), await freePort()];
    const cfg = join(ca.dir, "haproxy.cfg");
    writeFileSync(cfg, haproxyConfig(ports[0]!, ports[1]!, sdkPort));
    haproxyLog = "";
    const child = spawn("haproxy", ["-db", "-f", cfg], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.on("data", (d: Buffer) => (haproxyLog += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (haproxyLog += d.toString()));
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && child.exitCode === null && !(await canConnect(ports[0]!) && (await canConnect(ports[1]!)))) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    if (child.exitCode === null) {
      haproxy = child;
      return;
    }
    if (!/Address already in use|cannot bind/i.test(haproxyLog)) break;
  }
  throw new Error(`haproxy did not start:\n${haproxyLog}`);
});

afterAll(async () => {
  if (haproxy) await stopChild(haproxy, "SIGUSR1");
  await sdk?.meshward.close();
  await ca?.close();
});

describe("HAProxy with a meshward identity", () => {
  it("as a server (verify required): the SDK client gets in and verifies HAProxy's SPIFFE ID", async () => {
    const res = await httpsRequest(`https://127.0.0.1:${ports[0]}/`, { identity: app, expect: HAPROXY_ID, logger: quietTlsLogger });
    expect(res.status, haproxyLog).toBe(200);
    const match = /^verify=0 serial=([0-9A-F]+)$/.exec(res.text());
    expect(match, res.text()).not.toBeNull();
    const strip = (hex: string) => hex.toUpperCase().replace(/^0+/, "");
    expect(strip(match![1]!)).toBe(strip(app.current()!.svid.serial));
  });

  it("as a server: refuses a client without a certificate (handshake failure)", async () => {
    const out = await exec("curl", ["-sS", "--cacert", appFiles.bundle, "--resolve", `localhost:${ports[0]}:127.0.0.1`, `https://localhost:${ports[0]}/`]);
    expect(out.stdout).not.toContain("verify=");
    expect(out.stderr).toMatch(/alert|handshake|certificate required|SSL/i);
  });

  it("as a client (server ... ssl crt ... verify required verifyhost): the SDK server sees HAProxy's SPIFFE ID", async () => {
    const out = await exec("curl", ["-sS", `http://127.0.0.1:${ports[1]}/`]);
    expect(JSON.parse(out.stdout), out.stderr + haproxyLog).toEqual({ caller: HAPROXY_ID });
  });
});
