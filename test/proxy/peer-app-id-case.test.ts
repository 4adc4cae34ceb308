import { request as httpRequest } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHttpApp, type HttpApp } from "../helpers/app-servers.ts";
import { metricValue, startMeshCa, startTestSidecar, type MeshCa, type TestSidecarWithApp } from "./fixtures.ts";
import { targetName } from "../../src/proxy/headers.ts";
import { checkOutboundHost, compileOutboundHosts } from "../../src/proxy/outbound-host.ts";
import { resolvePeer, resolveRoute, type PeerDirectory, type RouteResult } from "../../src/proxy/peers.ts";
import { compileMatcher } from "../../src/spiffe/match.ts";

// App ids are case-sensitive: SPIFFE IDs compare case-sensitively, the CA issues mixed-case app ids
// (join tokens, Kubernetes annotation mode), and Dapr's app ids are case-sensitive too (self-hosted
// daprd finds `MyBackEnd`, not `mybackend`; on Kubernetes its injector allows DNS labels only).
// The outbound used to fold the app id and namespace to lower case, so a call to `Orders` expected,
// and accepted, the identity of another workload, `orders`, and the real `Orders` was refused.
describe("outbound routing keeps the app id's case", () => {
  const directory = { trustDomain: "example.test", namespace: "shop", peers: { Orders: "127.0.0.1:4001", orders: "127.0.0.1:4002" }, peerPort: 3501 };

  it("dapr-app-id and Host name the app in the case given", () => {
    expect(targetName({ "dapr-app-id": " Orders " })?.name).toBe("Orders");
    expect(targetName({ host: "Orders:3500" })?.name).toBe("Orders");
    expect(targetName({ ":authority": "Orders.Shop" })?.name).toBe("Orders.Shop");
  });

  it("a call to Orders expects spiffe://…/Orders, at Orders' address; orders stays another app", () => {
    const upper = resolvePeer(directory, targetName({ "dapr-app-id": "Orders" })!.name)!;
    expect(upper).toMatchObject({ appId: "Orders", namespace: "shop", host: "127.0.0.1", port: 4001, expectedId: "spiffe://example.test/ns/shop/Orders" });
    const accepts = compileMatcher(upper.expectedId);
    expect(accepts("spiffe://example.test/ns/shop/Orders")).toBe(true);
    expect(accepts("spiffe://example.test/ns/shop/orders")).toBe(false);
    expect(resolvePeer(directory, "orders")).toMatchObject({ port: 4002, expectedId: "spiffe://example.test/ns/shop/orders" });
    // The table matches exactly: ORDERS is neither entry (and no template): unknown.
    expect(resolvePeer(directory, "ORDERS")).toBeUndefined();
  });

  it("the DNS template keeps the case in the expected ID (DNS itself ignores it)", () => {
    const viaTemplate = resolvePeer({ ...directory, peers: {}, peerTemplate: "{appId}.{namespace}.svc:{port}" }, "Orders.Shop")!;
    expect(viaTemplate).toMatchObject({ appId: "Orders", namespace: "Shop", host: "Orders.Shop.svc", port: 3501, expectedId: "spiffe://example.test/ns/Shop/Orders" });
  });

  it("Host routing to a mixed-case app id passes the outbound's Host check (host names are case-insensitive)", () => {
    expect(checkOutboundHost("Orders:3500", "Orders", compileOutboundHosts([]))).toEqual({ ok: true });
    expect(checkOutboundHost("orders", "Orders", compileOutboundHosts([]))).toEqual({ ok: true });
    expect(checkOutboundHost("evil.example", "Orders", compileOutboundHosts([]))).toEqual({ ok: false, host: "evil.example" });
  });
});

// A host name is case-insensitive (RFC 9110 §4.2.3) and clients disagree on its case (Node's fetch
// lower-cases it, curl keeps it): routing by Host matches the peer table ignoring case, and the
// expected SPIFFE ID is the matched entry's own app id, never the Host's spelling. dapr-app-id stays exact.
describe("outbound routing by Host ignores letter case; by dapr-app-id it is exact", () => {
  const route = (directory: PeerDirectory, request: Record<string, string>): RouteResult => {
    const name = targetName(request)!;
    return resolveRoute(directory, name.name, name.fromHost);
  };
  const lower = { trustDomain: "example.test", namespace: "shop", peers: { orders: "127.0.0.1:4002", "billing.finance": "127.0.0.1:4003" }, peerPort: 3501 };
  const mixed = { trustDomain: "example.test", namespace: "shop", peers: { MyBackEnd: "127.0.0.1:4005" }, peerPort: 3501 };

  it("Host: Orders and ORDERS reach the entry orders and expect …/orders", () => {
    for (const host of ["Orders:3500", "ORDERS", "orders"]) {
      expect(route(lower, { host }).target).toMatchObject({ appId: "orders", namespace: "shop", port: 4002, expectedId: "spiffe://example.test/ns/shop/orders" });
    }
    expect(route(lower, { ":authority": "Billing.FINANCE:3500" }).target).toMatchObject({ appId: "billing", namespace: "finance", port: 4003, expectedId: "spiffe://example.test/ns/finance/billing" });
  });

  it("a mixed-case app id is reachable by Host from Node's fetch (which lower-cases it), expecting the entry's own case", () => {
    for (const host of ["mybackend:3500", "MYBACKEND", "MyBackEnd"]) {
      expect(route(mixed, { host }).target).toMatchObject({ appId: "MyBackEnd", port: 4005, expectedId: "spiffe://example.test/ns/shop/MyBackEnd" });
    }
  });

  it("Host matching two entries that differ only in case is ambiguous: refused, neither picked", () => {
    const both = { ...lower, peers: { Orders: "127.0.0.1:4001", orders: "127.0.0.1:4002" } };
    for (const host of ["orders", "Orders", "ORDERS:3500"]) {
      const result = route(both, { host });
      expect(result.target).toBeUndefined();
      expect(result.ambiguous).toEqual(["Orders", "orders"]);
    }
    // dapr-app-id names one of them exactly.
    expect(route(both, { "dapr-app-id": "Orders", host: "localhost" }).target).toMatchObject({ port: 4001, expectedId: "spiffe://example.test/ns/shop/Orders" });
    expect(route(both, { "dapr-app-id": "orders", host: "localhost" }).target).toMatchObject({ port: 4002, expectedId: "spiffe://example.test/ns/shop/orders" });
  });

  it("dapr-app-id stays exact: Orders does not reach, nor expect, orders (review idmap LOW-1)", () => {
    expect(route(lower, { "dapr-app-id": "Orders" }).target).toBeUndefined();
    const viaTemplate = route({ ...lower, peers: {}, peerTemplate: "{appId}.{namespace}.svc:{port}" }, { "dapr-app-id": "Orders" }).target!;
    expect(viaTemplate.expectedId).toBe("spiffe://example.test/ns/shop/Orders");
    expect(compileMatcher(viaTemplate.expectedId)("spiffe://example.test/ns/shop/orders")).toBe(false);
  });

  it("Host through the DNS template uses the host name's canonical lower case, never the Host's spelling", () => {
    const template = { ...lower, peers: {}, peerTemplate: "{appId}-meshward.{namespace}.svc:{port}" };
    const target = route(template, { host: "Orders:3500" }).target!;
    expect(target).toMatchObject({ appId: "orders", namespace: "shop", expectedId: "spiffe://example.test/ns/shop/orders" });
    expect(route(template, { host: "Payments.Shop" }).target).toMatchObject({ appId: "payments", namespace: "shop", expectedId: "spiffe://example.test/ns/shop/payments" });
  });
});

// The same through a real outbound: Host in any case reaches the entry, two entries differing
// only in case refuse the Host (400 E_AMBIGUOUS_REQUEST, counted), and dapr-app-id picks one exactly.
describe("outbound by Host, real sidecars", () => {
  let ca: MeshCa;
  let app: HttpApp;
  let orders: TestSidecarWithApp;
  let caller: TestSidecarWithApp;

  beforeAll(async () => {
    ca = await startMeshCa();
    app = await startHttpApp();
    orders = await startTestSidecar(ca, { appId: "orders", app: `127.0.0.1:${app.port}` });
    const at = `127.0.0.1:${orders.addresses.inbound.port}`;
    // "Twin" and "twin" both lead to the orders sidecar: which one a Host means cannot be told.
    caller = await startTestSidecar(ca, { appId: "caller", app: "127.0.0.1:1", outbound: "127.0.0.1:0", peers: { orders: at, Twin: at, twin: at } });
  }, 60_000);
  afterAll(async () => {
    await caller?.close();
    await orders?.close();
    await app?.close();
    await ca?.close();
  });

  const get = (headers: Record<string, string>): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const req = httpRequest({ host: "127.0.0.1", port: caller.addresses.outbound!.port, path: "/items", headers, agent: false, timeout: 10_000 }, (res) => {
        let body = "";
        res.on("data", (d) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on("timeout", () => req.destroy(new Error("timed out")));
      req.on("error", reject);
      req.end();
    });

  it("Host: ORDERS reaches orders; Host: twin is refused as ambiguous; dapr-app-id: twin is not", async () => {
    const upper = await get({ host: "ORDERS:3500" });
    expect(upper.status).toBe(200);
    expect(upper.body).toContain("/items");
    const ambiguous = await get({ host: "twin" });
    expect(ambiguous.status).toBe(400);
    expect(ambiguous.body).toContain("E_AMBIGUOUS_REQUEST");
    expect(ambiguous.body).toContain("dapr-app-id");
    const metrics = await (await fetch(`http://127.0.0.1:${caller.addresses.status!.port}/metrics`)).text();
    expect(metricValue(metrics, "meshward_sidecar_refused_total", { direction: "outbound", reason: "ambiguous_request" })).toBe(1);
    expect(caller.logs.find((line) => line.event === "outbound-ambiguous-host")).toMatchObject({ host: "twin", entries: ["Twin", "twin"] });
    // Exact by dapr-app-id: routed (to the orders sidecar, which is not "twin": refused on identity, 502).
    expect((await get({ "dapr-app-id": "twin", host: "localhost" })).status).toBe(502);
  });
});
