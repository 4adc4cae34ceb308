/**
 * What clients send before their TLS handshake completes (the figure `maxHandshakeBytes` is sized
 * from, src/tls/handshake-cap.ts), and what the largest made-up chain that fits under the default
 * cap still costs the server's event loop. Certificates made with the openssl CLI at run time.
 * Prints figures; no assertions. Run: node --import tsx bench/handshake/flights.ts
 */
import { execFileSync, spawn } from "node:child_process";
import { getCurves } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, createServer, type TLSSocket } from "node:tls";
import { capHandshakeBytes, capOf, DEFAULT_MAX_HANDSHAKE_BYTES } from "../../src/tls/handshake-cap.ts";
import { buildLongChain } from "../../test/helpers/long-chain.ts";

const dir = mkdtempSync(join(tmpdir(), "meshward-flights-"));
const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
const pem = (name: string) => readFileSync(join(dir, name), "utf8");
try {
  writeFileSync(join(dir, "ca.ext"), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n");
  writeFileSync(join(dir, "leaf.ext"), "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:spiffe://cluster.local/ns/default/app-a\n");
  const chainOf = (kind: "ec" | "rsa", names: string[]) => {
    const keyArgs = kind === "ec" ? ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] : ["-newkey", "rsa:4096"];
    openssl("req", "-x509", ...keyArgs, "-nodes", "-subj", `/O=mesh/CN=${kind} root`, "-keyout", `${kind}-root.key`, "-out", `${kind}-root.crt`, "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign");
    let issuer = `${kind}-root`;
    for (const [i, n] of names.entries()) {
      openssl("req", ...keyArgs, "-nodes", "-subj", `/O=mesh/CN=${n}`, "-keyout", `${n}.key`, "-out", `${n}.csr`);
      openssl("x509", "-req", "-in", `${n}.csr`, "-CA", `${issuer}.crt`, "-CAkey", `${issuer}.key`, "-set_serial", String(100 + i), "-days", "2", "-out", `${n}.crt`, "-extfile", i === names.length - 1 ? "leaf.ext" : "ca.ext");
      issuer = n;
    }
    return { chain: names.slice().reverse().map((n) => pem(`${n}.crt`)).join(""), key: pem(`${names[names.length - 1]}.key`) };
  };
  const svid = chainOf("ec", ["ec-issuer", "ec-leaf"]);
  const rsa = chainOf("rsa", ["rsa-int1", "rsa-int2", "rsa-leaf"]);
  writeFileSync(join(dir, "svid.crt"), svid.chain);
  writeFileSync(join(dir, "svid.key"), svid.key, { mode: 0o600 });
  writeFileSync(join(dir, "roots.crt"), pem("ec-root.crt") + pem("rsa-root.crt"));

  const server = createServer({ key: svid.key, cert: svid.chain, ca: pem("roots.crt"), requestCert: true, rejectUnauthorized: false, ecdhCurve: "X25519:P-256:P-384" });
  let counted: (n: number) => void = () => undefined;
  server.on("secureConnection", (socket: TLSSocket) => {
    counted(capOf(socket)!.received);
    socket.end("x");
  });
  server.on("tlsClientError", () => undefined);
  let cap = 1 << 20;
  let refused = 0;
  capHandshakeBytes(server, { maxBytes: 1 << 20, onRefused: () => refused++ });
  const setCap = (maxBytes: number) => {
    cap = maxBytes;
    capHandshakeBytes(server, { maxBytes: cap, onRefused: () => refused++ });
  };
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  const node = (options: Record<string, unknown>) =>
    new Promise<number>((resolve, reject) => {
      counted = resolve;
      const s = tlsConnect({ host: "127.0.0.1", port, rejectUnauthorized: false, ...options });
      s.on("error", reject);
      s.resume();
    });
  const sClient = (args: string[]) =>
    new Promise<number>((resolve) => {
      counted = resolve;
      const child = spawn("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-quiet", ...args], { stdio: ["pipe", "ignore", "ignore"] });
      child.stdin.end();
    });
  console.log(`OpenSSL ${process.versions.openssl}; post-quantum key exchange groups offered by this Node: ${getCurves().filter((c) => /kem|kyber/i.test(c)).join(", ") || "none"}`);
  console.log("bytes a client sent before its handshake completed (ClientHello + its certificate flight + Finished):");
  for (const version of ["TLSv1.3", "TLSv1.2"] as const) {
    console.log(`  ${version} Node client, no certificate (a first-time CA caller): ${await node({ maxVersion: version })}`);
    console.log(`  ${version} Node client, P-256 leaf + issuer (a meshward/Dapr SVID): ${await node({ maxVersion: version, cert: svid.chain, key: svid.key })}`);
    console.log(`  ${version} Node client, RSA-4096 leaf + 2 intermediates: ${await node({ maxVersion: version, cert: rsa.chain, key: rsa.key })}`);
  }
  console.log(`  TLSv1.3 openssl s_client, P-256 leaf + issuer: ${await sClient(["-cert", join(dir, "svid.crt"), "-key", join(dir, "svid.key")])}`);

  // The largest made-up chain (RSA-3072 links, ~3060-bit exponents) under the default cap, and its cost.
  setCap(DEFAULT_MAX_HANDSHAKE_BYTES);
  let largest = 0;
  for (let links = 6; links <= 16; links++) {
    const chain = buildLongChain(links);
    const before = refused;
    const start = performance.now();
    const outcome = await Promise.race([node({ cert: chain.certPem, key: chain.keyPem }).then(
        () => "accepted",
        () => (refused > before ? "refused" : "failed"),
      ), new Promise<string>((r) => setTimeout(() => r(refused > before ? "refused" : "timeout"), 5000))]);
    const ms = performance.now() - start;
    if (outcome !== "accepted") {
      console.log(`made-up chain under the default cap (${DEFAULT_MAX_HANDSHAKE_BYTES} bytes): ${links} links (${chain.bytes} bytes) refused; the largest accepted had ${largest} links`);
      break;
    }
    largest = links;
    console.log(`  ${links} links (${chain.bytes} bytes of certificates): accepted, verified; handshake ${ms.toFixed(0)} ms wall (client and server in this process)`);
  }
  server.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
