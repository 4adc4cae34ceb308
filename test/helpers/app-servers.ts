import { spawn } from "node:child_process";
import { createServer as createHttpServer } from "node:http";
import type { IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from "node:http";
import { createServer as createH2Server } from "node:http2";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { createServer as createNetServer } from "node:net";
import type { AddressInfo, Server as NetServer, Socket } from "node:net";
import * as grpc from "@grpc/grpc-js";

/** A plain HTTP app on loopback: echoes method, path and headers as JSON; /big returns 1 MiB; /slow?ms=N waits. */
export interface HttpApp {
  readonly port: number;
  readonly seen: { method: string; url: string; headers: IncomingHttpHeaders }[];
  close(): Promise<void>;
}

export async function startHttpApp(port = 0): Promise<HttpApp> {
  const seen: HttpApp["seen"] = [];
  const big = Buffer.alloc(1 << 20, 0x61);
  const server: Server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
      const url = new URL(req.url ?? "/", "http://app");
      if (url.pathname === "/big") {
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": big.length });
        res.end(big);
        return;
      }
      const reply = () => {
        const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, bodyBytes: Buffer.concat(chunks).length });
        res.writeHead(200, { "content-type": "application/json", "x-app": "node" });
        res.end(body);
      };
      if (url.pathname === "/slow") setTimeout(reply, Number(url.searchParams.get("ms") ?? 500));
      else reply();
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

const PYTHON_APP = `
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"app": "python", "path": self.path, "xfcc": self.headers.get("x-forwarded-client-cert")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print("PORT", s.server_address[1], flush=True)
s.serve_forever()
`;

/** A Python http.server app (a real non-Node peer): echoes the path and the XFCC header it received. */
export async function startPythonApp(): Promise<{ port: number; close(): Promise<void> }> {
  const child = spawn("python3", ["-c", PYTHON_APP], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const m = /PORT (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once("exit", (code) => reject(new Error(`python app exited with ${code}`)));
  });
  return {
    port,
    close: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    },
  };
}

/** A JSON-serialised gRPC service (no .proto needed): Say echoes and reports the XFCC it saw; Secret is for deny tests. */
const json = {
  serialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer) => JSON.parse(bytes.toString("utf8")) as unknown,
};
export const ECHO_SERVICE = {
  say: { path: "/test.Echo/Say", requestStream: false, responseStream: false, requestSerialize: json.serialize, requestDeserialize: json.deserialize, responseSerialize: json.serialize, responseDeserialize: json.deserialize },
  secret: { path: "/test.Echo/Secret", requestStream: false, responseStream: false, requestSerialize: json.serialize, requestDeserialize: json.deserialize, responseSerialize: json.serialize, responseDeserialize: json.deserialize },
} satisfies grpc.ServiceDefinition;

export const EchoClient = grpc.makeGenericClientConstructor(ECHO_SERVICE, "Echo");

export async function startGrpcApp(): Promise<{ port: number; close(): Promise<void> }> {
  const server = new grpc.Server();
  const handler: grpc.handleUnaryCall<{ text?: string }, unknown> = (call, callback) => {
    const xfcc = call.metadata.get("x-forwarded-client-cert")[0];
    const trailer = new grpc.Metadata();
    trailer.set("x-app-trailer", "kept");
    // Every value of Dapr's caller attribution, to prove the sidecar set exactly one of each.
    const dapr = Object.fromEntries(["dapr-caller-app-id", "dapr-caller-namespace", "dapr-callee-app-id"].map((name) => [name, call.metadata.get(name).map(String)]));
    callback(null, { echo: call.request.text ?? "", xfcc: xfcc === undefined ? null : String(xfcc), path: call.getPath(), dapr }, trailer);
  };
  server.addService(ECHO_SERVICE, { say: handler, secret: handler });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return { port, close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())) };
}

/** Unary call through a plaintext channel (the app side of a sidecar); resolves with response, status and trailers. */
export function grpcSay(
  address: string,
  method: "say" | "secret",
  text: string,
  metadata: Record<string, string> = {},
): Promise<{ response?: Record<string, unknown>; code: number; details: string; trailers: Record<string, unknown> }> {
  const client = new EchoClient(address, grpc.credentials.createInsecure()) as unknown as Record<string, (...args: unknown[]) => grpc.ClientUnaryCall> & grpc.Client;
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(metadata)) md.set(k, v);
  return new Promise((resolve) => {
    let response: Record<string, unknown> | undefined;
    const call = client[method]!({ text }, md, { deadline: Date.now() + 10_000 }, (_error: grpc.ServiceError | null, value: Record<string, unknown>) => {
      response = value;
    });
    // grpc-js calls back before it emits "status"; the trailers arrive with the status.
    call.on("status", (status: grpc.StatusObject) => {
      client.close();
      resolve({ ...(status.code === 0 ? { response } : {}), code: status.code, details: status.code === 0 ? "" : status.details, trailers: status.metadata.getMap() });
    });
  });
}

/** A TCP echo app. */
export async function startTcpEcho(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: NetServer = createNetServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * A plaintext app serving HTTP/1.1 and h2c (prior knowledge) on one port, as an app behind the
 * sidecar gets both (gRPC over h2c, anything else over HTTP/1.1): `handle` gets node:http and
 * node:http2 compat requests alike (`req.httpVersionMajor` tells them apart).
 */
export async function startH1AndH2cApp(
  handle: (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => void,
): Promise<{ port: number; close(): Promise<void> }> {
  const h1 = createHttpServer(handle);
  const h2 = createH2Server(handle);
  const sockets = new Set<Socket>();
  const server = createNetServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    // The first chunk put back, as the sidecar's own listener does (node:http2 reads it from the socket's buffer).
    socket.once("data", (first: Buffer) => {
      socket.pause();
      socket.unshift(first);
      if (first.subarray(0, 4).toString("latin1") === "PRI ") return void h2.emit("connection", socket);
      h1.emit("connection", socket);
      socket.resume();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      h2.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
