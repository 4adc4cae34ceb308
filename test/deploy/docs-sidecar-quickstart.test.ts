import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { MESHWARD_BIN } from "../helpers/cli.ts";

// docs/sidecar.md's quick start and its "See it work" steps, run as written through bash: the CA,
// the stand-in app, the orders sidecar, frontend's outbound-only sidecar, and the three curls, with
// the outputs the page shows (review newuser L1, newuser2 L1). The only changes: every listener is
// on loopback port 0, and the later commands get the addresses the processes report.
const ROOT = new URL("../../", import.meta.url).pathname;
const DOC = readFileSync(join(ROOT, "docs/sidecar.md"), "utf8");
const QUICK_START = DOC.split("\n## Quick start\n")[1]!.split("\n## ")[0]!;
const SEE_IT_WORK = QUICK_START.split("\n### See it work\n")[1]!.split("\n### ")[0]!;

/** The fenced blocks of a text, with their labels, in order. */
function fences(text: string): { label: string; body: string }[] {
  return [...text.matchAll(/^```(\S*)\n([\s\S]*?)^```$/gm)].map((m) => ({ label: m[1]!, body: m[2]! }));
}

/** A shell block's commands: comments dropped, `\` continuations joined, a heredoc kept whole. */
function commands(block: string): string[] {
  const lines = block.split("\n");
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!;
    if (line.trim() === "" || line.trimStart().startsWith("#")) continue;
    while (line.endsWith("\\") && i + 1 < lines.length) line = `${line.slice(0, -1)} ${lines[++i]!.trim()}`;
    const heredoc = /<<'(\w+)'$/.exec(line);
    if (heredoc) {
      while (i + 1 < lines.length && lines[i] !== heredoc[1]) line += `\n${lines[++i]!}`;
    }
    out.push(line);
  }
  return out;
}

/** `…` in a shown output line stands for anything. */
const shown = (line: string) => new RegExp(line.split(/\s*…\s*/).map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join(".*"));

const work = mkdtempSync(join(tmpdir(), "meshward-docs-sidecar-qs-"));
const bin = join(work, ".bin");
mkdirSync(bin);
writeFileSync(join(bin, "meshward"), `#!/bin/sh\nexec "${process.execPath}" "${MESHWARD_BIN}" "$@"\n`);
chmodSync(join(bin, "meshward"), 0o755);
const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` };
delete env.MESHWARD_TOKEN;

interface Background { command: string; child: ChildProcess; stdout: () => string; stderr: () => string }
const background: Background[] = [];
afterAll(async () => {
  for (const b of background) {
    const exited = new Promise((resolve) => (b.child.exitCode !== null || b.child.signalCode !== null ? resolve(null) : b.child.once("exit", resolve)));
    try {
      process.kill(-(b.child.pid as number), "SIGKILL"); // bash and what it started
    } catch {
      // already gone
    }
    await exited;
  }
  rmSync(work, { recursive: true, force: true });
});

/** Doc address → the address the process listening there reported. */
const addresses = new Map<string, string>();
const mapped = (command: string) => [...addresses].reduce((text, [doc, real]) => text.split(doc).join(real), command);

function run(command: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", command], { cwd: work, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    child.on("error", reject);
    child.on("close", (code) => (clearTimeout(timer), resolve({ code, stdout, stderr })));
  });
}

/** Starts a `… &` command with its listeners on 127.0.0.1:0; resolves once it printed where it listens. */
function start(command: string): Promise<Background> {
  const listeners: { doc: string; role: string }[] = [];
  let text = command.replace(/\s*&$/, "");
  text = text.replace(/--(listen|inbound|outbound|status) (\S+)/g, (_, flag: string, doc: string) => (listeners.push({ doc, role: flag }), `--${flag} 127.0.0.1:0`));
  text = text.replace(/\.listen\((\d+), "([\d.]+)"/g, (_, port: string, host: string) => (listeners.push({ doc: `${host}:${port}`, role: "app" }), `.listen(0, "${host}"`));
  text = mapped(text);
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", text], { cwd: work, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    let stdout = "";
    let stderr = "";
    const b: Background = { command, child, stdout: () => stdout, stderr: () => stderr };
    background.push(b);
    const timer = setTimeout(() => reject(new Error(`did not start: ${command}\n${stderr}`)), 30_000);
    child.stderr?.on("data", (d) => (stderr += d));
    child.stdout?.on("data", (d) => {
      stdout += d;
      const line = /^(meshward CA listening on .*|meshward sidecar ready: .*|orders app on .*)$/m.exec(stdout)?.[0];
      if (line === undefined) return;
      clearTimeout(timer);
      for (const { doc, role } of listeners) {
        const real = role === "listen" ? /listening on (\S+)/.exec(line)?.[1] : role === "app" ? /on (\S+)$/.exec(line)?.[1] : new RegExp(` ${role}=(\\S+)`).exec(line)?.[1];
        expect(real, `${role} in ${line}`).toMatch(/^127\.0\.0\.1:\d+$/);
        addresses.set(doc, real!);
        if (doc.startsWith("0.0.0.0:")) addresses.set(doc.replace("0.0.0.0", "127.0.0.1"), real!);
      }
      resolve(b);
    });
    child.on("exit", (code) => reject(new Error(`exited with ${code}: ${command}\n${stderr}`)));
  });
}

/** Runs a block's commands in order; `export NAME=…` sets NAME for the later ones. */
async function runBlock(block: string): Promise<{ command: string; code: number | null; stdout: string; stderr: string }[]> {
  const results: { command: string; code: number | null; stdout: string; stderr: string }[] = [];
  for (const command of commands(block)) {
    if (/&$/.test(command)) {
      await start(command);
      continue;
    }
    const exported = /^export (\w+)=/.exec(command)?.[1];
    const r = await run(exported === undefined ? mapped(command) : `${mapped(command)}\nprintf %s "$${exported}"`);
    if (exported !== undefined) {
      expect(r.code, `${command}\n${r.stderr}`).toBe(0);
      env[exported] = r.stdout;
    }
    results.push({ command, ...r });
  }
  return results;
}

describe("docs/sidecar.md's quick start, run as written", () => {
  it("the GET through frontend's sidecar reaches the app; the policy refuses the DELETE; the inbound refuses a caller without a certificate", { timeout: 180_000 }, async () => {
    const [setup, frontend, calls] = fences(QUICK_START).filter((f) => f.label === "sh");
    expect(setup?.body.trimEnd()).toMatch(/meshward sidecar --app-id orders .* &$/s);
    expect(frontend?.body).toMatch(/meshward sidecar --app-id frontend /);
    const outputs = fences(SEE_IT_WORK).filter((f) => f.label === "").map((f) => f.body.trimEnd().split("\n"));
    expect(outputs).toHaveLength(3);

    // The quick start: CA, token, policy, the stand-in app, the orders sidecar.
    const first = await runBlock(setup!.body);
    expect(first.every((r) => r.code === 0), JSON.stringify(first)).toBe(true);
    const orders = background.find((b) => b.command.includes("--app-id orders"))!;
    expect(orders.stdout()).toMatch(/^meshward sidecar ready: id=spiffe:\/\/example\.test\/ns\/shop\/orders inbound=\S+ outbound=\S+ status=\S+ mode=strict protocol=http$/m);

    // frontend's outbound-only sidecar, and its ready line as the page shows it.
    await runBlock(frontend!.body);
    const shownReady = /\(`(… outbound=127\.0\.0\.1:\d+ [^`]*)`\)/.exec(SEE_IT_WORK)?.[1];
    expect(shownReady).toBeDefined();
    const front = background.find((b) => b.command.includes("--app-id frontend"))!;
    expect(front.stdout()).toMatch(shown(mapped(shownReady!)));
    expect(front.stdout()).toMatch(/^meshward sidecar ready: id=spiffe:\/\/example\.test\/ns\/shop\/frontend /m);

    const [get, del, noCert] = await runBlock(calls!.body);
    // Allowed: over mTLS to orders' inbound, to the app, which learns the caller.
    expect(get!.command).toMatch(/^curl .*http:\/\/127\.0\.0\.1:3600\/orders\/1$/);
    expect(get!.code, get!.stderr).toBe(0);
    expect(get!.stdout.trimEnd()).toBe(outputs[0]!.join("\n"));
    expect(get!.stdout).toBe("orders app: GET /orders/1 from frontend\n");

    // Refused by the policy: 403 E_POLICY_DENIED, and a policy-denied line on orders' stderr.
    expect(del!.command).toMatch(/-X DELETE/);
    expect(del!.code, del!.stderr).toBe(0);
    expect(del!.stdout.trimEnd()).toBe(outputs[1]!.slice(0, 2).join("\n"));
    expect(del!.stdout).toMatch(/^\{"error":"E_POLICY_DENIED",.*"caller":"spiffe:\/\/example\.test\/ns\/shop\/frontend"\}\n403\n$/);
    const deniedLog = await vi.waitFor(
      () => {
        const line = orders.stderr().split("\n").find((l) => l.includes('"event":"policy-denied"'));
        if (line === undefined) throw new Error(`no policy-denied line yet:\n${orders.stderr()}`);
        return line;
      },
      { timeout: 15_000, interval: 50 },
    );
    expect(deniedLog, orders.stderr()).toMatch(shown(outputs[1]![2]!));
    expect(JSON.parse(deniedLog!)).toMatchObject({ operation: "/orders/1", verb: "DELETE", caller: "spiffe://example.test/ns/shop/frontend" });

    // Refused by the inbound: no client certificate, no answer. Over TLS 1.3 the server's alert
    // comes after curl's handshake ends: read by curl (56, as shown) or met while sending (55).
    expect(noCert!.command).toMatch(/^curl -sSk https:\/\/127\.0\.0\.1:3501\//);
    expect(noCert!.stdout).toBe("");
    if (noCert!.code === 56) expect(noCert!.stderr.trimEnd()).toMatch(shown(outputs[2]![0]!));
    else expect([noCert!.code, noCert!.stderr.trimEnd()]).toEqual([55, expect.stringMatching(/^curl: \(55\) getpeername\(\) failed/)]);
    // Logged when the sidecar sees the handshake fail, which may be after curl has exited: waited for.
    const handshakeLog = await vi.waitFor(
      () => {
        const line = orders.stderr().split("\n").find((l) => l.includes('"event":"tls-handshake-failed"'));
        if (line === undefined) throw new Error(`no tls-handshake-failed line yet:\n${orders.stderr()}`);
        return line;
      },
      { timeout: 15_000, interval: 50 },
    );
    expect(handshakeLog, orders.stderr()).toMatch(shown(outputs[2]![1]!));

    // And plaintext at the inbound gets the 400 E_MTLS_REQUIRED the page names.
    expect(SEE_IT_WORK.replace(/\s+/g, " ")).toContain("Plain `http://127.0.0.1:3501` gets `400 E_MTLS_REQUIRED`");
    const plain = await run(`curl -s -w '%{http_code}' ${mapped("http://127.0.0.1:3501/orders/1")}`);
    expect(plain.stdout).toMatch(/^\{"error":"E_MTLS_REQUIRED",.*\}\n400$/);

    // Nothing the doc started has died along the way.
    for (const b of background) expect(b.child.exitCode, b.command).toBeNull();
  });
});
