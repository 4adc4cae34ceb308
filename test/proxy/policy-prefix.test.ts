/**
 * An operation named by a literal (`/admin`) decides the paths below it, as in Dapr (dapr/dapr
 * pkg/config/acl_trie.go Search answers with the first node on the way down that holds an
 * operation): with defaultAction allow and `/admin` deny, Dapr denies GET /admin/users, and so must
 * the sidecar (it allowed it: a Dapr Configuration migrated as it was tested left a hole). Through a
 * real inbound sidecar over mTLS, HTTP/1.1 as raw bytes (the target exactly as written) and HTTP/2
 * (ALPN h2), judged on the canonical path (percent-escapes and dot segments resolved first).
 */
import { readFileSync, writeFileSync } from "node:fs";
import type { ClientHttp2Session } from "node:http2";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHttpApp } from "../helpers/app-servers.ts";
import type { HttpApp } from "../helpers/app-servers.ts";
import { inboundH2Session, startMeshCa, startTestSidecar, TD } from "./fixtures.ts";
import type { MeshCa, TestSidecarWithApp } from "./fixtures.ts";

const POLICY = `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: app-b
spec:
  accessControl:
    defaultAction: allow
    trustDomain: ${TD}
    policies:
      - appId: app-a
        namespace: default
        trustDomain: ${TD}
        defaultAction: allow
        operations:
          - name: /admin
            httpVerb: ["*"]
            action: deny
          - name: /admin/public/**
            httpVerb: ["GET"]
            action: allow
          - name: /pkg.Admin
            action: deny
`;

describe("sidecar inbound: an operation named by a literal covers the paths below it (as in Dapr)", () => {
  let ca: MeshCa;
  let app: HttpApp;
  let sidecar: TestSidecarWithApp;
  let caller: { cert: string; key: string };
  const sessions: ClientHttp2Session[] = [];

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startHttpApp();
    const policy = join(ca.dir, "policy.yaml");
    writeFileSync(policy, POLICY);
    sidecar = await startTestSidecar(ca, { appId: "app-b", app: `127.0.0.1:${app.port}`, policy });
    caller = await ca.clientFiles("default", "app-a");
  });

  afterAll(async () => {
    for (const session of sessions) session.destroy();
    await sidecar?.close();
    await app?.close();
    await ca?.close();
  });

  /** One raw HTTP/1.1 request over mTLS to the inbound port: the status code, and what the app saw. */
  function h1(target: string, method = "GET"): Promise<number> {
    return new Promise((resolve, reject) => {
      const socket = tlsConnect({ host: "127.0.0.1", port: sidecar.addresses.inbound.port, ALPNProtocols: ["http/1.1"], ca: ca.bundlePem, cert: readFileSync(caller.cert), key: readFileSync(caller.key), checkServerIdentity: () => undefined });
      let text = "";
      socket.setEncoding("latin1");
      socket.on("data", (chunk: string) => (text += chunk));
      socket.on("error", reject);
      socket.on("end", () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0)));
      socket.on("secureConnect", () => socket.write(`${method} ${target} HTTP/1.1\r\nHost: app-b\r\nConnection: close\r\n\r\n`));
    });
  }

  /** One HTTP/2 request (ALPN h2) to the inbound port: the status and grpc-status. */
  function h2(path: string, headers: Record<string, string> = {}): Promise<{ status: number; grpcStatus: string | undefined }> {
    const session = inboundH2Session(sidecar.addresses.inbound.port, caller, ca.bundlePem, sessions);
    return new Promise((resolve, reject) => {
      const stream = session.request({ ":method": headers["content-type"]?.startsWith("application/grpc") ? "POST" : "GET", ":path": path, ...headers });
      let status = 0;
      let grpcStatus: string | undefined;
      stream.on("response", (h) => {
        status = Number(h[":status"]);
        grpcStatus = h["grpc-status"] as string | undefined;
      });
      stream.on("trailers", (t) => (grpcStatus ??= t["grpc-status"] as string | undefined));
      stream.on("error", reject);
      stream.on("data", () => undefined);
      stream.on("end", () => resolve({ status, grpcStatus }));
      stream.end();
    });
  }

  const reached = (fragment: string) => app.seen.some((request) => request.url.toLowerCase().includes(fragment));

  it("denies GET /admin/users and deeper paths, in any case, over HTTP/1.1 and HTTP/2, nothing reaching the app", async () => {
    for (const target of ["/admin", "/admin/users", "/admin/users/7/roles", "/ADMIN/Users?x=1"]) {
      expect(await h1(target), `h1 ${target}`).toBe(403);
      expect((await h2(target)).status, `h2 ${target}`).toBe(403);
    }
    expect(await h1("/admin/users", "DELETE")).toBe(403);
    expect(reached("/admin/users")).toBe(false);
  });

  it("judges the canonical path: dot segments and percent-escapes of /admin/../admin/x resolve before the policy", async () => {
    for (const target of ["/admin/../admin/x", "/public/../admin/x", "/admin/%2E%2E/admin/x", "/%61dmin/x", "/admin/./x", "//admin//x"]) {
      expect(await h1(target), `h1 ${target}`).toBe(403);
      expect((await h2(target)).status, `h2 ${target}`).toBe(403);
    }
    expect(app.seen.some((request) => /admin\/x/i.test(request.url))).toBe(false);
  });

  it("does not touch /administrator, /admin-x or a path that leaves /admin", async () => {
    for (const target of ["/administrator", "/admin-x", "/admin-x/users", "/admin/../public"]) {
      expect(await h1(target), `h1 ${target}`).toBe(200);
      expect((await h2(target)).status, `h2 ${target}`).toBe(200);
    }
    expect(reached("/administrator")).toBe(true);
  });

  it("lets an operation that matches the path itself go first (/admin/public/**), and warns that Dapr reads it otherwise (kind prefix)", async () => {
    expect(await h1("/admin/public/logo.png")).toBe(200);
    expect((await h2("/admin/public/logo.png")).status).toBe(200);
    const warnings = sidecar.logs.lines.filter((line) => line["event"] === "policy-differs-from-dapr");
    expect(warnings).toEqual([expect.objectContaining({ kind: "prefix", appId: "app-a", operations: ["/admin", "/admin/public/**"] })]);
  });

  it("gRPC: a service operation denies its methods (one trie for both in Dapr)", async () => {
    const denied = await h2("/pkg.Admin/DropAll", { "content-type": "application/grpc", te: "trailers" });
    expect(denied.status).toBe(200);
    expect(denied.grpcStatus).toBe("7");
  });
});
