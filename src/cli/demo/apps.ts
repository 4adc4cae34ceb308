import { createServer, request, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** The Python app of the demo: echoes what it was asked and who its sidecar says called. */
export const INVENTORY_APP_PY = String.raw`
import json, os, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer

def exit_with_the_demo():
    # stdin is a pipe from meshward demo, which never writes to it: it ends when the demo does,
    # however it ends (kill -9 included), and so does this app.
    while sys.stdin.buffer.read(65536):
        pass
    os._exit(0)

threading.Thread(target=exit_with_the_demo, daemon=True).start()

class Inventory(BaseHTTPRequestHandler):
    def _answer(self):
        body = json.dumps({
            "app": "inventory (Python)",
            "method": self.command,
            "path": self.path,
            "caller": self.headers.get("x-forwarded-client-cert", ""),
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_DELETE = _answer
    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Inventory)
print(server.server_address[1], flush=True)
server.serve_forever()
`;

export interface HttpAnswer {
  readonly status: number;
  readonly body: string;
}

/** A plaintext HTTP call on loopback (what an app does towards its own sidecar). */
export function httpCall(port: number, path: string, options: { method?: string; headers?: Record<string, string> } = {}): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method: options.method ?? "GET", headers: options.headers, timeout: 10_000 }, (res: IncomingMessage) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end();
  });
}

/**
 * The Node app of the demo ("orders"): on /checkout it calls inventory and billing through
 * its own sidecar's outbound port, in plain HTTP, naming the target by `dapr-app-id`; the
 * sidecar does the mTLS. It knows nothing about certificates.
 */
export async function startOrdersApp(outboundPort: () => number): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    void (async () => {
      if (req.url === "/checkout") {
        const inventory = await httpCall(outboundPort(), "/items/42", { headers: { "dapr-app-id": "inventory" } });
        const billing = await httpCall(outboundPort(), "/charge", { method: "POST", headers: { "dapr-app-id": "billing" } });
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ inventory, billing }));
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ app: "orders (Node)", caller: req.headers["x-forwarded-client-cert"] ?? "" }));
    })().catch((error: Error) => {
      res.writeHead(502, { "content-type": "text/plain" });
      res.end(error.message);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as AddressInfo).port };
}
