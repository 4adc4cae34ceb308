import { describe, expect, it } from "vitest";
import { targetAppId } from "../../src/proxy/headers.ts";
import { checkOutboundHost, compileOutboundHosts } from "../../src/proxy/outbound-host.ts";
import { resolvePeer } from "../../src/proxy/peers.ts";
import { compileMatcher } from "../../src/spiffe/match.ts";

// App ids are case-sensitive: SPIFFE IDs compare case-sensitively, the CA issues mixed-case app ids
// (join tokens, Kubernetes annotation mode), and Dapr's app ids are case-sensitive too (self-hosted
// daprd finds `MyBackEnd`, not `mybackend`; on Kubernetes its injector allows DNS labels only).
// The outbound used to fold the app id and namespace to lower case, so a call to `Orders` expected,
// and accepted, the identity of another workload, `orders`, and the real `Orders` was refused.
describe("outbound routing keeps the app id's case", () => {
  const directory = { trustDomain: "example.test", namespace: "shop", peers: { Orders: "127.0.0.1:4001", orders: "127.0.0.1:4002" }, peerPort: 3501 };

  it("dapr-app-id and Host name the app in the case given", () => {
    expect(targetAppId({ "dapr-app-id": " Orders " })).toBe("Orders");
    expect(targetAppId({ host: "Orders:3500" })).toBe("Orders");
    expect(targetAppId({ ":authority": "Orders.Shop" })).toBe("Orders.Shop");
  });

  it("a call to Orders expects spiffe://…/Orders, at Orders' address; orders stays another app", () => {
    const upper = resolvePeer(directory, targetAppId({ "dapr-app-id": "Orders" })!)!;
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
