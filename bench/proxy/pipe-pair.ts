/**
 * The baselines the proxy benchmarks share, as scripts for `node -e`: the backend (13 bytes at
 * `/`, 1 MiB at `/big`) and the pipe pair (plain TCP in, each connection piped into its own
 * mTLS connection, piped out again to the backend: no HTTP at all, the ceiling of any Node
 * sidecar pair). Each prints "PORT <n>" once listening.
 */

export const BACKEND = `
const http = require("node:http");
const big = Buffer.alloc(1 << 20, 97);
const s = http.createServer((req, res) => {
  if (req.url === "/big") { res.writeHead(200, { "content-type": "application/octet-stream", "content-length": big.length }); res.end(big); return; }
  res.writeHead(200, { "content-type": "text/plain", "content-length": 13 }); res.end("hello, mesh!\\n");
});
s.keepAliveTimeout = 60000;
s.listen(0, "127.0.0.1", () => console.log("PORT " + s.address().port));
`;

export const PIPE_INBOUND = (cert: string, key: string, ca: string, appPort: number) => `
const fs = require("fs"), tls = require("tls"), net = require("net");
const s = tls.createServer({ cert: fs.readFileSync(${JSON.stringify(cert)}), key: fs.readFileSync(${JSON.stringify(key)}), ca: fs.readFileSync(${JSON.stringify(ca)}), requestCert: true, rejectUnauthorized: true }, (c) => {
  const u = net.connect({ host: "127.0.0.1", port: ${appPort}, noDelay: true });
  c.pipe(u).pipe(c); c.on("error", () => u.destroy()); u.on("error", () => c.destroy());
});
s.listen(0, "127.0.0.1", () => console.log("PORT " + s.address().port));`;
export const PIPE_OUTBOUND = (cert: string, key: string, ca: string, peerPort: number) => `
const fs = require("fs"), tls = require("tls"), net = require("net");
const opts = { host: "127.0.0.1", port: ${peerPort}, cert: fs.readFileSync(${JSON.stringify(cert)}), key: fs.readFileSync(${JSON.stringify(key)}), ca: fs.readFileSync(${JSON.stringify(ca)}), servername: "naive-b.mesh.test" };
let session;
const s = net.createServer({ noDelay: true }, (c) => {
  const u = tls.connect({ ...opts, session });
  u.setNoDelay(true); u.on("session", (x) => (session = x));
  c.pipe(u).pipe(c); c.on("error", () => u.destroy()); u.on("error", () => c.destroy());
});
s.listen(0, "127.0.0.1", () => console.log("PORT " + s.address().port));`;
