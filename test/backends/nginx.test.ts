import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CaIdentitySource } from "../../src/identity/ca-source.ts";
import type { FileSinkEvent } from "../../src/identity/file-sink.ts";
import { createHttpsServer, httpsRequest, type MtlsHttpsServer } from "../../src/transport/index.ts";
import { exec } from "../helpers/exec.ts";
import { startNginx, type RunningNginx } from "../helpers/nginx.ts";
import { foreignIdentity, quietTlsLogger, startMeshCa, type ForeignIdentity, type IdentityFiles, type MeshCa } from "./fixtures.ts";

// Real nginx (one worker) with meshward identities written by the real file sink:
//  - as a server with ssl_verify_client on, called by the SDK client, curl and openssl s_client;
//  - as a client (proxy_ssl_certificate) of a meshward SDK HTTPS server, which sees nginx's SPIFFE ID;
//  - certificate rotation: the file sink rewrites the files and reloads nginx (on-rotate).
const TD = "nginx.backends.test";
const NGINX_ID = `spiffe://${TD}/ns/backends/nginx`;
let ca: MeshCa | undefined;
let nginx: RunningNginx | undefined;
let sdk: MtlsHttpsServer | undefined;
let nginxSource: CaIdentitySource;
let nginxFiles: IdentityFiles;
let app: CaIdentitySource;
let appFiles: IdentityFiles;
let foreign: ForeignIdentity;
let reloadScript: string;
const sinkEvents: FileSinkEvent[] = [];

/** The server block for nginx as an mTLS server (the lines docs/backends.md shows). */
export function nginxServerBlock(port: number, files: IdentityFiles): string {
  return `
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate         ${files.cert};
    ssl_certificate_key     ${files.key};
    ssl_client_certificate  ${files.bundle};
    ssl_verify_client       on;
    ssl_verify_depth        2;
    ssl_protocols           TLSv1.2 TLSv1.3;
    location / { return 200 "verified=$ssl_client_verify serial=$ssl_client_serial\\n"; }
  }`;
}

/** One proxy location for nginx as a client of a meshward server. */
function proxyLocation(path: string, upstreamPort: number, lines: { cert?: IdentityFiles; trusted: string; name: string; noReuse?: boolean }): string {
  return `
    location ${path} {${lines.noReuse ? "\n      proxy_ssl_session_reuse       off;" : ""}
      proxy_pass                    https://127.0.0.1:${upstreamPort}/;
      ${lines.cert ? `proxy_ssl_certificate         ${lines.cert.cert};\n      proxy_ssl_certificate_key     ${lines.cert.key};` : ""}
      proxy_ssl_trusted_certificate ${lines.trusted};
      proxy_ssl_verify              on;
      proxy_ssl_verify_depth        2;
      proxy_ssl_name                ${lines.name};
      proxy_ssl_server_name         on;
      proxy_ssl_protocols           TLSv1.2 TLSv1.3;
    }`;
}

beforeAll(async () => {
  ca = await startMeshCa(TD);
  reloadScript = join(ca.dir, "reload-nginx.sh");
  nginxSource = await ca.identity("nginx", { dnsNames: ["localhost"] });
  // The script appears once nginx runs; until then the on-rotate command is a no-op.
  nginxFiles = await ca.sink("nginx", nginxSource, `[ ! -x ${reloadScript} ] || ${reloadScript}`, (event) => sinkEvents.push(event));
  app = await ca.identity("app");
  appFiles = await ca.sink("app", app);
  foreign = await foreignIdentity(ca.dir, TD, "app", ["localhost"]);

  sdk = await createHttpsServer({ identity: await ca.identity("api", { dnsNames: ["localhost"] }), logger: quietTlsLogger }, (req, res) => {
    res.end(JSON.stringify({ caller: req.peer.spiffeId, path: req.url }));
  });
  await new Promise<void>((resolve) => sdk!.listen(0, "127.0.0.1", resolve));
  const sdkPort = (sdk.address() as { port: number }).port;

  nginx = await startNginx({
    ports: 2,
    http: ([serverPort, proxyPort]) => `${nginxServerBlock(serverPort!, nginxFiles)}
  server {
    listen 127.0.0.1:${proxyPort};
    ${proxyLocation("/", sdkPort, { cert: nginxFiles, trusted: nginxFiles.bundle, name: "localhost" })}
    ${/* nginx shares saved TLS sessions between locations with the same upstream address: without
      this, /nocert/ would resume the session "/" made WITH nginx's certificate (and rightly be let in). */ ""}
    ${proxyLocation("/nocert/", sdkPort, { trusted: nginxFiles.bundle, name: "localhost", noReuse: true })}
    ${proxyLocation("/wrongname/", sdkPort, { cert: nginxFiles, trusted: nginxFiles.bundle, name: "api.example.org" })}
    ${proxyLocation("/foreignca/", sdkPort, { cert: nginxFiles, trusted: foreign.files.bundle, name: "localhost" })}
  }`,
  });
  writeFileSync(reloadScript, `#!/bin/sh\nexec ${nginx.reloadCommand}\n`);
  chmodSync(reloadScript, 0o755);
});

afterAll(async () => {
  await nginx?.stop();
  await sdk?.meshward.close();
  await ca?.close();
});

const serverUrl = () => `https://127.0.0.1:${nginx!.ports[0]}/`;
const proxyUrl = (path: string) => `http://127.0.0.1:${nginx!.ports[1]}${path}`;
const stripZeros = (hex: string) => hex.toUpperCase().replace(/^0+/, "");

async function curl(args: string[]): Promise<{ status: string; body: string }> {
  const out = await exec("curl", ["-sS", "-o", "-", "-w", "\n%{http_code}", ...args]);
  const lines = out.stdout.split("\n");
  return { status: lines.pop() ?? "", body: lines.join("\n") + out.stderr };
}

/** The serial of the certificate nginx presents right now (openssl s_client, full chain verification). */
async function presentedSerial(): Promise<string> {
  const s = await exec("openssl", [
    "s_client", "-connect", `127.0.0.1:${nginx!.ports[0]}`, "-servername", "localhost", "-verify_hostname", "localhost",
    "-CAfile", appFiles.bundle, "-cert", appFiles.cert, "-key", appFiles.key, "-verify_return_error", "-no_ign_eof",
  ]);
  const x = await exec("openssl", ["x509", "-noout", "-serial"], { input: s.stdout });
  return stripZeros(x.stdout.trim().replace(/^serial=/, ""));
}

describe("nginx with ssl_verify_client on and a meshward identity", () => {
  it("the SDK client reaches it with its meshward certificate, and verifies nginx's SPIFFE ID", async () => {
    const res = await httpsRequest(serverUrl(), { identity: app, expect: NGINX_ID, logger: quietTlsLogger });
    expect(res.status, nginx!.log()).toBe(200);
    // nginx prints the serial as whole bytes (a leading 0 when the top nibble is 0); compare as numbers.
    const [, verified, serial] = /^verified=(\S+) serial=([0-9A-Fa-f]+)\n$/.exec(res.text()) ?? [];
    expect(verified, res.text()).toBe("SUCCESS");
    expect(stripZeros(serial ?? "")).toBe(stripZeros(app.current()!.svid.serial));
    expect(res.peer?.spiffeId).toBe(NGINX_ID);
  });

  it("the SDK client refuses nginx when it expects another SPIFFE ID", async () => {
    const error = await httpsRequest(serverUrl(), { identity: app, expect: `spiffe://${TD}/ns/backends/other`, logger: quietTlsLogger }).then(
      () => undefined,
      (e: unknown) => e as { code?: string },
    );
    expect(error?.code).toBe("E_SPIFFE_MISMATCH");
  });

  it("curl with the meshward files: 200; without a client certificate or with one from another CA: 400 from nginx", async () => {
    const common = ["--cacert", appFiles.bundle, "--resolve", `localhost:${nginx!.ports[0]}:127.0.0.1`, `https://localhost:${nginx!.ports[0]}/`];
    const ok = await curl(["--cert", appFiles.cert, "--key", appFiles.key, ...common]);
    expect(ok.status, ok.body).toBe("200");
    const none = await curl(common);
    expect(none.status).toBe("400");
    expect(none.body).toContain("No required SSL certificate was sent");
    const alien = await curl(["--cert", foreign.files.cert, "--key", foreign.files.key, ...common]);
    expect(alien.status).toBe("400");
    expect(alien.body).toContain("The SSL certificate error");
  });

  it("refuses TLS 1.1 (openssl s_client -tls1_1)", async () => {
    const s = await exec("openssl", ["s_client", "-connect", `127.0.0.1:${nginx!.ports[0]}`, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-cert", appFiles.cert, "-key", appFiles.key, "-no_ign_eof"]);
    expect(s.stdout).not.toContain("BEGIN CERTIFICATE");
    expect(s.stdout + s.stderr).toMatch(/alert protocol version|no protocols available|unsupported protocol/i);
  });
});

describe("nginx as a client (proxy_ssl_certificate) of a meshward SDK HTTPS server", () => {
  it("the SDK server sees nginx's SPIFFE ID", async () => {
    const out = await curl([proxyUrl("/hello")]);
    expect(out.status, nginx!.log()).toBe("200");
    expect(JSON.parse(out.body)).toEqual({ caller: NGINX_ID, path: "/hello" });
  });

  it.each([
    ["/nocert/", "without proxy_ssl_certificate the SDK server refuses nginx"],
    ["/wrongname/", "nginx refuses the SDK server when proxy_ssl_name is not in its certificate"],
    ["/foreignca/", "nginx refuses the SDK server when it trusts another CA"],
  ])("%s: %s (502)", async (path) => {
    const out = await curl([proxyUrl(path)]);
    expect(out.status).toBe("502");
  });
});

describe("rotation through the file sink and nginx -s reload", () => {
  it("after a renewal nginx presents the new certificate (serial checked with openssl s_client)", async () => {
    const before = stripZeros(nginxSource.current()!.svid.serial);
    expect(await presentedSerial()).toBe(before);
    const commandsBefore = sinkEvents.filter((e) => e.type === "command-finished").length;
    await nginxSource.renewNow();
    const after = stripZeros(nginxSource.current()!.svid.serial);
    expect(after).not.toBe(before);
    // The sink writes the files and runs the reload; nginx swaps workers asynchronously.
    const deadline = Date.now() + 15_000;
    let seen = await presentedSerial();
    while (seen !== after && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      seen = await presentedSerial();
    }
    expect(seen, nginx!.log()).toBe(after);
    const commands = sinkEvents.filter((e): e is Extract<FileSinkEvent, { type: "command-finished" }> => e.type === "command-finished").slice(commandsBefore);
    expect(commands.length).toBeGreaterThanOrEqual(1);
    expect(commands.every((c) => c.result.ok), JSON.stringify(commands)).toBe(true);
    // And the SDK client still gets through with the new certificate in place.
    const res = await httpsRequest(serverUrl(), { identity: app, expect: NGINX_ID, logger: quietTlsLogger });
    expect(res.status).toBe(200);
  });
});
