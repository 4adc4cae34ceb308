/**
 * What the handshake byte cap (src/tls/handshake-cap.ts) costs a TLS server: the same node:tls
 * mTLS server (TLS 1.3, P-256, requestCert) with and without capHandshakeBytes, each in its own
 * process, in alternating rounds, measured by the server's own CPU time (process.cpuUsage, which
 * other load moves far less than throughput): per full handshake, per request/response round trip
 * on an open connection (100 bytes each way, one in flight), and per MiB received. A capped
 * connection's TLSSocket stays on the counting stream (Node's JSStreamSocket) for its whole life,
 * so the last two are the data-plane price.
 * Prints figures; no assertions. Run: node --import tsx bench/handshake/cap-cost.ts [rounds] [handshakes] [roundTrips] [MiB]
 */
import { execFileSync, fork, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, createServer, type TLSSocket } from "node:tls";

const CHILD = process.argv[2] === "--server";

if (CHILD) {
  const { capHandshakeBytes } = await import("../../src/tls/handshake-cap.ts");
  const [, , , dir, capped] = process.argv;
  const read = (n: string) => readFileSync(join(dir!, n), "utf8");
  const server = createServer({ key: read("server.key"), cert: read("server.crt"), ca: read("root.crt"), requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3", ecdhCurve: "X25519:P-256" });
  if (capped === "on") capHandshakeBytes(server, { maxBytes: 16 * 1024, onRefused: () => undefined });
  server.on("secureConnection", (socket: TLSSocket) => {
    socket.on("data", (d: Buffer) => {
      // "p…" is a ping (answered with as many bytes), anything else is bulk (counted only).
      if (d[0] === 0x70) socket.write(d);
    });
    socket.on("error", () => undefined);
  });
  server.listen(0, "127.0.0.1", () => process.send!({ port: (server.address() as { port: number }).port }));
  let mark = process.cpuUsage();
  process.on("message", (m: string) => {
    if (m === "mark") mark = process.cpuUsage();
    if (m === "read") {
      const used = process.cpuUsage(mark);
      process.send!({ cpuUs: used.user + used.system });
    }
  });
} else {
  const rounds = Number(process.argv[2] ?? 4);
  const handshakes = Number(process.argv[3] ?? 300);
  const roundTrips = Number(process.argv[4] ?? 3000);
  const mebibytes = Number(process.argv[5] ?? 64);
  const dir = mkdtempSync(join(tmpdir(), "meshward-cap-cost-"));
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl("req", "-x509", ...ec, "-subj", "/CN=root", "-keyout", "root.key", "-out", "root.crt", "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign");
  for (const n of ["server", "client"]) {
    openssl("req", ...ec, "-subj", `/CN=${n}`, "-keyout", `${n}.key`, "-out", `${n}.csr`);
    openssl("x509", "-req", "-in", `${n}.csr`, "-CA", "root.crt", "-CAkey", "root.key", "-set_serial", n === "server" ? "2" : "3", "-days", "2", "-out", `${n}.crt`);
  }
  const read = (n: string) => readFileSync(join(dir, n), "utf8");
  const clientOptions = { host: "127.0.0.1", key: read("client.key"), cert: read("client.crt"), ca: read("root.crt"), checkServerIdentity: () => undefined, minVersion: "TLSv1.3" as const };
  const start = async (capped: "on" | "off") => {
    const child = fork(new URL(import.meta.url).pathname, ["--server", dir, capped], { execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] });
    const port = await new Promise<number>((resolve) => child.once("message", (m: { port: number }) => resolve(m.port)));
    return { child, port };
  };
  const cpu = (child: ChildProcess, run: () => Promise<void>) =>
    new Promise<number>((resolve) => {
      child.send("mark");
      setTimeout(async () => {
        await run();
        child.once("message", (m: { cpuUs: number }) => resolve(m.cpuUs));
        child.send("read");
      }, 50);
    });
  const connect = (port: number) =>
    new Promise<TLSSocket>((resolve, reject) => {
      const s = tlsConnect({ ...clientOptions, port });
      s.once("secureConnect", () => resolve(s));
      s.once("error", reject);
    });
  const measure = async (port: number, child: ChildProcess) => {
    const hs = await cpu(child, async () => {
      for (let i = 0; i < handshakes; i++) {
        const s = await connect(port);
        // TLS 1.3: the server's 'secure' comes with the client's Finished; one ping makes sure it happened.
        await new Promise<void>((r) => (s.once("data", () => r()), s.write("p")));
        s.destroy();
      }
    });
    const socket = await connect(port);
    const ping = Buffer.alloc(100, 0x70);
    const rt = await cpu(child, async () => {
      for (let i = 0; i < roundTrips; i++) {
        await new Promise<void>((r) => {
          let got = 0;
          const onData = (d: Buffer) => {
            got += d.length;
            if (got >= ping.length) (socket.off("data", onData), r());
          };
          socket.on("data", onData);
          socket.write(ping);
        });
      }
    });
    const bulk = Buffer.alloc(1 << 20, 0x62);
    const mb = await cpu(child, async () => {
      for (let i = 0; i < mebibytes; i++) if (!socket.write(bulk)) await new Promise((r) => socket.once("drain", r));
      await new Promise<void>((r) => (socket.once("data", () => r()), socket.write("p")));
    });
    socket.destroy();
    return { handshakeUs: hs / handshakes, roundTripUs: rt / roundTrips, perMiBUs: mb / mebibytes };
  };
  try {
    const samples: Record<string, Array<{ handshakeUs: number; roundTripUs: number; perMiBUs: number }>> = { off: [], on: [] };
    for (let round = 0; round < rounds; round++) {
      for (const capped of (round % 2 === 0 ? ["off", "on"] : ["on", "off"]) as Array<"on" | "off">) {
        const { child, port } = await start(capped);
        await measure(port, child); // warm-up
        samples[capped]!.push(await measure(port, child));
        child.kill();
      }
    }
    const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const row = (k: "handshakeUs" | "roundTripUs" | "perMiBUs") => {
      const off = median(samples.off!.map((s) => s[k]));
      const on = median(samples.on!.map((s) => s[k]));
      return { without: off.toFixed(1), capped: on.toFixed(1), ratio: (on / off).toFixed(2), rounds: samples.on!.map((s, i) => (s[k] / samples.off![i]![k]).toFixed(2)).join(" ") };
    };
    console.log(`server CPU µs, median of ${rounds} rounds (${handshakes} handshakes, ${roundTrips} round trips, ${mebibytes} MiB each), Node ${process.version}`);
    console.table({ "per full mTLS handshake": row("handshakeUs"), "per 100-byte round trip": row("roundTripUs"), "per MiB received": row("perMiBUs") });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
