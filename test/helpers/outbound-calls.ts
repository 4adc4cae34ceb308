import { request as httpRequest } from "node:http";
import { connect as http2Connect } from "node:http2";
import { connect as netConnect } from "node:net";

/** What a call through a sidecar's outbound got: status, x-meshward-error and body; or no answer within the bound. */
export type OutboundAnswer = { status: number; error: unknown; body: string } | "no answer";

/** GET /orders over HTTP/1.1 to an outbound listener, routed by `dapr-app-id`. */
export function http1Call(port: number, appId: string, boundMs: number): Promise<OutboundAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port, path: "/orders", headers: { "dapr-app-id": appId }, timeout: boundMs }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, error: res.headers["x-meshward-error"], body }));
    });
    req.on("timeout", () => {
      req.destroy();
      resolve("no answer");
    });
    req.on("error", reject);
    req.end();
  });
}

/** The same over HTTP/2 (h2c). */
export function h2Call(port: number, appId: string, boundMs: number): Promise<OutboundAnswer> {
  return new Promise((resolve) => {
    const session = http2Connect(`http://127.0.0.1:${port}`);
    session.on("error", () => undefined);
    const stream = session.request({ ":path": "/orders", "dapr-app-id": appId });
    stream.on("error", () => undefined);
    let status = 0;
    let error: unknown;
    let body = "";
    const timer = setTimeout(() => {
      session.destroy();
      resolve("no answer");
    }, boundMs);
    stream.on("response", (headers) => {
      status = Number(headers[":status"]);
      error = headers["x-meshward-error"];
    });
    stream.on("data", (d: Buffer) => (body += d.toString()));
    stream.on("end", () => {
      clearTimeout(timer);
      session.close();
      resolve({ status, error, body });
    });
    stream.end();
  });
}

/** Opens a TCP connection to an outbound's TCP listener: "closed" when the outbound closes it within the bound, else "open". */
export function tcpOutcome(port: number, boundMs: number): Promise<"closed" | "open"> {
  return new Promise((resolve) => {
    const tunnel = netConnect({ host: "127.0.0.1", port });
    tunnel.on("error", () => undefined);
    const timer = setTimeout(() => {
      tunnel.destroy();
      resolve("open");
    }, boundMs);
    tunnel.once("close", () => {
      clearTimeout(timer);
      resolve("closed");
    });
  });
}
