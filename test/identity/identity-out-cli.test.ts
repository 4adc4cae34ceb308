import { createPrivateKey, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer as createNetServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startCli, type LongRunning } from "../helpers/cli.ts";
import { exec } from "../helpers/exec.ts";
import { waitFor } from "../helpers/wait.ts";
import { fetchX509Svid } from "../../src/identity/workload-api/index.ts";
import { normalizeSerial } from "../../src/tls/verify.ts";

/**
 * `meshward identity --out DIR` as the file-sink guide runs it (nginx, Redis, PostgreSQL read
 * the files): a real CA issuing 20-second certificates (the CA accepts a workload TTL from 5s; only a
 * leaf cut short by the issuer's expiry has a 60 s floor, src/ca/issuer.ts), real processes
 * (issue 15, items 1 and 4).
 */
// The tests are independent (each its own token, app id and directories under `work`) and run
// concurrently against the one CA: most of their time is waiting for renewals (item 1, readiness)
// or for the CA to re-read revocations, and that waiting overlaps. The two that wait for renewals
// come first, so that they are in the first batch (vitest runs at most 5 at once).
describe.concurrent("meshward identity --out (real processes, 20 s certificates)", () => {
  const work = mkdtempSync(join(tmpdir(), "meshward-identity-out-"));
  const caDir = join(work, "ca");
  const bundle = join(caDir, "bundle.pem");
  const running: LongRunning[] = [];
  let caAddress: string;

  const token = async (appId: string) => {
    const r = await runCli(["token", "create", "--dir", caDir, "--namespace", "jobs", "--app-id", appId]);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout.trim().split("\n").pop() as string;
  };
  const serialOf = (dir: string) => new X509Certificate(readFileSync(join(dir, "cert.pem"))).serialNumber;
  /** Log events of one kind on a process's stderr (JSON lines). */
  const events = (p: LongRunning, kind: string) =>
    p
      .stderr()
      .split("\n")
      .filter((line) => line.includes(`"event":"${kind}"`))
      .map((line) => JSON.parse(line) as { serial?: string; reason?: string });

  beforeAll(async () => {
    expect((await runCli(["ca", "init", "--trust-domain", "renew.test", "--dir", caDir])).code).toBe(0);
    const ca = await startCli(["ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--workload-ttl", "20s"], /listening on (\S+)/);
    running.push(ca);
    caAddress = ca.match[1] as string;
  }, 60_000);

  afterAll(async () => {
    for (const p of running.reverse()) await p.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("item 1: keeps running after 'ready' with only --out, and renews the files twice, the second time into an --out removed meanwhile", async () => {
    const out = join(work, "files");
    const id = await startCli(["identity", "--ca", caAddress, "--bundle", bundle, "--token", await token("report"), "--out", out], /identity ready: (\S+) \(serial (\S+)/);
    running.push(id);
    const first = serialOf(out);
    // The initial write and two renewals (each at 40-60% of a 20 s life).
    await waitFor("the first renewal", () => events(id, "identity-files-written").length >= 2, 30_000);
    // --out removed while it runs (a cleanup job, an operator): the next renewal's write re-creates
    // it as the sink made it (0700) with every file, key.pem 0600 (file-sink-recreate.test.ts has the
    // sink alone, with an owner). The process keeps running.
    rmSync(out, { recursive: true });
    await waitFor("the second renewal", () => events(id, "identity-files-written").length >= 3, 30_000);
    expect(id.child.exitCode).toBeNull();
    expect(events(id, "out-dir-recreated")).toHaveLength(1);
    expect(statSync(out).mode & 0o7777).toBe(0o700);
    expect(Object.fromEntries(readdirSync(out).filter((f) => f.endsWith(".pem")).map((f) => [f, statSync(join(out, f)).mode & 0o7777]))).toMatchObject({ "cert.pem": 0o644, "key.pem": 0o600, "bundle.pem": 0o644 });
    const written = new X509Certificate(readFileSync(join(out, "cert.pem")));
    expect(normalizeSerial(written.serialNumber)).toBe(normalizeSerial(events(id, "identity-files-written").at(-1)!.serial!));
    expect(written.checkPrivateKey(createPrivateKey(readFileSync(join(out, "key.pem"))))).toBe(true);
    expect(new X509Certificate(readFileSync(join(out, "bundle.pem"))).fingerprint256).toBe(new X509Certificate(readFileSync(bundle)).fingerprint256);
    const serials = events(id, "identity-files-written").map((e) => e.serial);
    expect(new Set(serials).size).toBe(serials.length);
    expect(serialOf(out)).not.toBe(first);
    const cert = new X509Certificate(readFileSync(join(out, "cert.pem")));
    expect(new Date(cert.validTo).getTime() - Date.now()).toBeLessThanOrEqual(20_000);
    const verify = await exec("openssl", ["verify", "-CAfile", join(out, "bundle.pem"), "-untrusted", join(out, "cert.pem"), join(out, "cert.pem")]);
    expect(verify.stdout).toMatch(/OK/);
    // SIGTERM stops it cleanly, and says so last (as the sidecar and `ca serve` do).
    expect(await id.stop()).toBe(0);
    expect(events(id, "identity-stopping")).toMatchObject([{ signal: "SIGTERM" }]);
    const lines = (id.stdout() + id.stderr()).trim().split("\n");
    expect(JSON.parse(lines.at(-1)!)).toMatchObject({ event: "stopped", msg: "identity stopped" });
  }, 90_000);

  it("readiness fails with a 'files' check while renewed files cannot be written, and recovers when they can", async () => {
    // Found by review (stop 42): a write failing at every renewal left /readyz green while nginx or
    // PostgreSQL kept serving the old, expiring certificate from --out.
    const out = join(work, "unwritable");
    const id = await startCli(["identity", "--ca", caAddress, "--bundle", bundle, "--token", await token("files"), "--out", out, "--status", "127.0.0.1:0"], /identity ready: (\S+) .* status=(\S+)/);
    running.push(id);
    const statusAddress = id.match[2] as string;
    const readyz = async () => {
      const res = await fetch(`http://${statusAddress}/readyz`);
      return { status: res.status, body: (await res.json()) as { checks: Record<string, { ok: boolean; detail: string }> } };
    };
    const healthy = await readyz();
    expect(healthy.status).toBe(200);
    expect(healthy.body.checks.files).toEqual({ ok: true, detail: `${join(out, "cert.pem")} holds the current certificate` });

    // rename(2) cannot replace a non-empty directory: the next renewal's write fails, and is retried.
    const first = serialOf(out);
    rmSync(join(out, "cert.pem"));
    mkdirSync(join(out, "cert.pem", "blocker"), { recursive: true });
    const until = async (status: number, what: string) => {
      for (const deadline = Date.now() + 30_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
        const r = await readyz();
        if (r.status === status) return r;
      }
      throw new Error(`timed out waiting for ${what}`);
    };
    const failing = await until(503, "readiness to fail at the renewal");
    expect(failing.body.checks.files!.ok).toBe(false);
    expect(failing.body.checks.files!.detail).toMatch(/^cannot write the identity files in .*unwritable.*retrying in (less than a second|\d+ seconds?|\d+ minutes?( \d+ seconds?)?): they hold the previous certificate$/);
    expect(failing.body.checks.identity!.ok).toBe(true);

    rmSync(join(out, "cert.pem"), { recursive: true });
    await until(200, "readiness to recover once the write succeeds");
    expect(serialOf(out)).not.toBe(first);
    expect(await id.stop()).toBe(0);
  }, 90_000);

  it("item 4: a restart with a valid certificate in --out renews with it: the spent token, or no token at all", async () => {
    const out = join(work, "restart");
    const t = await token("restart");
    const firstRun = await startCli(["identity", "--ca", caAddress, "--bundle", bundle, "--token", t, "--out", out], /identity ready: (\S+) \(serial (\S+)/);
    running.push(firstRun);
    expect(await firstRun.stop()).toBe(0);
    const before = serialOf(out);

    // The token is single-use and spent; the certificate in --out proves the identity.
    const again = await startCli(["identity", "--ca", caAddress, "--bundle", bundle, "--token", t, "--out", out], /identity ready: (\S+) \(serial (\S+)/);
    running.push(again);
    expect(again.match[1]).toBe("spiffe://renew.test/ns/jobs/restart");
    expect(events(again, "resuming")).toHaveLength(1);
    expect(serialOf(out)).not.toBe(before);
    expect(await again.stop()).toBe(0);

    const noToken = await startCli(["identity", "--ca", caAddress, "--bundle", bundle, "--out", out], /identity ready: (\S+)/);
    running.push(noToken);
    expect(noToken.match[1]).toBe("spiffe://renew.test/ns/jobs/restart");
    expect(await noToken.stop()).toBe(0);

    // The CA's issuance log shows the renewals were proven by the old certificate, not a token.
    const list = await runCli(["cert", "list", "--dir", caDir, "--json"]);
    const records = (JSON.parse(list.stdout) as { spiffeId: string; attestation: string }[]).filter((r) => r.spiffeId.endsWith("/restart"));
    expect(records.map((r) => r.attestation).sort()).toEqual(["join-token", "svid", "svid"]);

    // A revoked certificate in --out is refused by the CA: the new token is used instead.
    const revoke = await runCli(["cert", "revoke", "--dir", caDir, "--serial", serialOf(out)]);
    expect(revoke.code, revoke.stderr).toBe(0);
    await new Promise((r) => setTimeout(r, 3000)); // the CA re-reads revocations every second (crlRefresh); a wait, not a measurement
    const fresh = await startCli(["identity", "--ca", caAddress, "--bundle", bundle, "--token", await token("restart"), "--out", out], /identity ready: (\S+)/);
    running.push(fresh);
    expect(events(fresh, "resume-refused")).toHaveLength(1);
    expect(fresh.match[1]).toBe("spiffe://renew.test/ns/jobs/restart");
    expect(await fresh.stop()).toBe(0);
  }, 90_000);

  it("item 4: a certificate in --out that is not this workload's is ignored, and the token is used", async () => {
    const out = join(work, "foreign");
    const issued = await runCli(["cert", "issue", "--ca", caAddress, "--bundle", bundle, "--token", await token("someone"), "--out", out]);
    expect(issued.code, issued.stderr).toBe(0);
    const id = await startCli(["identity", "--ca", caAddress, "--bundle", bundle, "--app-id", "other", "--namespace", "jobs", "--token", await token("other"), "--out", out], /identity ready: (\S+)/);
    running.push(id);
    expect(id.match[1]).toBe("spiffe://renew.test/ns/jobs/other");
    expect(events(id, "resume-ignored")).toHaveLength(1);
    const code = await id.stop();
    expect(code, `${id.child.signalCode} ${id.stderr()}`).toBe(0);
    // Without a token and without a usable certificate it says what is missing.
    rmSync(join(out, "key.pem"));
    const r = await runCli(["identity", "--ca", caAddress, "--bundle", bundle, "--out", out]);
    expect(r.code).toBe(2); // a usage error (E_USAGE)
    expect(r.stderr).toMatch(/a token is needed.*or a valid certificate and key from an earlier run in/);
  }, 60_000);

  it("item 4: --out with missing parents creates them 0700; a local error fails before attestation, without a stack trace", async () => {
    const t = await token("files");
    const blocked = join(work, "a-file");
    writeFileSync(blocked, "not a directory\n");
    const bad = await runCli(["identity", "--ca", caAddress, "--bundle", bundle, "--token", t, "--out", join(blocked, "meshward", "files")]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/meshward: --out .*a-file\/meshward\/files: not a directory \(a file is there, or in its path\).*\[E_OUT_DIR\]/);
    expect(bad.stderr).not.toMatch(/\n\s+at |unexpected error/);

    // cert issue, too, checks --out before the CA is asked.
    const badIssue = await runCli(["cert", "issue", "--ca", caAddress, "--bundle", bundle, "--token", t, "--out", join(blocked, "issued")]);
    expect(badIssue.code).toBe(1);
    expect(badIssue.stderr).toMatch(/meshward: --out .*a-file\/issued: not a directory \(a file is there, or in its path\).*\[E_OUT_DIR\]/);
    expect(badIssue.stderr).not.toMatch(/\n\s+at |unexpected error/);
    const noSocketDir = await runCli(["identity", "--ca", caAddress, "--bundle", bundle, "--token", t, "--workload-api-socket", join(work, "missing", "api.sock")]);
    expect(noSocketDir.code).toBe(1);
    expect(noSocketDir.stderr).toMatch(/meshward: --workload-api-socket .*api\.sock: the directory .*missing does not exist \(ENOENT\).*\[E_SOCKET_DIR\]/);
    expect(noSocketDir.stderr).not.toMatch(/\n\s+at |unexpected error/);

    // The token was not spent: the same token works with a directory whose parents are missing.
    const out = join(work, "run", "meshward", "files");
    const id = await startCli(["identity", "--ca", caAddress, "--bundle", bundle, "--token", t, "--out", out], /identity ready: (\S+)/);
    running.push(id);
    expect(statSync(join(work, "run")).mode & 0o777).toBe(0o700);
    expect(statSync(out).mode & 0o777).toBe(0o700);
    expect(statSync(join(out, "key.pem")).mode & 0o777).toBe(0o600);
    expect(await id.stop()).toBe(0);
  }, 60_000);

  it("what only binding or writing finds (key.pem a directory, a status or inbound port in use) fails before attestation, and the single-use token still works (found by review, stop 39)", async () => {
    const t = await token("local-errors");
    const busy = createNetServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
    const busyAt = `127.0.0.1:${(busy.address() as AddressInfo).port}`;
    try {
      const out = join(work, "key-is-a-dir");
      mkdirSync(join(out, "key.pem"), { recursive: true, mode: 0o700 });
      // Independent refusals (none may reach the CA), run at once.
      const [issue, status, sidecar] = await Promise.all([
        runCli(["cert", "issue", "--ca", caAddress, "--bundle", bundle, "--token", t, "--out", out]),
        runCli(["identity", "--ca", caAddress, "--bundle", bundle, "--token", t, "--out", join(work, "status-busy"), "--status", busyAt]),
        runCli(["sidecar", "--app-id", "local-errors", "--namespace", "jobs", "--ca", caAddress, "--bundle", bundle, "--token", t, "--app", "127.0.0.1:1", "--inbound", busyAt]),
      ]);
      expect(issue.code).toBe(1);
      expect(issue.stderr).toMatch(/key\.pem there is a directory.*\[E_OUT_DIR\]/s);
      expect(status.code).toBe(1);
      expect(status.stderr).toMatch(/the status endpoints cannot listen on 127\.0\.0\.1:\d+: the address is already in use.*\[E_LISTEN_FAILED\]/s);
      expect(sidecar.code).toBe(1);
      expect(sidecar.stderr).toMatch(/the inbound listener cannot listen on 127\.0\.0\.1:\d+: the address is already in use.*\[E_LISTEN_FAILED\]/s);
      for (const r of [issue, status, sidecar]) expect(r.stderr).not.toMatch(/\n\s+at |unexpected error|E_TOKEN/);
    } finally {
      busy.close();
    }
    // None of them asked the CA: the token gets a certificate now.
    const ok = await runCli(["cert", "issue", "--ca", caAddress, "--bundle", bundle, "--token", t, "--out", join(work, "local-errors-ok")]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/issued spiffe:\/\/renew\.test\/ns\/jobs\/local-errors/);
  }, 60_000);

  it("a port-0 listen address that is not on this host or does not resolve fails before attestation (sidecar --inbound, identity --status), and the single-use token still works (review cli, finding 1)", async () => {
    const t = await token("port-zero");
    const statusTokenFile = join(work, "port-zero-status-token");
    writeFileSync(statusTokenFile, "a-status-token-of-enough-length\n", { mode: 0o600 });
    const sidecar = (inbound: string) =>
      runCli(["sidecar", "--app-id", "port-zero", "--namespace", "jobs", "--ca", caAddress, "--bundle", bundle, "--token", t, "--app", "127.0.0.1:1", "--inbound", inbound]);
    // Independent refusals (none may reach the CA), run at once: the unresolvable name waits for the resolver.
    const [notHere, unresolvable, status] = await Promise.all([
      sidecar("192.0.2.1:0"),
      sidecar("no-such-host.invalid:0"),
      runCli(["identity", "--ca", caAddress, "--bundle", bundle, "--token", t, "--out", join(work, "port-zero-id"), "--status", "192.0.2.1:0", "--status-token-file", statusTokenFile]),
    ]);
    expect(notHere.code).toBe(1);
    expect(notHere.stderr).toMatch(/the inbound listener cannot listen on 192\.0\.2\.1:0: the address does not belong to this machine \[E_LISTEN_FAILED\]/);
    expect(unresolvable.code).toBe(1);
    expect(unresolvable.stderr).toMatch(/the inbound listener cannot listen on no-such-host\.invalid:0: the host name (does not resolve|could not be resolved).*\[E_LISTEN_FAILED\]/);
    expect(status.code).toBe(1);
    expect(status.stderr).toMatch(/the status endpoints cannot listen on 192\.0\.2\.1:0: the address does not belong to this machine \[E_LISTEN_FAILED\]/);
    for (const r of [notHere, unresolvable, status]) expect(r.stderr).not.toMatch(/\n\s+at |unexpected error|E_TOKEN|"event":"rotated"/);
    // None of them asked the CA: the token gets a certificate now.
    const ok = await runCli(["cert", "issue", "--ca", caAddress, "--bundle", bundle, "--token", t, "--out", join(work, "port-zero-ok")]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/issued spiffe:\/\/renew\.test\/ns\/jobs\/port-zero/);
  }, 60_000);

  it("what only binding the Workload API socket finds (a file in the way, a live socket, a path too long) fails before attestation, and the single-use token still works (found by review)", async () => {
    const t = await token("socket-errors");
    const args = (socket: string) => ["identity", "--ca", caAddress, "--bundle", bundle, "--token", t, "--workload-api-socket", socket];
    const dir = join(work, "socket-errors");
    mkdirSync(dir, { mode: 0o700 });
    const regular = join(dir, "file.sock");
    writeFileSync(regular, "not a socket\n");
    const busy = createNetServer();
    const live = join(dir, "live.sock");
    await new Promise<void>((resolve) => busy.listen(live, resolve));
    // The socket is bound at DIR/.mw-XXXXXX/s, then linked into place: with a short name that path is the longer one.
    const deep = join(dir, "d".repeat(95 - dir.length - 1));
    mkdirSync(deep, { mode: 0o700 });
    try {
      const results = [
        [await runCli(args(regular)), /file\.sock exists and is not a socket; refusing to replace it/],
        [await runCli(args(live)), /another process is already serving on .*live\.sock/],
        [await runCli(args(join(dir, "s".repeat(120)))), /socket path .* is \d+ bytes; a unix socket path holds at most 107/],
        [await runCli(args(join(deep, "api.sock"))), /is bound first at .*\.mw-XXXXXX\/s \(108 bytes\), then linked into place; a unix socket path holds at most 107/],
      ] as const;
      for (const [r, message] of results) {
        expect(r.code, r.stderr).toBe(1);
        expect(r.stderr).toMatch(message);
        expect(r.stderr).toContain("[E_WORKLOAD_API_SOCKET]");
        expect(r.stderr).not.toMatch(/\n\s+at |unexpected error|E_TOKEN|E_WORKLOAD_API_BIND/);
      }
      expect(readFileSync(regular, "utf8")).toBe("not a socket\n");
      expect(readdirSync(deep)).toEqual([]); // nothing bound at a truncated path, no private directory left
    } finally {
      await new Promise<void>((resolve) => busy.close(() => resolve()));
    }
    // None of them asked the CA: the token gets an identity now, served on the socket.
    const socket = join(dir, "api.sock");
    const id = await startCli(args(socket), /identity ready: (\S+)/);
    running.push(id);
    expect(id.match[1]).toBe("spiffe://renew.test/ns/jobs/socket-errors");
    expect((await fetchX509Svid(socket)).svid.spiffeId).toBe("spiffe://renew.test/ns/jobs/socket-errors");
    expect(await id.stop()).toBe(0);
  }, 60_000);

  it("--workload-api-socket takes unix:///abs/path as well as /abs/path, checked and bound at that path", async () => {
    // The CLI checked the socket's directory on the raw value: `unix:/…` read as a relative path.
    const sockets = join(work, "sockets");
    mkdirSync(sockets, { mode: 0o700 });
    const socket = join(sockets, "api.sock");
    const id = await startCli(["identity", "--ca", caAddress, "--bundle", bundle, "--token", await token("uri"), "--workload-api-socket", `unix://${socket}`], /identity ready: (\S+)/);
    running.push(id);
    for (let i = 0; i < 100 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 50));
    expect(statSync(socket).isSocket()).toBe(true);
    expect(await id.stop()).toBe(0);
  }, 60_000);
});
