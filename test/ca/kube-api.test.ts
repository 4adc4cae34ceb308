import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { kubernetesApi } from "../../src/ca/attest/kube-api.ts";
import { isMeshwardError } from "../../src/errors.ts";
import { httpsGetText, opensslServerRenegotiating } from "../helpers/openssl-renegotiate.ts";

// The KUBERNETES validator's API client against a real `openssl s_server` standing in for the API
// server (a self-signed certificate for IP 127.0.0.1, made at test time, as test/dapr/kubernetes
// does). The server renegotiates (TLS 1.2 HelloRequest with a client-certificate request) once
// the GET has arrived; the client refuses, as Envoy does upstream unless `allow_renegotiation` is
// set (envoyproxy/envoy api/envoy/extensions/transport_sockets/tls/v3/tls.proto).
const POD = JSON.stringify({ metadata: { name: "app-0", namespace: "default", uid: "u-1" }, spec: { serviceAccountName: "app" } });
const REPLY = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${POD.length}\r\nConnection: close\r\n\r\n${POD}`;
let dir: string;
let certFile: string;
let keyFile: string;
let tokenFile: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "meshward-kube-api-"));
  certFile = join(dir, "api.crt");
  keyFile = join(dir, "api.key");
  tokenFile = join(dir, "token");
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "1", "-subj", "/CN=kube-apiserver", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
  writeFileSync(tokenFile, "ca-service-account-token\n", { mode: 0o600 });
});

afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

describe("kubernetesApi refuses an API server that renegotiates (real openssl s_server, TLS 1.2)", () => {
  it("getPod fails with E_KUBERNETES_UNAVAILABLE and never reads the pod sent after the renegotiation", async () => {
    const server = await opensslServerRenegotiating(certFile, keyFile);
    try {
      const api = kubernetesApi({ apiServer: `https://127.0.0.1:${server.port}`, tokenFile, caFile: certFile });
      const pod = api.getPod("default", "app-0").then(
        (value) => ({ value, error: undefined }),
        (error: unknown) => ({ value: undefined, error }),
      );
      const { refusedByClient } = await server.renegotiateThenReply("GET /api/v1/namespaces/default/pods/app-0", REPLY);
      expect(refusedByClient).toBe(true);
      const { value, error } = await pod;
      expect(value).toBeUndefined();
      expect(isMeshwardError(error, "E_KUBERNETES_UNAVAILABLE")).toBe(true);
      expect((error as Error).message).toContain(`https://127.0.0.1:${server.port}`);
      expect((error as Error).message).toMatch(/the server's TLS connection failed after the handshake \(.*alert handshake failure.*\); meshward refuses TLS renegotiation, which the server may have asked for/);
    } finally {
      await server.stop();
    }
  });

  it("control: node:https with the same trust but without SSL_OP_NO_RENEGOTIATION renegotiates and reads the pod", async () => {
    const server = await opensslServerRenegotiating(certFile, keyFile);
    try {
      const fetched = httpsGetText({ host: "127.0.0.1", port: server.port, path: "/api/v1/namespaces/default/pods/app-0", ca: readFileSync(certFile), minVersion: "TLSv1.2" });
      const { refusedByClient } = await server.renegotiateThenReply("GET /api/v1/namespaces/default/pods/app-0", REPLY);
      expect(refusedByClient).toBe(false);
      expect(JSON.parse(await fetched)).toEqual(JSON.parse(POD));
    } finally {
      await server.stop();
    }
  });
});
