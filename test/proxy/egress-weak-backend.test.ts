import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer, type Server } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEgress } from "../../src/proxy/egress.ts";
import { quietTlsLogger } from "../backends/fixtures.ts";

// DESIGN: RSA keys of at least 2048 bits. Node 20's OpenSSL 3.0 verifies at security level 1,
// where a backend chain of RSA-1024 keys passes; every context built from src/tls/policy.ts now
// asks for level 2 (found by review, stop 39). The backend is node:tls at level 0 (so that only
// the egress side decides) with certificates made here by OpenSSL.
describe("egress refuses a backend whose chain has keys under 112-bit strength (OpenSSL security level 2)", () => {
  let dir: string;
  const servers: Server[] = [];

  /** A root and a leaf for backend.test, with keys made by `openssl genpkey` of `algorithm`. */
  function chain(name: string, keyArgs: string[]): { root: string; cert: string; key: string } {
    const at = (file: string) => join(dir, `${name}-${file}`);
    const openssl = (args: string[]) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
    openssl(["genpkey", ...keyArgs, "-out", at("root.key")]);
    openssl(["req", "-x509", "-new", "-key", at("root.key"), "-subj", `/CN=${name} root`, "-days", "2", "-sha256", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", "-out", at("root.pem")]);
    openssl(["genpkey", ...keyArgs, "-out", at("leaf.key")]);
    openssl(["req", "-new", "-key", at("leaf.key"), "-subj", "/CN=backend.test", "-out", at("leaf.csr")]);
    writeFileSync(at("leaf.ext"), "subjectAltName=DNS:backend.test\nextendedKeyUsage=serverAuth\n");
    openssl(["x509", "-req", "-in", at("leaf.csr"), "-CA", at("root.pem"), "-CAkey", at("root.key"), "-set_serial", "0x1234", "-days", "1", "-sha256", "-extfile", at("leaf.ext"), "-out", at("leaf.pem")]);
    return { root: at("root.pem"), cert: readFileSync(at("leaf.pem"), "utf8"), key: readFileSync(at("leaf.key"), "utf8") };
  }

  /** What the app gets through an egress port to a TLS backend that echoes one line. */
  async function through(material: { root: string; cert: string; key: string }): Promise<string> {
    const server = createServer({ cert: material.cert, key: material.key, ciphers: "DEFAULT@SECLEVEL=0" }, (socket) => {
      socket.on("error", () => undefined);
      socket.on("data", (d: Buffer) => socket.end(`backend got ${d.toString().trim()}\n`));
    });
    server.on("tlsClientError", () => undefined);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    const egress = await startEgress({ listen: "127.0.0.1:0", backend: `127.0.0.1:${port}`, serverName: "backend.test", caFile: material.root }, { logger: quietTlsLogger });
    try {
      return await new Promise<string>((resolve) => {
        const app = connect(Number(egress.address.split(":").pop()), "127.0.0.1", () => app.write("PING\n"));
        let text = "";
        app.on("data", (d: Buffer) => (text += d.toString()));
        app.on("close", () => resolve(text));
        app.on("error", () => undefined);
      });
    } finally {
      await egress.close();
    }
  }

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "meshward-weak-backend-"));
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    rmSync(dir, { recursive: true, force: true });
  });

  it("control: a P-256 chain is accepted", async () => {
    expect(await through(chain("p256", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]))).toBe("backend got PING\n");
  });

  it("an RSA-1024 chain is refused: the app's connection closes without the backend's reply", async () => {
    expect(await through(chain("rsa1024", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"]))).toBe("");
  });
});
