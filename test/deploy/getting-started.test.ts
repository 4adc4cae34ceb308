import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MESHWARD_BIN } from "../helpers/cli.ts";
import { exec } from "../helpers/exec.ts";

// Walks docs/getting-started.md steps 1–5 with the real CLI, a real CA process, curl and openssl,
// and checks the outputs the guide shows. The CLI is the run's bundle of the current sources
// (test/global-setup.ts), what `npm run build` gives users: started from the TypeScript sources,
// each of the dozen processes here cost ~1.1 s of CPU, and on two shared cores a step timed out.
// bin/meshward.js itself is run by test/e2e/readme.test.ts.
const CLI = MESHWARD_BIN;
const ROOT = new URL("../../", import.meta.url).pathname;
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
    writeFileSync(join(work, "ca-address"), address); // for step 6
    const port = address.split(":").pop() as string;
    const ready = await exec("curl", ["-sS", "--cacert", "ca/bundle.pem", `https://localhost:${port}/readyz`], { cwd: work });
    expect(JSON.parse(ready.stdout).status).toBe("ready");

    const token = await meshward("token", "create", "--dir", "./ca", "--namespace", "shop", "--app-id", "orders");
    expect(token.code, token.stderr).toBe(0);
    const lines = token.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^join token \S+ for spiffe:\/\/example\.test\/ns\/shop\/orders: 1 use, expires /);
    const secret = lines.at(-1) as string;
    expect(secret).toMatch(/^mwjt_/);

    // Step 4: the token in a file only its owner reads, not on the command line (no warning then).
    writeFileSync(join(work, "orders.token"), `${secret}\n`, { mode: 0o600 });
    const issue = await meshward("cert", "issue", "--ca", address, "--bundle", "ca/bundle.pem", "--token-file", "orders.token", "--out", "./orders");
    expect(issue.code, issue.stderr).toBe(0);
    expect(issue.stderr).toBe("");
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

    const again = await meshward("cert", "issue", "--ca", address, "--bundle", "ca/bundle.pem", "--token-file", "orders.token", "--out", "./orders2");
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("[E_TOKEN_USED]");
    expect(readFileSync(join(work, "orders/cert.pem"), "utf8")).toContain("BEGIN CERTIFICATE");
  });
});

// Step 6 as written (after steps 1–5 above, in the same directory): the token goes to a file,
// `identity --out ./orders` renews with the certificate step 4 left there, and restarts without a
// usable token (issue 15, item 4). The only change: port 0 for the status port.
describe("docs/getting-started.md, step 6", () => {
  const identities: ChildProcess[] = [];
  afterAll(() => {
    for (const child of identities) child.kill("SIGKILL");
  });

  /** Starts `meshward identity …` from the guide's words; resolves with its ready line and a stop function. */
  function startIdentity(args: string[]): Promise<{ line: string; stderr: () => string; stop: () => Promise<number | null> }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, ...args], { cwd: work, stdio: ["ignore", "pipe", "pipe"] });
      identities.push(child);
      let out = "";
      let err = "";
      const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
      const timer = setTimeout(() => reject(new Error(`identity did not start: ${err}`)), 20_000);
      child.stderr?.on("data", (d) => (err += d));
      child.stdout?.on("data", (d) => {
        out += d;
        const line = /^meshward identity ready: .*$/m.exec(out)?.[0];
        if (line !== undefined) {
          clearTimeout(timer);
          resolve({ line, stderr: () => err, stop: () => (child.kill("SIGTERM"), exited) });
        }
      });
      void exited.then((code) => reject(new Error(`identity exited with ${code}: ${err}`)));
    });
  }

  it("creates orders.token as shown, renews with the certificate in --out, and restarts without the token", async () => {
    const guide = readFileSync(join(ROOT, "docs/getting-started.md"), "utf8").split("## 6. Keep it fresh")[1]!;
    const block = /```sh\n([\s\S]*?)\n```/.exec(guide)![1]!;
    const [tokenLine, ...identityLines] = block.split("\n").filter((l) => !l.startsWith("#"));
    // The token line, through bash, with `meshward` meaning this checkout's CLI.
    const token = await exec("bash", ["-euo", "pipefail", "-c", `meshward() { node ${CLI} "$@"; }\n${tokenLine}`], { cwd: work });
    expect(token.code, token.stderr).toBe(0);
    expect(statSync(join(work, "orders.token")).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(work, "orders.token"), "utf8")).toMatch(/^mwjt_\S+\n$/);

    const caAddress = readFileSync(join(work, "ca-address"), "utf8");
    const words = identityLines.join(" ").replace(/\\\s+/g, " ").trim().split(/\s+/).slice(1);
    const args = words.map((w) => w.replace("127.0.0.1:8443", caAddress).replace("127.0.0.1:9090", "127.0.0.1:0"));
    expect(args.slice(0, 1)).toEqual(["identity"]);

    // ./orders holds step 4's certificate: renewed with it, the token stays unused.
    const first = await startIdentity(args);
    expect(first.line).toMatch(/^meshward identity ready: spiffe:\/\/example\.test\/ns\/shop\/orders \(serial [0-9A-F]+, valid until .*\) status=127\.0\.0\.1:\d+$/);
    expect(first.stderr()).toContain('"event":"resuming"');
    expect(await first.stop()).toBe(0);

    // Without a certificate in ./orders, the token from orders.token is used.
    rmSync(join(work, "orders"), { recursive: true });
    const second = await startIdentity(args);
    expect(second.stderr()).not.toContain('"event":"resuming"');
    expect(await second.stop()).toBe(0);

    // The token is spent now; a restart renews with the certificate the last run left.
    const third = await startIdentity(args);
    expect(third.stderr()).toContain('"event":"resuming"');
    expect(await third.stop()).toBe(0);
    const list = await meshward("cert", "list", "--dir", "./ca", "--json");
    const attestations = (JSON.parse(list.stdout) as { attestation: string }[]).map((r) => r.attestation).sort();
    expect(attestations).toEqual(["join-token", "join-token", "svid", "svid"]);
  });
});
