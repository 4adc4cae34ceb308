import { writeFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exec } from "../helpers/exec.ts";
import { startHttpApp, startPythonApp } from "../helpers/app-servers.ts";
import type { HttpApp } from "../helpers/app-servers.ts";
import { metricValue, startMeshCa, startTestSidecar, TD, type SidecarWithApp } from "./fixtures.ts";
import type { MeshCa } from "./fixtures.ts";
import type { Sidecar } from "../../src/proxy/sidecar.ts";
import { renegotiateWithSClient } from "../helpers/openssl-renegotiate.ts";

const HOST = "app-b.mesh.test";
const POLICY = `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: app-b
spec:
  accessControl:
    defaultAction: deny
    trustDomain: ${TD}
    policies:
      - appId: app-a
        defaultAction: deny
        trustDomain: ${TD}
        namespace: default
        operations:
          - name: /allowed/**
            httpVerb: ["GET", "POST"]
            action: allow
`;

describe("sidecar inbound (HTTP mode, STRICT) with curl and openssl as callers", () => {
  let ca: MeshCa;
  let app: HttpApp;
  let sidecar: SidecarWithApp & { logs: { lines: Record<string, unknown>[] } };
  let policyFile: string;
  let callerA: { cert: string; key: string; chain: string; spiffeId: string };
  let intruder: { cert: string; key: string; chain: string; spiffeId: string };
  let base: string;
  let resolve: string;

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startHttpApp();
    policyFile = join(ca.dir, "policy.yaml");
    writeFileSync(policyFile, POLICY);
    sidecar = await startTestSidecar(
      ca,
      { appId: "app-b", app: `127.0.0.1:${app.port}`, policy: policyFile, limits: { headersTimeout: "1s", maxHeaderBytes: 8192 } },
      { dnsNames: [HOST] },
    );
    callerA = await ca.clientFiles("default", "app-a");
    intruder = await ca.clientFiles("default", "intruder");
    const port = sidecar.addresses.inbound.port;
    base = `https://${HOST}:${port}`;
    resolve = `${HOST}:${port}:127.0.0.1`;
  });

  afterAll(async () => {
    await sidecar?.close();
    await app?.close();
    await ca?.close();
  });

  const curl = (caller: { cert: string; key: string } | undefined, args: string[]) =>
    exec("curl", [
      "-sS",
      "--max-time",
      "10",
      "--cacert",
      ca.bundleFile,
      "--resolve",
      resolve,
      ...(caller ? ["--cert", caller.cert, "--key", caller.key] : []),
      "-w",
      "\n%{http_code} %{http_version}",
      ...args,
    ]);
  const metrics = async () => (await fetch(`http://127.0.0.1:${sidecar.addresses.status!.port}/metrics`)).text();
  const split = (stdout: string) => {
    const lines = stdout.split("\n");
    const [status, version] = lines.pop()!.split(" ");
    return { body: lines.join("\n"), status: Number(status), version };
  };

  it("forwards an allowed HTTP/1.1 call with the verified caller in XFCC and strips a spoofed XFCC", async () => {
    const r = split((await curl(callerA, ["--http1.1", "-H", "x-forwarded-client-cert: By=evil;URI=spiffe://mesh.test/ns/default/admin", `${base}/allowed/x?q=1`])).stdout);
    expect(r.status).toBe(200);
    expect(r.version).toBe("1.1");
    const echoed = JSON.parse(r.body) as { url: string; headers: Record<string, string> };
    expect(echoed.url).toBe("/allowed/x?q=1");
    expect(echoed.headers["x-forwarded-client-cert"]).toBe(`By=spiffe://${TD}/ns/default/app-b;URI=${callerA.spiffeId}`);
  });

  // As Dapr's callee sidecar (dapr/dapr pkg/messaging/grpc_proxy.go setLocalIdentityMetadata):
  // caller app id and namespace from the verified SPIFFE ID, callee app id its own; curl's forged
  // ones (any spelling but '_', which this sidecar refuses by default: headersWithUnderscores;
  // test/proxy/dapr-caller-headers.test.ts strips them with allow) dropped. node:http joins
  // repeated fields with ", ", so one value is one field.
  it("sets dapr-caller-app-id, dapr-caller-namespace and dapr-callee-app-id from the verified caller (HTTP/1.1 and HTTP/2), forged ones dropped", async () => {
    for (const http of ["--http1.1", "--http2"]) {
      const forged = ["-H", "Dapr-Caller-App-Id: admin", "-H", "dapr.caller.app.id: admin", "-H", "DAPR-CALLER-NAMESPACE: kube-system", "-H", "dapr-callee-app-id: payments"];
      const r = split((await curl(callerA, [http, ...forged, `${base}/allowed/dapr`])).stdout);
      expect(r.status).toBe(200);
      const { headers } = JSON.parse(r.body) as { headers: Record<string, string> };
      expect(Object.fromEntries(Object.entries(headers).filter(([name]) => /^dapr[-_]/i.test(name))), http).toEqual({ "dapr-caller-app-id": "app-a", "dapr-caller-namespace": "default", "dapr-callee-app-id": "app-b" });
    }
  });

  it("speaks HTTP/2 (ALPN h2) to callers and HTTP/1.1 to an app that only knows HTTP/1.1", async () => {
    const r = split((await curl(callerA, ["--http2", "-X", "POST", "-d", "hello", `${base}/allowed/h2`])).stdout);
    expect(r.version).toBe("2");
    expect(r.status).toBe(200);
    const echoed = JSON.parse(r.body) as { method: string; bodyBytes: number; headers: Record<string, string> };
    expect(echoed.method).toBe("POST");
    expect(echoed.bodyBytes).toBe(5);
    expect(echoed.headers["x-forwarded-client-cert"]).toContain(`URI=${callerA.spiffeId}`);
  });

  it("denies by policy with 403 and a JSON reason, counts and logs the caller and rule", async () => {
    const before = await metrics();
    const wrongPath = split((await curl(callerA, ["--http1.1", `${base}/admin`])).stdout);
    const wrongVerb = split((await curl(callerA, ["--http1.1", "-X", "DELETE", `${base}/allowed/x`])).stdout);
    const otherApp = split((await curl(intruder, ["--http2", `${base}/allowed/x`])).stdout);
    for (const r of [wrongPath, wrongVerb, otherApp]) {
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body)).toMatchObject({ error: "E_POLICY_DENIED" });
    }
    expect((JSON.parse(otherApp.body) as { caller: string }).caller).toBe(intruder.spiffeId);
    const after = await metrics();
    expect(metricValue(after, "meshward_policy_denials_total", { caller: callerA.spiffeId }) - metricValue(before, "meshward_policy_denials_total", { caller: callerA.spiffeId })).toBe(2);
    expect(metricValue(after, "meshward_policy_denials_total", { caller: intruder.spiffeId })).toBe(1);
    const logged = sidecar.logs.lines.find((l) => l.event === "policy-denied" && l.caller === intruder.spiffeId);
    expect(logged).toMatchObject({ operation: "/allowed/x", verb: "GET" });
    expect(typeof logged?.rule).toBe("string");
    expect(app.seen.some((s) => s.url === "/admin")).toBe(false);
  });

  it("refuses a caller without a client certificate (handshake counted as no_certificate)", async () => {
    const r = await curl(undefined, ["--http1.1", `${base}/allowed/x`]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).not.toContain("200");
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(metricValue(await metrics(), "meshward_tls_handshake_failures_total", { direction: "inbound", reason: "no_certificate" })).toBeGreaterThanOrEqual(1);
  });

  it("answers a plaintext HTTP request with 400 explaining that the port needs mTLS (STRICT)", async () => {
    const r = await exec("curl", ["-sS", "--max-time", "5", "-w", "\n%{http_code}", `http://127.0.0.1:${sidecar.addresses.inbound.port}/allowed/x`]);
    expect(r.stdout).toContain("E_MTLS_REQUIRED");
    expect(r.stdout.trim().endsWith("400")).toBe(true);
    expect(metricValue(await metrics(), "meshward_sidecar_refused_total", { reason: "plaintext" })).toBeGreaterThanOrEqual(1);
    expect(metricValue(await metrics(), "meshward_plaintext_connections_total")).toBe(0);
  });

  it("refuses a TLS 1.1 ClientHello (openssl s_client -tls1_1), counted as protocol_version", async () => {
    const r = await exec("openssl", ["s_client", "-tls1_1", "-connect", `127.0.0.1:${sidecar.addresses.inbound.port}`, "-cert", callerA.cert, "-key", callerA.key, "-cert_chain", callerA.chain, "-CAfile", ca.bundleFile], { input: "Q\n" });
    expect(r.stdout + r.stderr).toMatch(/alert protocol version|no protocols available|unsupported protocol|wrong version/i);
    expect(r.stdout).toContain("Cipher is (NONE)");
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(metricValue(await metrics(), "meshward_tls_handshake_failures_total", { direction: "inbound", reason: "protocol_version" })).toBeGreaterThanOrEqual(1);
  });

  it("refuses a client-initiated TLS 1.2 renegotiation (openssl s_client, R): the caller cannot swap its certificate after the SPIFFE and CRL checks", async () => {
    const r = await renegotiateWithSClient(`127.0.0.1:${sidecar.addresses.inbound.port}`, ["-servername", HOST, "-cert", callerA.cert, "-key", callerA.key, "-cert_chain", callerA.chain, "-CAfile", ca.bundleFile, "-alpn", "http/1.1"], `GET /allowed/reneg HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
    expect(r.output).toContain("Protocol  : TLSv1.2");
    expect(r.output).toContain("RENEGOTIATING");
    expect(r.output).toMatch(/no renegotiation/);
    expect(r.output).not.toContain("HTTP/1.1 200");
  });

  it("accepts a TLS 1.3 mTLS handshake from openssl s_client and verifies against the mesh bundle", async () => {
    const r = await exec(
      "openssl",
      ["s_client", "-connect", `127.0.0.1:${sidecar.addresses.inbound.port}`, "-servername", HOST, "-cert", callerA.cert, "-key", callerA.key, "-cert_chain", callerA.chain, "-CAfile", ca.bundleFile, "-alpn", "http/1.1", "-ign_eof", "-verify_return_error"],
      { input: `GET /allowed/ossl HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n` },
    );
    expect(r.stdout).toContain("HTTP/1.1 200");
    expect(r.stdout).toContain(`URI=${callerA.spiffeId}`);
  });

  // Issue 14: a CA:TRUE certificate signed by the mesh's own issuer passes OpenSSL's chain check;
  // the inbound refuses it as a caller (an X509-SVID is a leaf), while the same ID as a leaf passes.
  it("refuses a CA:TRUE client certificate chained to the mesh bundle (openssl s_client), nothing reaching the app", async () => {
    const dir = join(ca.dir, "ca-true-caller");
    const caDir = join(ca.dir, "ca");
    await exec("mkdir", ["-p", dir]);
    writeFileSync(join(dir, "ext"), `basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature,keyCertSign\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:${callerA.spiffeId}\n`);
    for (const args of [
      ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=ca caller", "-keyout", join(dir, "k.pem"), "-out", join(dir, "csr.pem")],
      ["x509", "-req", "-in", join(dir, "csr.pem"), "-CA", join(caDir, "issuer.pem"), "-CAkey", join(caDir, "issuer.key"), "-set_serial", "0x5ca1ab1e", "-days", "1", "-extfile", join(dir, "ext"), "-out", join(dir, "cert.pem")],
    ]) {
      const made = await exec("openssl", args);
      expect(made.code, made.stderr).toBe(0);
    }
    const refusedBefore = metricValue(await metrics(), "meshward_tls_handshake_failures_total", { direction: "inbound", reason: "spiffe_mismatch" });
    const sclient = (cert: string, key: string, path: string) =>
      exec(
        "openssl",
        ["s_client", "-connect", `127.0.0.1:${sidecar.addresses.inbound.port}`, "-servername", HOST, "-cert", cert, "-key", key, "-cert_chain", join(caDir, "issuer.pem"), "-CAfile", ca.bundleFile, "-alpn", "http/1.1", "-ign_eof"],
        { input: `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n` },
      );
    const refused = await sclient(join(dir, "cert.pem"), join(dir, "k.pem"), "/allowed/ca-caller");
    expect(refused.stdout).not.toContain("HTTP/1.1");
    expect(app.seen.some((s) => s.url.includes("ca-caller"))).toBe(false);
    await new Promise((r) => setTimeout(r, 100));
    expect(metricValue(await metrics(), "meshward_tls_handshake_failures_total", { direction: "inbound", reason: "spiffe_mismatch" })).toBeGreaterThan(refusedBefore);
    const ok = await sclient(callerA.cert, callerA.key, "/allowed/leaf-caller");
    expect(ok.stdout).toContain("HTTP/1.1 200");
  });

  it("refuses a smuggled request (Content-Length with Transfer-Encoding) and CONNECT over mTLS, nothing reaching the app", async () => {
    const sclient = (input: string) =>
      exec(
        "openssl",
        ["s_client", "-quiet", "-connect", `127.0.0.1:${sidecar.addresses.inbound.port}`, "-servername", HOST, "-cert", callerA.cert, "-key", callerA.key, "-cert_chain", callerA.chain, "-CAfile", ca.bundleFile, "-alpn", "http/1.1", "-ign_eof"],
        { input },
      );
    const smuggled = await sclient(`POST /allowed/front HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /allowed/smuggled HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(smuggled.stdout).toMatch(/^HTTP\/1\.1 400 /m);
    const connect = await sclient(`CONNECT 10.0.0.1:443 HTTP/1.1\r\nHost: 10.0.0.1:443\r\n\r\n`);
    expect(connect.stdout).toMatch(/^HTTP\/1\.1 405 /m);
    expect(connect.stdout).toContain("E_CONNECT_UNSUPPORTED");
    expect(app.seen.some((s) => s.url.includes("front") || s.url.includes("smuggled") || s.method === "CONNECT")).toBe(false);
    expect(metricValue(await metrics(), "meshward_sidecar_refused_total", { reason: "bad_request" })).toBeGreaterThanOrEqual(1);
    expect(metricValue(await metrics(), "meshward_sidecar_refused_total", { reason: "connect" })).toBe(1);
  });

  it("closes on garbage bytes without stalling other connections", async () => {
    const garbage = netConnect(sidecar.addresses.inbound.port, "127.0.0.1");
    const closed = new Promise<void>((resolve) => garbage.once("close", () => resolve()));
    garbage.on("error", () => undefined);
    garbage.write(Buffer.from([0x00, 0xff, 0x13, 0x37, 0x42, 0x99, 0x00, 0x01]));
    const ok = split((await curl(callerA, ["--http1.1", `${base}/allowed/during-garbage`])).stdout);
    expect(ok.status).toBe(200);
    await closed;
    expect(metricValue(await metrics(), "meshward_sidecar_refused_total", { reason: "garbage" })).toBeGreaterThanOrEqual(1);
  });

  it("times out a slowloris client (408 after headersTimeout) while other requests go through", async () => {
    const slow = tlsConnect({ host: "127.0.0.1", port: sidecar.addresses.inbound.port, servername: HOST, ca: ca.bundlePem, cert: readFileSync(callerA.cert), key: readFileSync(callerA.key), ALPNProtocols: ["http/1.1"] });
    slow.on("error", () => undefined);
    let received = "";
    slow.on("data", (d: Buffer) => (received += d.toString()));
    const closed = new Promise<void>((resolve) => slow.once("close", () => resolve()));
    await new Promise<void>((resolve) => slow.once("secureConnect", () => resolve()));
    slow.write(`GET /allowed/slow HTTP/1.1\r\nHost: ${HOST}\r\nX-Drip: `);
    const drip = setInterval(() => slow.writable && slow.write("a"), 200);
    const ok = split((await curl(callerA, ["--http1.1", `${base}/allowed/while-slow`])).stdout);
    expect(ok.status).toBe(200);
    await closed;
    clearInterval(drip);
    expect(received).toContain("408");
    expect(metricValue(await metrics(), "meshward_sidecar_refused_total", { reason: "header_timeout" })).toBeGreaterThanOrEqual(1);
  });

  it("answers an oversized header with 431", async () => {
    const r = split((await curl(callerA, ["--http1.1", "-H", `x-big: ${"b".repeat(10_000)}`, `${base}/allowed/big-header`])).stdout);
    expect(r.status).toBe(431);
    expect(app.seen.some((s) => s.url === "/allowed/big-header")).toBe(false);
  });

  it("answers 503 while the app is down and recovers without a restart when it is back", async () => {
    const port = app.port;
    await app.close();
    const down = split((await curl(callerA, ["--http1.1", `${base}/allowed/down`])).stdout);
    expect(down.status).toBe(503);
    expect(JSON.parse(down.body)).toMatchObject({ error: "E_UPSTREAM_UNREACHABLE" });
    expect(metricValue(await metrics(), "meshward_sidecar_upstream_errors_total", { reason: "app_unreachable" })).toBeGreaterThanOrEqual(1);
    app = await startHttpApp(port);
    const up = split((await curl(callerA, ["--http1.1", `${base}/allowed/up`])).stdout);
    expect(up.status).toBe(200);
  });

  it("reloads a changed policy file and keeps the old policy when the new one is broken", async () => {
    writeFileSync(policyFile, POLICY.replace("/allowed/**", "/opened/**"));
    await waitFor(async () => split((await curl(callerA, ["--http1.1", `${base}/opened/x`])).stdout).status === 200);
    expect(split((await curl(callerA, ["--http1.1", `${base}/allowed/x`])).stdout).status).toBe(403);
    writeFileSync(policyFile, POLICY.replace("defaultAction: deny\n    trustDomain", "defaultAction: maybe\n    trustDomain"));
    await waitFor(async () => sidecar.logs.lines.some((l) => typeof l.msg === "string" && l.msg.includes("was refused")));
    expect(split((await curl(callerA, ["--http1.1", `${base}/opened/y`])).stdout).status).toBe(200);
    writeFileSync(policyFile, POLICY);
    await waitFor(async () => split((await curl(callerA, ["--http1.1", `${base}/allowed/back`])).stdout).status === 200);
  });

  it("reports ready on /readyz", async () => {
    const r = await fetch(`http://127.0.0.1:${sidecar.addresses.status!.port}/readyz`);
    expect(r.status).toBe(200);
  });

  it("serves its status page: its own identity, and the refusals, denials and handshake failures of the tests above", async () => {
    const base = `http://127.0.0.1:${sidecar.addresses.status!.port}`;
    type Series = { total: number; byKey: { key: string; count: number }[] };
    const feed = (await (await fetch(`${base}/status.json`)).json()) as {
      identities: { spiffeId: string }[];
      health: { ok: boolean };
      denials: Series;
      handshakeFailures: Series;
      refusals: { reason: string; peer: string; spiffeId?: string }[];
    };
    expect(feed.identities.map((i) => i.spiffeId)).toEqual([`spiffe://${TD}/ns/default/app-b`]);
    expect(feed.health.ok).toBe(true);
    expect(feed.denials.total).toBeGreaterThanOrEqual(1);
    expect(feed.handshakeFailures.byKey.map((k) => k.key)).toEqual(expect.arrayContaining(["no_certificate", "protocol_version"]));
    const reasons = feed.refusals.map((r) => r.reason);
    expect(reasons).toEqual(expect.arrayContaining(["plaintext", "garbage", "handshake: no_certificate"]));
    const denial = feed.refusals.find((r) => r.reason.startsWith("policy denied"));
    expect(denial?.spiffeId).toBe(callerA.spiffeId);
    expect(denial?.peer).toMatch(/^127\.0\.0\.1:\d+$/);
    expect((await fetch(`${base}/`)).headers.get("content-type")).toMatch(/text\/html/);
  });

  it("refuses a status port off loopback without a token, before listening anywhere", async () => {
    const error = await startTestSidecar(ca, { appId: "open", app: "127.0.0.1:1", status: "0.0.0.0:0" }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(String(error)).toMatch(/not on loopback.*status-token-file/);
  });

  it("puts the verified caller in front of a Python http.server app too", async () => {
    const python = await startPythonApp();
    const side = await startTestSidecar(ca, { appId: "py", app: `127.0.0.1:${python.port}` }, { dnsNames: ["py.mesh.test"] });
    try {
      const port = side.addresses.inbound.port;
      const r = await exec("curl", ["-sS", "--max-time", "10", "--cacert", ca.bundleFile, "--resolve", `py.mesh.test:${port}:127.0.0.1`, "--cert", callerA.cert, "--key", callerA.key, `https://py.mesh.test:${port}/hello`]);
      expect(JSON.parse(r.stdout)).toEqual({ app: "python", path: "/hello", xfcc: `By=spiffe://${TD}/ns/default/py;URI=${callerA.spiffeId}` });
    } finally {
      await side.close();
      await python.close();
    }
  });
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error("condition not met in time");
}
