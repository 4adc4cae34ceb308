import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { exec } from "../helpers/exec.ts";
import { buildGoCheck, daprCsr, daprdToken, signCertificate } from "./daprd-client.ts";

// Ed25519 end to end: dapr/kit crypto/spiffe/spiffe.go makes daprd send Ed25519 CSRs (Dapr >= 1.18,
// per issue 16) and Sentry >= 1.18 generates Ed25519 anchors (dapr/dapr pkg/sentry/server/ca).
// `ca init --key-type ed25519` makes such a CA; Go's standard library (Debian golang-go, offline)
// verifies the chain with crypto/x509 and completes a crypto/tls handshake with it.
describe("Ed25519 CA, CSRs and chains, checked by openssl and by Go's crypto/x509 and crypto/tls", () => {
  let work: string;
  let caDir: string;
  let ca: LongRunning | undefined;
  let address: string;
  let goCheck: string;
  const sentryId = "spiffe://public/ns/dapr-system/dapr-sentry";

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-ed25519-"));
    caDir = join(work, "ca");
    goCheck = await buildGoCheck();
    const init = await runCli(["ca", "init", "--trust-domain", "public", "--dir", caDir, "--key-type", "ed25519"]);
    expect(init.code, init.stderr).toBe(0);
    const started = await startCli(
      ["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--serving-spiffe-id", sentryId, "--default-validator", "insecure", "--allow-insecure-dev"],
      /listening on (\S+) as (\S+)/,
    );
    ca = started;
    address = started.match[1] as string;
  }, 240_000);

  afterAll(async () => {
    await ca?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const identity = async (appId: string) => {
    const { csrPem, keyPem } = await daprCsr(goCheck, "ed25519");
    const issued = await signCertificate({
      address,
      trustAnchorsPem: readFileSync(join(caDir, "bundle.pem"), "utf8"),
      sentryId,
      appId,
      namespace: "default",
      csrPem,
      ...daprdToken({}),
    });
    const dir = join(work, appId);
    await exec("mkdir", ["-p", dir]);
    writeFileSync(join(dir, "chain.pem"), issued.chainPem);
    writeFileSync(join(dir, "key.pem"), keyPem, { mode: 0o600 });
    writeFileSync(join(dir, "issuer.pem"), issued.chain.slice(1).map((c) => c.toString()).join(""));
    writeFileSync(join(dir, "leaf.pem"), issued.chain[0]!.toString());
    return { ...issued, dir, keyPem };
  };

  it("ca init --key-type ed25519 makes an Ed25519 root and issuer; ca status reads it", async () => {
    for (const file of ["root.pem", "issuer.pem"]) {
      const text = await exec("openssl", ["x509", "-in", join(caDir, file), "-noout", "-text"]);
      expect(text.stdout).toMatch(/Public Key Algorithm: ED25519/);
      expect(text.stdout).toMatch(/Signature Algorithm: ED25519/);
    }
    const status = await runCli(["ca", "status", "--dir", caDir]);
    expect(status.code, status.stderr).toBe(0);
    const bad = await runCli(["ca", "init", "--trust-domain", "public", "--dir", join(work, "other"), "--key-type", "ed448"]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/ed25519/);
  });

  it("signs a daprd Ed25519 CSR (empty subject); openssl verifies the all-Ed25519 chain", async () => {
    const orders = await identity("orders");
    expect(orders.spiffeId).toBe("spiffe://public/ns/default/orders");
    expect(orders.chain[0]!.publicKey.asymmetricKeyType).toBe("ed25519");
    const verify = await exec("openssl", ["verify", "-CAfile", join(caDir, "bundle.pem"), "-untrusted", join(orders.dir, "issuer.pem"), "-purpose", "sslclient", join(orders.dir, "leaf.pem")]);
    expect(verify.stdout + verify.stderr).toMatch(/leaf\.pem: OK/);
    const text = await exec("openssl", ["x509", "-in", join(orders.dir, "leaf.pem"), "-noout", "-text"]);
    expect(text.stdout).toMatch(/Signature Algorithm: ED25519/);
    expect(text.stdout).toMatch(/Digital Signature/);
    expect(text.stdout).not.toMatch(/Key Encipherment/);
  }, 60_000);

  it("Go's crypto/x509 verifies the chain and crypto/tls completes an mTLS handshake with it", async () => {
    const orders = await identity("orders");
    const checkout = await identity("checkout");
    const go: ChildProcess = spawn(goCheck, ["verify", join(caDir, "bundle.pem"), join(orders.dir, "chain.pem"), join(orders.dir, "key.pem"), orders.spiffeId, checkout.spiffeId], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    go.stdout!.on("data", (d) => (out += d));
    go.stderr!.on("data", (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => go.on("close", resolve));
    try {
      const port = await new Promise<number>((resolve, reject) => {
        const timer = setInterval(() => {
          const m = /LISTENING (\d+)/.exec(out);
          if (m) {
            clearInterval(timer);
            resolve(Number(m[1]));
          } else if (go.exitCode !== null || /FAIL/.test(out)) {
            clearInterval(timer);
            reject(new Error(`go check failed: ${out}`));
          }
        }, 20);
      });
      expect(out).toMatch(/X509 OK/);
      const received = await new Promise<string>((resolve, reject) => {
        const socket = connect({
          host: "127.0.0.1",
          port,
          ca: readFileSync(join(caDir, "bundle.pem"), "utf8"),
          cert: checkout.chainPem,
          key: checkout.keyPem,
          minVersion: "TLSv1.3",
          checkServerIdentity: (_host, cert) => (cert.subjectaltname === `URI:${orders.spiffeId}` ? undefined : new Error(`unexpected server ${cert.subjectaltname}`)),
        });
        let data = "";
        socket.on("data", (d) => (data += d));
        socket.on("end", () => resolve(data));
        socket.on("error", reject);
      });
      expect(received).toBe("hello from go\n");
      expect(await exited).toBe(0);
      expect(out).toMatch(new RegExp(`HANDSHAKE OK ${checkout.spiffeId} TLS1.3`));
    } finally {
      if (go.exitCode === null) go.kill("SIGKILL");
    }
  }, 60_000);

  it("Go refuses the chain against another root, so its check can fail", async () => {
    const orders = await identity("orders");
    const other = join(work, "other-ca");
    expect((await runCli(["ca", "init", "--trust-domain", "public", "--dir", other, "--key-type", "ed25519"])).code).toBe(0);
    const result = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(goCheck, ["verify", join(other, "bundle.pem"), join(orders.dir, "chain.pem"), join(orders.dir, "key.pem"), orders.spiffeId, "spiffe://public/ns/default/x"], { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      child.stdout.on("data", (d) => (out += d));
      child.on("close", (code) => resolve({ code, out }));
    });
    expect(result.code).toBe(1);
    expect(result.out).toMatch(/FAIL: x509 verify: x509: certificate signed by unknown authority/);
  }, 60_000);
});
