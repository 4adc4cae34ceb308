import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { exec } from "../helpers/exec.ts";

// Walks docs/getting-started.md steps 1–5 with the real CLI, a real CA process, curl and openssl,
// and checks the outputs the guide shows.
const ROOT = new URL("../../", import.meta.url).pathname;
const CLI = join(ROOT, "bin/meshward.js");
const work = mkdtempSync(join(tmpdir(), "meshward-getting-started-"));
let ca: ChildProcess | undefined;

afterAll(() => {
  ca?.kill("SIGKILL");
  rmSync(work, { recursive: true, force: true });
});

const meshward = (...args: string[]) => exec(process.execPath, [CLI, ...args], { cwd: work, timeoutMs: 30_000 });

function startCa(): Promise<string> {
  return new Promise((resolve, reject) => {
    ca = spawn(process.execPath, [CLI, "ca", "serve", "--dir", "./ca", "--listen", "127.0.0.1:0"], { cwd: work, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    const timer = setTimeout(() => reject(new Error(`the CA did not start: ${err}`)), 20_000);
    ca.stderr?.on("data", (d) => (err += d));
    ca.stdout?.on("data", (d) => {
      out += d;
      const match = /^meshward CA listening on (\S+) as (\S+)$/m.exec(out);
      if (match) {
        clearTimeout(timer);
        expect(match[2]).toBe("spiffe://example.test/ns/meshward-system/meshward-ca");
        resolve(match[1] as string);
      }
    });
    ca.on("exit", (code) => reject(new Error(`the CA exited with ${code}: ${err}`)));
  });
}

describe("docs/getting-started.md, steps 1–5", () => {
  it("init, serve, token, issue, inspect, verify, and a reused token is refused", async () => {
    const init = await meshward("ca", "init", "--trust-domain", "example.test", "--dir", "./ca");
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toContain("Created a meshward CA for trust domain example.test");
    expect(statSync(join(work, "ca/bundle.pem")).isFile()).toBe(true);

    const address = await startCa();
    const port = address.split(":").pop() as string;
    const ready = await exec("curl", ["-sS", "--cacert", "ca/bundle.pem", `https://localhost:${port}/readyz`], { cwd: work });
    expect(JSON.parse(ready.stdout).status).toBe("ready");

    const token = await meshward("token", "create", "--dir", "./ca", "--namespace", "shop", "--app-id", "orders");
    expect(token.code, token.stderr).toBe(0);
    const lines = token.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^join token \S+ for spiffe:\/\/example\.test\/ns\/shop\/orders: 1 use, expires /);
    const secret = lines.at(-1) as string;
    expect(secret).toMatch(/^mwjt_/);

    const issue = await meshward("cert", "issue", "--ca", address, "--bundle", "ca/bundle.pem", "--token", secret, "--out", "./orders");
    expect(issue.code, issue.stderr).toBe(0);
    expect(issue.stdout).toMatch(/^issued spiffe:\/\/example\.test\/ns\/shop\/orders \(serial [0-9A-F]+\), valid until .* \(23 hours 59 minutes left\)$/m);
    expect(statSync(join(work, "orders/key.pem")).mode & 0o777).toBe(0o600);

    const inspect = await meshward("cert", "inspect", "orders/cert.pem");
    expect(inspect.code).toBe(0);
    expect(inspect.stdout).toContain("SPIFFE ID   spiffe://example.test/ns/shop/orders");
    expect(inspect.stdout).toContain("issuer      O=SPIFFE, CN=meshward issuer example.test");
    expect(inspect.stdout).toContain("kind        workload (leaf) certificate, followed by 1 chain certificate");
    expect((await meshward("cert", "inspect", "orders/cert.pem", "--warn", "2d")).code).toBe(1);

    const verify = await exec("openssl", ["verify", "-CAfile", "orders/bundle.pem", "-untrusted", "orders/cert.pem", "orders/cert.pem"], { cwd: work });
    expect(verify.stdout.trim()).toBe("orders/cert.pem: OK");
    const san = await exec("openssl", ["x509", "-in", "orders/cert.pem", "-noout", "-ext", "subjectAltName"], { cwd: work });
    expect(san.stdout).toContain("URI:spiffe://example.test/ns/shop/orders");

    const list = await meshward("cert", "list", "--dir", "./ca");
    expect(list.stdout).toMatch(/valid\s+\S+\s+[0-9A-F:]{11}\s+join-token\s+spiffe:\/\/example\.test\/ns\/shop\/orders/);

    const again = await meshward("cert", "issue", "--ca", address, "--bundle", "ca/bundle.pem", "--token", secret, "--out", "./orders2");
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("[E_TOKEN_USED]");
    expect(readFileSync(join(work, "orders/cert.pem"), "utf8")).toContain("BEGIN CERTIFICATE");
  });
});
