import { describe, expect, it } from "vitest";
import { MeshwardError, isMeshwardError } from "../../src/errors.ts";
import { avoidCaEndpoint, isFailoverError, parseCaAddresses, resolveCaEndpoints, withCaFailover } from "../../src/identity/ca-endpoints.ts";
import type { HostPort } from "../../src/util/address.ts";

// Pure logic of replica failover; the real thing (three `ca serve` processes, one dead) is in
// test/e2e/ca-failover.test.ts. The lookup is injected here because a DNS name with several
// loopback addresses cannot be made on this machine without editing /etc/hosts.
const unavailable = (where: string) => new MeshwardError("E_CA_UNAVAILABLE", `the CA at ${where} is unreachable: connect ECONNREFUSED`);

describe("parseCaAddresses", () => {
  it("reads one address or a comma-separated list", () => {
    expect(parseCaAddresses("127.0.0.1:8443")).toEqual([{ host: "127.0.0.1", port: 8443 }]);
    expect(parseCaAddresses("ca-0.ca:8443, ca-1.ca:8443,[::1]:9443")).toEqual([
      { host: "ca-0.ca", port: 8443 },
      { host: "ca-1.ca", port: 8443 },
      { host: "::1", port: 9443 },
    ]);
  });
  it.each(["", "a:1,,b:2", "a:1,", "nohost", "a:0", "a:70000,b:1"])("refuses %j with E_ADDRESS_INVALID", (text) => {
    let error: unknown;
    try {
      parseCaAddresses(text);
    } catch (e) {
      error = e;
    }
    expect(isMeshwardError(error, "E_ADDRESS_INVALID")).toBe(true);
  });
});

describe("resolveCaEndpoints", () => {
  it("expands a DNS name into each of its addresses, keeps IPs, drops duplicates", async () => {
    const lookup = async (host: string) => (host === "ca.mesh" ? ["10.0.0.1", "10.0.0.2", "10.0.0.3"] : []);
    expect(await resolveCaEndpoints(parseCaAddresses("ca.mesh:8443,10.0.0.2:8443,127.0.0.1:1"), lookup)).toEqual([
      { host: "10.0.0.1", port: 8443 },
      { host: "10.0.0.2", port: 8443 },
      { host: "10.0.0.3", port: 8443 },
      { host: "127.0.0.1", port: 1 },
    ]);
  });
  it("keeps a name that does not resolve, so that trying it reports the resolver's error", async () => {
    const lookup = async () => {
      throw new Error("ENOTFOUND");
    };
    expect(await resolveCaEndpoints(parseCaAddresses("gone.mesh:8443"), lookup)).toEqual([{ host: "gone.mesh", port: 8443 }]);
  });
  it("resolves a real name (localhost) with the system resolver", async () => {
    const endpoints = await resolveCaEndpoints(parseCaAddresses("localhost:8443"));
    expect(endpoints.length).toBeGreaterThanOrEqual(1);
    expect(endpoints.every((e) => e.port === 8443 && /^(127\.|::1$)/.test(e.host))).toBe(true);
  });
});

describe("withCaFailover", () => {
  const noSleep = { sleep: async () => undefined, random: () => 0 };

  it("tries the next replica when one is unreachable, with growing jittered backoff between them", async () => {
    const slept: number[] = [];
    const order: string[] = [];
    await withCaFailover(
      "127.0.0.21:1,127.0.0.22:1,127.0.0.23:1,127.0.0.24:1",
      async (e: HostPort) => {
        order.push(e.host);
        if (e.host !== "127.0.0.24") throw unavailable(e.host);
        return "signed";
      },
      { sleep: async (ms) => void slept.push(ms), random: () => 0, baseBackoffMs: 100, maxBackoffMs: 250 },
    );
    expect(order).toEqual(["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"]);
    // base·2^(i-1), capped, times a jitter factor in [0.5, 1]: 100, 200, 250 → 50, 100, 125 with random() = 0.
    expect(slept).toEqual([50, 100, 125]);
  });

  it("starts with the replica that answered last", async () => {
    const list = "127.0.0.31:1,127.0.0.32:1,127.0.0.33:1";
    await withCaFailover(list, async (e: HostPort) => {
      if (e.host !== "127.0.0.32") throw unavailable(e.host);
      return e.host;
    }, noSleep);
    const first: string[] = [];
    await withCaFailover(list, async (e: HostPort) => {
      first.push(e.host);
      return e.host;
    }, noSleep);
    expect(first).toEqual(["127.0.0.32"]);
  });

  // A replica whose answer the identity refused (it still signs with a retired issuer, review
  // crlset HIGH-1): the next call starts at the replica after it, which is tried last.
  it("after avoidCaEndpoint, starts at the replica after the avoided one, and only for the next call", async () => {
    const list = "127.0.0.71:1,127.0.0.72:1,127.0.0.73:1";
    await withCaFailover(list, async (e: HostPort) => {
      if (e.host !== "127.0.0.72") throw unavailable(e.host);
      return e.host;
    }, noSleep);
    avoidCaEndpoint(list, "127.0.0.72:1");
    const tried: string[] = [];
    await withCaFailover(list, async (e: HostPort) => {
      tried.push(e.host);
      if (e.host !== "127.0.0.72") throw unavailable(e.host);
      return e.host;
    }, noSleep);
    expect(tried).toEqual(["127.0.0.73", "127.0.0.71", "127.0.0.72"]);
    const next: string[] = [];
    await withCaFailover(list, async (e: HostPort) => {
      next.push(e.host);
      return e.host;
    }, noSleep);
    expect(next).toEqual(["127.0.0.72"]);
  });

  it("does not retry a refusal (the CA answered): the token error reaches the caller as is", async () => {
    const tried: string[] = [];
    const error = await withCaFailover("127.0.0.41:1,127.0.0.42:1", async (e: HostPort) => {
      tried.push(e.host);
      throw new MeshwardError("E_TOKEN_USED", "the join token was already used");
    }, noSleep).catch((e: unknown) => e);
    expect(isMeshwardError(error, "E_TOKEN_USED")).toBe(true);
    expect(tried).toHaveLength(1);
  });

  it("retries a replica whose store is down (E_STORE_*) and reports every replica when all fail", async () => {
    expect(isFailoverError(new MeshwardError("E_STORE_OPEN", "x"))).toBe(true);
    expect(isFailoverError(new MeshwardError("E_KUBERNETES_UNAVAILABLE", "x"))).toBe(true);
    expect(isFailoverError(new MeshwardError("E_CSR_INVALID", "x"))).toBe(false);
    expect(isFailoverError(new Error("plain"))).toBe(false);
    const error = await withCaFailover("127.0.0.51:1,127.0.0.52:1", async (e: HostPort) => {
      throw e.host.endsWith("51") ? new MeshwardError("E_STORE_OPEN", "cannot reach PostgreSQL") : unavailable(e.host);
    }, noSleep).catch((e: unknown) => e);
    expect(isMeshwardError(error, "E_CA_UNAVAILABLE")).toBe(true);
    expect((error as Error).message).toMatch(/2 tried/);
    expect((error as Error).message).toContain("127.0.0.51:1: cannot reach PostgreSQL");
    expect((error as Error).message).toContain("127.0.0.52:1");
  });

  it("passes a single address's own error through unchanged", async () => {
    const error = await withCaFailover("127.0.0.61:1", async () => {
      throw unavailable("127.0.0.61:1");
    }, noSleep).catch((e: unknown) => e);
    expect((error as Error).message).toBe("the CA at 127.0.0.61:1 is unreachable: connect ECONNREFUSED");
  });
});
