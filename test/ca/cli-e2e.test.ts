import { createPrivateKey } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requestCertificate } from "../../src/identity/ca-client.ts";
import { createCsr } from "../../src/pki/csr.ts";
import { generateKeyPair } from "../../src/pki/keys.ts";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { exec } from "../helpers/exec.ts";

// The whole CA through its CLI, as separate real processes, checked with openssl and curl.
describe("meshward ca / token / cert (real processes, real openssl and curl)", () => {
  let work: string;
  let caDir: string;
  let server: LongRunning | undefined;
  let address: string;

  const serve = async () => {
    const started = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--workload-ttl", "2h"], /listening on (\S+) as (\S+)/);
    server = started;
    address = started.match[1] as string;
    return started;
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "meshward-ca-e2e-"));
    caDir = join(work, "ca");
    const init = await runCli(["ca", "init", "--trust-domain", "example.test", "--dir", caDir]);
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toMatch(/Created a meshward CA for trust domain example\.test/);
    await serve();
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const createToken = async (namespace: string, appId: string, extra: string[] = []) => {
    const r = await runCli(["token", "create", "--dir", caDir, "--namespace", namespace, "--app-id", appId, ...extra]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split("\n");
    return lines[lines.length - 1] as string;
  };

  it("writes keys 0600 and refuses to overwrite an existing CA", async () => {
    expect(statSync(join(caDir, "issuer.key")).mode & 0o777).toBe(0o600);
    expect(statSync(join(caDir, "root.key")).mode & 0o777).toBe(0o600);
    const again = await runCli(["ca", "init", "--trust-domain", "example.test", "--dir", caDir]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/E_CA_EXISTS/);
    expect(readFileSync(join(caDir, "ca.json"), "utf8")).toMatch(/example\.test/);
  });

  it("issues a workload certificate that openssl verifies, with the SVID extensions", async () => {
    const token = await createToken("orders", "api");
    const out = join(work, "orders-api");
    const issued = await runCli(["cert", "issue", "--ca", address, "--bundle", join(caDir, "bundle.pem"), "--token", token, "--out", out]);
    expect(issued.code, issued.stderr).toBe(0);
    expect(issued.stdout).toMatch(/issued spiffe:\/\/example\.test\/ns\/orders\/api/);
    expect(statSync(join(out, "key.pem")).mode & 0o777).toBe(0o600);

    const certPem = readFileSync(join(out, "cert.pem"), "utf8");
    const blocks = certPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [];
    expect(blocks).toHaveLength(2);
    writeFileSync(join(out, "leaf.pem"), blocks[0] as string);
    writeFileSync(join(out, "issuer.pem"), blocks[1] as string);
    const verify = await exec("openssl", ["verify", "-CAfile", join(out, "bundle.pem"), "-untrusted", join(out, "issuer.pem"), join(out, "leaf.pem")]);
    expect(verify.stdout + verify.stderr).toMatch(/leaf\.pem: OK/);

    const text = await exec("openssl", ["x509", "-in", join(out, "leaf.pem"), "-noout", "-text"]);
    expect(text.stdout).toMatch(/URI:spiffe:\/\/example\.test\/ns\/orders\/api/);
    expect(text.stdout).toMatch(/CA:FALSE/);
    expect(text.stdout).toMatch(/Digital Signature/);
    expect(text.stdout).toMatch(/TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(text.stdout).toMatch(/ASN1 OID: prime256v1/);

    // The key stays on this host and matches the certificate.
    const certPub = await exec("openssl", ["x509", "-in", join(out, "leaf.pem"), "-noout", "-pubkey"]);
    const keyPub = await exec("openssl", ["pkey", "-in", join(out, "key.pem"), "-pubout"]);
    expect(certPub.stdout).toBe(keyPub.stdout);

    const inspect = await runCli(["cert", "inspect", join(out, "cert.pem")]);
    expect(inspect.code).toBe(0);
    expect(inspect.stdout).toMatch(/SPIFFE ID\s+spiffe:\/\/example\.test\/ns\/orders\/api/);
    expect(inspect.stdout).toMatch(/time left\s+1 hour 59 minutes left|time left\s+2 hours left/);
    const warn = await runCli(["cert", "inspect", join(out, "cert.pem"), "--warn", "3h"]);
    expect(warn.code).toBe(1);
  });

  it("refuses a reused join token and keeps serving", async () => {
    const token = await createToken("orders", "worker");
    const first = await runCli(["cert", "issue", "--ca", address, "--bundle", join(caDir, "bundle.pem"), "--token", token, "--out", join(work, "w1")]);
    expect(first.code, first.stderr).toBe(0);
    const second = await runCli(["cert", "issue", "--ca", address, "--bundle", join(caDir, "bundle.pem"), "--token", token, "--out", join(work, "w2")]);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/E_TOKEN_USED/);
    const health = await exec("curl", ["-sS", "--cacert", join(caDir, "bundle.pem"), `https://localhost:${address.split(":")[1]}/healthz`]);
    expect(health.stdout).toMatch(/"ok"/);
  });

  it("refuses a token used for another app id", async () => {
    const token = await createToken("orders", "api");
    const r = await runCli(["cert", "issue", "--ca", address, "--bundle", join(caDir, "bundle.pem"), "--token", token, "--app-id", "payments", "--out", join(work, "x")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_IDENTITY_MISMATCH/);
  });

  it("serves the bundle (PEM and SPIFFE JSON) and a CRL that reflects revocations", async () => {
    const port = address.split(":")[1];
    const bundle = await exec("curl", ["-sS", "--cacert", join(caDir, "bundle.pem"), `https://localhost:${port}/v1/bundle`]);
    expect(bundle.stdout).toBe(readFileSync(join(caDir, "bundle.pem"), "utf8"));
    const json = await exec("curl", ["-sS", "--cacert", join(caDir, "bundle.pem"), `https://localhost:${port}/v1/bundle?format=spiffe`]);
    const parsed = JSON.parse(json.stdout) as { keys: { use: string; x5c: string[] }[] };
    expect(parsed.keys[0]?.use).toBe("x509-svid");

    const token = await createToken("shop", "cart");
    const out = join(work, "cart");
    expect((await runCli(["cert", "issue", "--ca", address, "--bundle", join(caDir, "bundle.pem"), "--token", token, "--out", out])).code).toBe(0);
    const serial = (await exec("openssl", ["x509", "-in", join(out, "cert.pem"), "-noout", "-serial"])).stdout.trim().replace("serial=", "");

    const list = await runCli(["cert", "list", "--dir", caDir, "--json"]);
    const rows = JSON.parse(list.stdout) as { serial: string; spiffeId: string; status: string }[];
    expect(rows.find((r) => r.serial === serial)).toMatchObject({ spiffeId: "spiffe://example.test/ns/shop/cart", status: "valid" });

    const revoke = await runCli(["cert", "revoke", "--dir", caDir, "--serial", serial.toLowerCase()]);
    expect(revoke.code, revoke.stderr).toBe(0);
    expect(revoke.stdout).toMatch(/revoked 1 certificate/);
    const unknown = await runCli(["cert", "revoke", "--dir", caDir, "--serial", "DEADBEEF"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/E_CERT_UNKNOWN/);

    // The CA re-signs its CRL within its refresh interval (1 s by default).
    const crlFile = join(work, "crl.der");
    let crlText = "";
    for (let attempt = 0; attempt < 40 && !crlText.includes(serial); attempt++) {
      await exec("curl", ["-sS", "--cacert", join(caDir, "bundle.pem"), "-o", crlFile, `https://localhost:${port}/v1/crl`]);
      crlText = (await exec("openssl", ["crl", "-inform", "DER", "-in", crlFile, "-noout", "-text"])).stdout;
      if (!crlText.includes(serial)) await new Promise((r) => setTimeout(r, 250));
    }
    expect(crlText).toContain(`Serial Number: ${serial}`);
    // openssl refuses the revoked certificate when checking the CRL.
    writeFileSync(join(work, "crl.pem"), (await exec("openssl", ["crl", "-inform", "DER", "-in", crlFile])).stdout);
    const blocks = readFileSync(join(out, "cert.pem"), "utf8").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [];
    writeFileSync(join(out, "leaf.pem"), blocks[0] as string);
    writeFileSync(join(out, "issuer.pem"), blocks[1] as string);
    const check = await exec("openssl", ["verify", "-crl_check", "-CRLfile", join(work, "crl.pem"), "-CAfile", join(out, "bundle.pem"), "-untrusted", join(out, "issuer.pem"), join(out, "leaf.pem")]);
    expect(check.code).not.toBe(0);
    expect(check.stdout + check.stderr).toMatch(/certificate revoked/);
  });

  it("cert revoke takes the certificates renewed from the revoked one, and the CRL lists them", async () => {
    const token = await createToken("shop", "stolen");
    const out = join(work, "stolen");
    expect((await runCli(["cert", "issue", "--ca", address, "--bundle", join(caDir, "bundle.pem"), "--token", token, "--out", out])).code).toBe(0);
    const serialOf = async (file: string) => (await exec("openssl", ["x509", "-in", file, "-noout", "-serial"])).stdout.trim().replace("serial=", "");
    const stolen = await serialOf(join(out, "cert.pem"));
    // Whoever holds the certificate and its key renews it onto a key of their own (over mTLS with it, as a workload renews).
    const connection = {
      address,
      bundlePem: readFileSync(join(caDir, "bundle.pem"), "utf8"),
      trustDomain: "example.test",
      clientCertificate: { certChainPem: readFileSync(join(out, "cert.pem"), "utf8"), privateKey: createPrivateKey(readFileSync(join(out, "key.pem"))) },
    };
    const keyPair = generateKeyPair();
    const renewed = await requestCertificate(connection, { csrPem: await createCsr({ keyPair }), token: "", validator: "SVID", namespace: "", appId: "" });
    writeFileSync(join(out, "renewed.pem"), renewed.certChainPem);
    const thief = await serialOf(join(out, "renewed.pem"));

    const revoke = await runCli(["cert", "revoke", "--dir", caDir, "--serial", stolen, "--reason", "keyCompromise"]);
    expect(revoke.code, revoke.stderr).toBe(0);
    expect(revoke.stdout).toContain(`revoked 1 certificate: ${stolen}`);
    expect(revoke.stdout).toContain(`also revoked 1 certificate renewed from it: ${thief}`);
    const list = JSON.parse((await runCli(["cert", "list", "--dir", caDir, "--json", "--spiffe-id", "spiffe://example.test/ns/shop/stolen"])).stdout) as { serial: string; status: string }[];
    expect(list.map((r) => r.status)).toEqual(["revoked", "revoked"]);
    const again = await requestCertificate(
      { ...connection, clientCertificate: { certChainPem: renewed.certChainPem, privateKey: keyPair.privateKey } },
      { csrPem: await createCsr({ keyPair: generateKeyPair() }), token: "", validator: "SVID", namespace: "", appId: "" },
    ).then(
      () => "signed",
      (error: { code?: string }) => error.code,
    );
    expect(again).toBe("E_CERT_REVOKED");
    const crlFile = join(work, "crl-lineage.der");
    let crlText = "";
    for (let attempt = 0; attempt < 40 && !crlText.includes(thief); attempt++) {
      await exec("curl", ["-sS", "--cacert", join(caDir, "bundle.pem"), "-o", crlFile, `https://localhost:${address.split(":")[1]}/v1/crl`]);
      crlText = (await exec("openssl", ["crl", "-inform", "DER", "-in", crlFile, "-noout", "-text"])).stdout;
      if (!crlText.includes(thief)) await new Promise((r) => setTimeout(r, 250));
    }
    expect(crlText).toContain(`Serial Number: ${stolen}`);
    expect(crlText).toContain(`Serial Number: ${thief}`);
  });

  it("keeps every issuance across kill -9 and restart", async () => {
    const token = await createToken("shop", "billing");
    const issued = await runCli(["cert", "issue", "--ca", address, "--bundle", join(caDir, "bundle.pem"), "--token", token, "--out", join(work, "billing"), "--json"]);
    const serial = (JSON.parse(issued.stdout) as { serial: string }).serial;
    await server?.stop("SIGKILL");
    await serve();
    const list = await runCli(["cert", "list", "--dir", caDir, "--spiffe-id", "spiffe://example.test/ns/shop/billing", "--json"]);
    expect((JSON.parse(list.stdout) as { serial: string }[]).map((r) => r.serial)).toContain(serial);
  });

  it("refuses to serve with a group-readable key file and says how to fix it", async () => {
    const copy = join(work, "ca-copy");
    await exec("cp", ["-a", caDir, copy]);
    chmodSync(join(copy, "issuer.key"), 0o640);
    const r = await runCli(["ca", "serve", "--dir", copy, "--listen", "127.0.0.1:0"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_KEY_PERMISSIONS/);
    expect(r.stderr).toMatch(/chmod 600/);
  });
});
