import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect as netConnect } from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer, type Server, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEgress, type Egress, type EgressEntry } from "../../src/proxy/egress.ts";

/**
 * Red team (egress, TLS origination to a non-mesh backend verified by a CA file): which name is
 * sent as SNI and which name the backend's certificate must carry. Backends are node:tls servers
 * with openssl-made certificates (made at test time), recording the SNI they received; what is
 * tested is meshward's client side. Expected, as curl and Go's crypto/tls do: the configured
 * serverName goes out as SNI and must be in the certificate's DNS SANs; an IP-address target
 * sends no SNI (RFC 6066 §3 forbids IP literals there) and needs an IP SAN: neither a DNS SAN
 * nor a CN equal to the address will do.
 */
let dir: string;
const servers: Server[] = [];
const egresses: Egress[] = [];

function certificate(name: string, subject: string, san?: string): { cert: string; key: string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  execFileSync(
    "openssl",
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", subject, ...(san ? ["-addext", `subjectAltName=${san}`] : [])],
    { stdio: "ignore" },
  );
  return { cert, key };
}

/** A TLS backend that answers "SNI=<name or none>\n" and closes. */
async function backend(files: { cert: string; key: string }): Promise<number> {
  const server = createServer({ cert: readFileSync(files.cert), key: readFileSync(files.key) }, (socket: TLSSocket) => {
    const sni = (socket as TLSSocket & { servername?: string | false }).servername;
    socket.end(`SNI=${sni || "none"}\n`);
    socket.on("error", () => undefined);
  });
  server.on("tlsClientError", () => undefined);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  servers.push(server);
  return (server.address() as AddressInfo).port;
}

/** The egress's log lines at warn and error: why it refused a backend. */
const refusals: string[] = [];
const logger = { info: () => undefined, warn: (...args: unknown[]) => void refusals.push(args.map(String).join(" ")), error: (...args: unknown[]) => void refusals.push(args.map(String).join(" ")) };

async function egress(entry: Omit<EgressEntry, "listen">): Promise<number> {
  const started = await startEgress({ listen: "127.0.0.1:0", ...entry }, { logger });
  egresses.push(started);
  return Number(started.address.split(":").pop());
}

/** Connects through the egress; "" and the one refusal it logged when it refused the backend. */
async function refusedWith(port: number): Promise<string> {
  const before = refusals.length;
  expect(await converse(port)).toBe("");
  expect(refusals.length).toBe(before + 1);
  return refusals.at(-1)!;
}

/** Everything the egress relays back for one plaintext connection ("" when it refused the backend). */
function converse(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: "127.0.0.1", port });
    let text = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => (text += chunk));
    socket.on("error", () => undefined);
    socket.on("close", () => resolve(text));
    socket.end();
  });
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "meshward-egress-sni-"));
});
afterAll(async () => {
  for (const e of egresses) await e.close().catch(() => undefined);
  for (const s of servers) await new Promise((resolve) => s.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

describe("egress: server name, SNI and IP-address backends", () => {
  it("sends serverName as SNI and accepts a certificate carrying it; refuses one for another host", async () => {
    const good = certificate("db", "/CN=db.internal", "DNS:db.internal");
    const ok = await egress({ backend: `127.0.0.1:${await backend(good)}`, serverName: "db.internal", caFile: good.cert });
    expect(await converse(ok)).toBe("SNI=db.internal\n");

    // A CN equal to serverName is not a SAN (Node's checkServerIdentity would fall back to it; a
    // mesh SVID has a URI SAN only and may carry CN=<app id>): found by review, stop 33.
    const cnOnly = certificate("cn-db", "/CN=db.internal", "URI:spiffe://egress.test/ns/evil/db.internal");
    expect(await refusedWith(await egress({ backend: `127.0.0.1:${await backend(cnOnly)}`, serverName: "db.internal", caFile: cnOnly.cert }))).toMatch(/Cert does not contain a DNS name/);
    const bareCn = certificate("bare-cn", "/CN=db.internal");
    expect(await refusedWith(await egress({ backend: `127.0.0.1:${await backend(bareCn)}`, serverName: "db.internal", caFile: bareCn.cert }))).toMatch(/Cert does not contain a DNS name/);

    const other = certificate("other", "/CN=other.internal", "DNS:other.internal");
    const refused = await egress({ backend: `127.0.0.1:${await backend(other)}`, serverName: "db.internal", caFile: other.cert });
    expect(await refusedWith(refused)).toMatch(/Host: db\.internal\. is not in the cert's altnames: DNS:other\.internal/);
  });

  it("an IP-address backend without serverName sends no SNI and needs an IP SAN for that address", async () => {
    const withIp = certificate("ip", "/CN=backend", "IP:127.0.0.1");
    const ok = await egress({ backend: `127.0.0.1:${await backend(withIp)}`, caFile: withIp.cert });
    expect(await converse(ok)).toBe("SNI=none\n");

    // A DNS SAN that happens to resolve there, or a CN equal to the address, is not an IP SAN.
    const dnsOnly = certificate("dns-only", "/CN=localhost", "DNS:localhost");
    expect(await refusedWith(await egress({ backend: `127.0.0.1:${await backend(dnsOnly)}`, caFile: dnsOnly.cert }))).toMatch(/IP: 127\.0\.0\.1 is not in the cert's list/);
    const cnOnly = certificate("cn-only", "/CN=127.0.0.1");
    expect(await refusedWith(await egress({ backend: `127.0.0.1:${await backend(cnOnly)}`, caFile: cnOnly.cert }))).toMatch(/IP: 127\.0\.0\.1 is not in the cert's list/);
    // Another address in the IP SAN does not match either.
    const otherIp = certificate("other-ip", "/CN=backend", "IP:10.0.0.7");
    expect(await refusedWith(await egress({ backend: `127.0.0.1:${await backend(otherIp)}`, caFile: otherIp.cert }))).toMatch(/IP: 127\.0\.0\.1 is not in the cert's list: 10\.0\.0\.7/);
  });
});
