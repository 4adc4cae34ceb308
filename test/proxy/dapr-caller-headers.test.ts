/**
 * Dapr's caller attribution on inbound requests: the sidecar tells the app who called, as Dapr's
 * callee sidecar does, from the caller verified by mutual TLS only.
 *
 * Upstream (read, not copied):
 * - dapr/dapr pkg/messaging/v1/util.go: CallerIDHeader = "dapr-caller-app-id", CalleeIDHeader =
 *   "dapr-callee-app-id" (and CallerNamespaceHeader = "dapr-caller-namespace" in later releases).
 * - dapr/dapr pkg/messaging/grpc_proxy.go, setLocalIdentityMetadata: for a request from another
 *   daprd, the caller's app id and namespace come from the peer's SPIFFE ID
 *   (pkg/security/spiffe FromGRPCContext: path /ns/<namespace>/<app-id>) and the callee app id is
 *   the sidecar's own; all three replace whatever the request carried.
 * - dapr/dapr workflow StripUntrustedCallerIdentity: a caller's own values are dropped.
 *
 * meshward differs on purpose where Dapr is lenient: a caller without a verified identity
 * (PERMISSIVE plaintext; Dapr keeps the last value an older daprd appended) or with a SPIFFE ID
 * that is not exactly ns/<namespace>/<app-id> in the sidecar's trust domain gets none of the
 * three (XFCC still says who it is when it was verified), and a forged copy never passes.
 *
 * Real parts: the sidecar in-process with a hand-driven identity (test PKI, so callers can hold
 * SPIFFE IDs the meshward CA would not issue), node:http and node:http2 clients over mTLS, a
 * grpc-js client and server, an HTTP/1.1 app that records the raw header fields it parsed.
 */
import { createServer as createHttpServer, request as httpRequest } from "node:http";
import type { Server } from "node:http";
import { Agent, request as httpsRequest } from "node:https";
import { connect as http2Connect } from "node:http2";
import type { AddressInfo } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sidecarConfigSchema } from "../../src/config/sidecar.ts";
import { callerStamp, stampIdentityOf } from "../../src/proxy/headers.ts";
import { startSidecar } from "../../src/proxy/sidecar.ts";
import { EchoClient, startGrpcApp } from "../helpers/app-servers.ts";
import { createTestPki, manualIdentitySource } from "../helpers/test-pki.ts";
import type { TestPki } from "../helpers/test-pki.ts";
import { logCapture, withInbound, type SidecarWithApp } from "./fixtures.ts";

const TD = "dapr.test";
const OWN = `spiffe://${TD}/ns/shop/inventory`;
const DAPR = ["dapr-caller-app-id", "dapr-caller-namespace", "dapr-callee-app-id"] as const;
/** Forged values a caller sends in several spellings (WSGI reads `_` as `-`). */
const FORGED_FIELDS: [string, string][] = [
  ["Dapr-Caller-App-Id", "admin"],
  ["dapr_caller_app_id", "admin"],
  ["DAPR-CALLER-NAMESPACE", "kube-system"],
  ["dapr-callee-app-id", "payments"],
];

describe("callerStamp: the identity headers for one verified caller", () => {
  const own = stampIdentityOf(OWN);

  it("sets XFCC and Dapr's three headers, once each, for a workload ID in our trust domain", () => {
    const stamp = callerStamp(own, stampIdentityOf(`spiffe://${TD}/ns/shop/orders`));
    expect(stamp.fields).toEqual({
      "x-forwarded-client-cert": `By=${OWN};URI=spiffe://${TD}/ns/shop/orders`,
      "dapr-caller-app-id": "orders",
      "dapr-caller-namespace": "shop",
      "dapr-callee-app-id": "inventory",
    });
    expect(stamp.lines).toBe(`x-forwarded-client-cert: By=${OWN};URI=spiffe://${TD}/ns/shop/orders\r\ndapr-caller-app-id: orders\r\ndapr-caller-namespace: shop\r\ndapr-callee-app-id: inventory\r\n`);
  });

  it("sets only XFCC for an ID that is not ns/<namespace>/<app-id>, or of another trust domain", () => {
    for (const caller of [`spiffe://${TD}/service/orders`, `spiffe://${TD}/ns/shop/orders/v2`, `spiffe://${TD}/ns/shop`, `spiffe://${TD}`, `spiffe://${TD}/NS/shop/orders`, "spiffe://other.test/ns/shop/orders"]) {
      const stamp = callerStamp(own, stampIdentityOf(caller));
      expect(stamp.fields, caller).toEqual({ "x-forwarded-client-cert": `By=${OWN};URI=${caller}` });
      expect(stamp.lines, caller).toBe(`x-forwarded-client-cert: By=${OWN};URI=${caller}\r\n`);
    }
  });

  it("omits dapr-callee-app-id when the sidecar's own ID is no workload ID (it knows no app id)", () => {
    expect(callerStamp(stampIdentityOf(`spiffe://${TD}/gateway`), stampIdentityOf(`spiffe://${TD}/ns/shop/orders`)).fields).toEqual({
      "x-forwarded-client-cert": `By=spiffe://${TD}/gateway;URI=spiffe://${TD}/ns/shop/orders`,
      "dapr-caller-app-id": "orders",
      "dapr-caller-namespace": "shop",
    });
  });
});

/** An HTTP/1.1 app that records the raw header fields of each request (names as received). */
async function startRecordingApp(): Promise<{ port: number; fields: [string, string][][]; close(): Promise<void> }> {
  const fields: [string, string][][] = [];
  const server: Server = createHttpServer((req, res) => {
    const pairs: [string, string][] = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) pairs.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
    fields.push(pairs);
    req.resume();
    req.on("end", () => res.end("ok"));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    fields,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The values of one field name the app got, names normalised for case and `_`/`-` (as WSGI reads them). */
const valuesOf = (fields: [string, string][], name: string) => fields.filter(([n]) => n.toLowerCase().replaceAll("_", "-") === name).map(([, v]) => v);
const daprOf = (fields: [string, string][]) => Object.fromEntries(DAPR.map((name) => [name, valuesOf(fields, name)]));
const NONE = { "dapr-caller-app-id": [], "dapr-caller-namespace": [], "dapr-callee-app-id": [] };

describe("sidecar inbound: dapr-caller-app-id / dapr-caller-namespace / dapr-callee-app-id from the verified peer", () => {
  let pki: TestPki;
  let app: Awaited<ReturnType<typeof startRecordingApp>>;
  let grpcApp: { port: number; close(): Promise<void> };
  let sidecar: SidecarWithApp;
  let grpcSidecar: SidecarWithApp;
  const agents: Agent[] = [];

  // headersWithUnderscores: allow, so that the forged `dapr_caller_*` spellings reach the sidecar's
  // stripping (the default refuses any name with '_': test/proxy/target-override.test.ts).
  const start = async (appPort: number) => {
    const identity = manualIdentitySource(pki.snapshot({ spiffeId: OWN }));
    const config = sidecarConfigSchema.parse({ appId: "inventory", namespace: "shop", ca: "127.0.0.1:1", bundle: "unused.pem", inbound: "127.0.0.1:0", app: `127.0.0.1:${appPort}`, mode: "permissive", headersWithUnderscores: "allow" });
    return withInbound(await startSidecar(config, { logger: pino({ level: "info" }, logCapture()), identity }));
  };

  beforeAll(async () => {
    pki = await createTestPki({ trustDomain: TD });
    app = await startRecordingApp();
    grpcApp = await startGrpcApp();
    sidecar = await start(app.port);
    grpcSidecar = await start(grpcApp.port);
  });
  afterAll(async () => {
    for (const agent of agents) agent.destroy();
    await sidecar?.close();
    await grpcSidecar?.close();
    await grpcApp?.close();
    await app?.close();
  });

  const credentials = (spiffeId: string) => {
    const svid = pki.issueSvid({ spiffeId });
    return { cert: svid.certChainPem, key: svid.privateKey.export({ format: "pem", type: "pkcs8" }) as string, ca: pki.rootPem };
  };
  /** One HTTP/1.1 request over mTLS as `spiffeId` (or in plaintext, PERMISSIVE), with the forged fields; the fields the app got. */
  const h1 = async (spiffeId: string | undefined): Promise<[string, string][]> => {
    const before = app.fields.length;
    const headers = Object.fromEntries(FORGED_FIELDS);
    const port = sidecar.addresses.inbound.port;
    const status = await new Promise<number>((resolve, reject) => {
      const onResponse = (res: import("node:http").IncomingMessage) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      };
      let req;
      if (spiffeId === undefined) {
        req = httpRequest({ host: "127.0.0.1", port, path: "/h1", headers }, onResponse);
      } else {
        const agent = new Agent({ ...credentials(spiffeId), checkServerIdentity: () => undefined });
        agents.push(agent);
        req = httpsRequest({ host: "127.0.0.1", port, path: "/h1", headers, agent }, onResponse);
      }
      req.on("error", reject);
      req.end();
    });
    expect(status).toBe(200);
    expect(app.fields.length).toBe(before + 1);
    return app.fields.at(-1)!;
  };

  it("HTTP/1.1, verified workload caller: exactly the sidecar's values, the forged ones dropped", async () => {
    const fields = await h1(`spiffe://${TD}/ns/shop/orders`);
    expect(daprOf(fields)).toEqual({ "dapr-caller-app-id": ["orders"], "dapr-caller-namespace": ["shop"], "dapr-callee-app-id": ["inventory"] });
    expect(valuesOf(fields, "x-forwarded-client-cert")).toEqual([`By=${OWN};URI=spiffe://${TD}/ns/shop/orders`]);
    // Written by the sidecar in Dapr's lowercase spelling: the forged spellings are gone.
    expect(fields.filter(([n]) => n.toLowerCase().replaceAll("_", "-").startsWith("dapr-")).map(([n]) => n).sort()).toEqual([...DAPR].sort());
  });

  it("HTTP/1.1, PERMISSIVE plaintext caller (no verified identity): none of the three, the forged ones dropped", async () => {
    const fields = await h1(undefined);
    expect(daprOf(fields)).toEqual(NONE);
    expect(valuesOf(fields, "x-forwarded-client-cert")).toEqual([]);
  });

  it("HTTP/1.1, verified caller whose SPIFFE ID is no workload ID: XFCC only, the forged ones dropped", async () => {
    for (const id of [`spiffe://${TD}/service/orders`, `spiffe://${TD}/ns/shop/orders/v2`]) {
      const fields = await h1(id);
      expect(daprOf(fields), id).toEqual(NONE);
      expect(valuesOf(fields, "x-forwarded-client-cert"), id).toEqual([`By=${OWN};URI=${id}`]);
    }
  });

  it("HTTP/2 (ALPN h2) to an HTTP/1.1 app: the sidecar's values once each, forged ones dropped", async () => {
    const before = app.fields.length;
    const { cert, key, ca } = credentials(`spiffe://${TD}/ns/billing/invoices`);
    const session = http2Connect(`https://127.0.0.1:${sidecar.addresses.inbound.port}`, { cert, key, ca, checkServerIdentity: () => undefined });
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const stream = session.request({ ":path": "/h2", "dapr-caller-app-id": ["admin", "root"], dapr_caller_namespace: "kube-system", "dapr-callee-app-id": "payments" });
        let code = 0;
        stream.on("response", (h) => (code = Number(h[":status"])));
        stream.on("error", reject);
        stream.resume();
        stream.on("end", () => resolve(code));
      });
      expect(status).toBe(200);
    } finally {
      session.close();
    }
    expect(app.fields.length).toBe(before + 1);
    expect(daprOf(app.fields.at(-1)!)).toEqual({ "dapr-caller-app-id": ["invoices"], "dapr-caller-namespace": ["billing"], "dapr-callee-app-id": ["inventory"] });
  });

  /** One unary gRPC call over mTLS as `spiffeId`, forged metadata attached. */
  const grpcCall = (spiffeId: string) => {
    const { cert, key, ca } = credentials(spiffeId);
    const creds = grpc.credentials.createSsl(Buffer.from(ca), Buffer.from(key), Buffer.from(cert), { checkServerIdentity: () => undefined });
    const client = new EchoClient(`127.0.0.1:${grpcSidecar.addresses.inbound.port}`, creds, {
      // Node 26 refuses an IP address as the TLS server name, which grpc-js would send for 127.0.0.1.
      "grpc.ssl_target_name_override": "localhost",
    }) as unknown as Record<string, (...args: unknown[]) => grpc.ClientUnaryCall> & grpc.Client;
    const md = new grpc.Metadata();
    md.add("dapr-caller-app-id", "admin");
    md.add("dapr-caller-namespace", "kube-system");
    md.add("dapr-callee-app-id", "payments");
    return new Promise<{ code: number; response?: Record<string, unknown> }>((resolve) => {
      client.say!({ text: "hi" }, md, { deadline: Date.now() + 10_000 }, (error: grpc.ServiceError | null, value: Record<string, unknown>) => {
        client.close();
        resolve(error ? { code: error.code } : { code: 0, response: value });
      });
    });
  };

  it("gRPC (HTTP/2 to an h2c app): the sidecar's values once each, forged metadata dropped; none for a non-workload ID", async () => {
    const ok = await grpcCall(`spiffe://${TD}/ns/shop/orders`);
    expect(ok.code).toBe(0);
    expect(ok.response?.dapr).toEqual({ "dapr-caller-app-id": ["orders"], "dapr-caller-namespace": ["shop"], "dapr-callee-app-id": ["inventory"] });
    const other = await grpcCall(`spiffe://${TD}/service/orders`);
    expect(other.code).toBe(0);
    expect(other.response?.dapr).toEqual(NONE);
    expect(other.response?.xfcc).toBe(`By=${OWN};URI=spiffe://${TD}/service/orders`);
  });

  it("gRPC in plaintext (PERMISSIVE h2c): none of the three, forged metadata dropped", async () => {
    const client = new EchoClient(`127.0.0.1:${grpcSidecar.addresses.inbound.port}`, grpc.credentials.createInsecure()) as unknown as Record<string, (...args: unknown[]) => grpc.ClientUnaryCall> & grpc.Client;
    const md = new grpc.Metadata();
    md.add("dapr-caller-app-id", "admin");
    md.add("dapr-callee-app-id", "payments");
    const r = await new Promise<{ code: number; response?: Record<string, unknown> }>((resolve) => {
      client.say!({ text: "plain" }, md, { deadline: Date.now() + 10_000 }, (error: grpc.ServiceError | null, value: Record<string, unknown>) => {
        client.close();
        resolve(error ? { code: error.code } : { code: 0, response: value });
      });
    });
    expect(r.code).toBe(0);
    expect(r.response).toMatchObject({ xfcc: null, dapr: NONE });
  });
});
