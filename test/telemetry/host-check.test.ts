import { describe, expect, it } from "vitest";
import { checkHostHeader, hostOfHostHeader, isLoopbackAddress } from "../../src/telemetry/host-check.ts";

describe("isLoopbackAddress", () => {
  it("knows loopback names and literals", () => {
    for (const host of ["localhost", "LOCALHOST", "localhost.", "app.localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1"]) {
      expect(isLoopbackAddress(host), host).toBe(true);
    }
    for (const host of ["0.0.0.0", "::", "10.0.0.5", "128.0.0.1", "evil.example", "localhost.evil.example", "evil.localhost..", "::ffff:10.0.0.1", "127.0.0.1.evil.example", ""]) {
      expect(isLoopbackAddress(host), host).toBe(false);
    }
  });
});

describe("hostOfHostHeader", () => {
  it("takes the host from name, name:port, v4:port and [v6]:port; refuses malformed ones", () => {
    expect(hostOfHostHeader("LocalHost:9090")).toBe("localhost");
    expect(hostOfHostHeader("127.0.0.1")).toBe("127.0.0.1");
    expect(hostOfHostHeader("[::1]:9090")).toBe("::1");
    expect(hostOfHostHeader("evil.example:80")).toBe("evil.example");
    for (const bad of ["", "::1", "[::1", "localhost:99999", "localhost:abc", "a b", "evil.example@localhost", "localhost/x", "[zz]:1"]) {
      expect(hostOfHostHeader(bad), bad).toBeUndefined();
    }
  });
});

describe("checkHostHeader (DNS rebinding guard)", () => {
  it("on a loopback bind, accepts loopback Hosts with or without a port, and the exact bound host", () => {
    for (const host of ["localhost", "localhost:9090", "status.localhost:1", "127.0.0.1:9090", "127.0.0.2", "[::1]:9090", "[::1]"]) {
      expect(checkHostHeader(host, ["127.0.0.1"]), host).toEqual({ ok: true });
    }
    // bound by a name that resolves to loopback (Debian's 127.0.1.1 hostname): that name is accepted too
    expect(checkHostHeader("myhost:9090", ["myhost", "127.0.1.1"])).toEqual({ ok: true });
    expect(checkHostHeader("::1", ["::1"])).toEqual({ ok: false, reason: "host-malformed" });
  });

  it("on a loopback bind, refuses a foreign Host (a rebound name) and a malformed one", () => {
    expect(checkHostHeader("evil.example:9090", ["127.0.0.1"])).toEqual({ ok: false, reason: "host-not-loopback" });
    expect(checkHostHeader("10.0.0.5:9090", ["localhost", "127.0.0.1"])).toEqual({ ok: false, reason: "host-not-loopback" });
    expect(checkHostHeader("localhost.evil.example", ["::1"])).toEqual({ ok: false, reason: "host-not-loopback" });
    expect(checkHostHeader("evil.example@127.0.0.1", ["127.0.0.1"])).toEqual({ ok: false, reason: "host-malformed" });
  });

  it("a request without Host passes (no browser sends one, so it cannot be a rebound page)", () => {
    expect(checkHostHeader(undefined, ["127.0.0.1"])).toEqual({ ok: true });
  });

  it("on a non-loopback bind (0.0.0.0 in a pod) every Host passes, as before: the kubelet probes with Host: <podIP>:<port>", () => {
    for (const bound of [["0.0.0.0"], ["::"], ["10.1.2.3"]]) {
      expect(checkHostHeader("10.1.2.3:9090", bound)).toEqual({ ok: true });
      expect(checkHostHeader("evil.example", bound)).toEqual({ ok: true });
    }
  });
});
