/**
 * WebSocket test peers: an app speaking RFC 6455 (Node has no WebSocket server built in) and a
 * raw client, for the tests that carry WebSockets through a sidecar pair.
 */
import { createHash } from "node:crypto";
import { createServer, request, type IncomingMessage, type Server } from "node:http";
import type { Duplex } from "node:stream";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** Text frames only, payloads under 64 KiB: what the tests send. */
export function decodeFrames(buffer: Buffer): { frames: { opcode: number; payload: Buffer }[]; rest: Buffer } {
  const frames: { opcode: number; payload: Buffer }[] = [];
  let offset = 0;
  while (buffer.length - offset >= 6) {
    const opcode = buffer[offset]! & 0x0f;
    let length = buffer[offset + 1]! & 0x7f;
    let at = offset + 2;
    if (length === 126) {
      length = buffer.readUInt16BE(at);
      at += 2;
    }
    if (buffer.length < at + 4 + length) break;
    const mask = buffer.subarray(at, at + 4);
    const payload = Buffer.from(buffer.subarray(at + 4, at + 4 + length).map((byte, i) => byte ^ mask[i % 4]!));
    frames.push({ opcode, payload });
    offset = at + 4 + length;
  }
  return { frames, rest: buffer.subarray(offset) };
}

export function textFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const header = payload.length < 126 ? Buffer.from([0x81, payload.length]) : Buffer.from([0x81, 126, payload.length >> 8, payload.length & 0xff]);
  return Buffer.concat([header, payload]);
}

export interface WsApp {
  readonly port: number;
  readonly upgrades: { url: string; xfcc: string | undefined; dapr: (string | string[] | undefined)[] }[];
  readonly plain: { url: string; upgrade: string | undefined }[];
  closed: number;
  /** Upgraded connections whose other side (the sidecar's connection to the app) ended or went away. */
  ended: number;
  close(): Promise<void>;
}

/** Echoes each text message back as "<xfcc URI> says: <text>". */
export async function startWsApp(): Promise<WsApp> {
  const app: WsApp = {
    port: 0,
    upgrades: [],
    plain: [],
    closed: 0,
    ended: 0,
    close: async () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const sockets = new Set<Duplex>();
  const server: Server = createServer((req, res) => {
    app.plain.push({ url: req.url ?? "", upgrade: req.headers.upgrade });
    res.end("plain answer");
  });
  server.on("upgrade", (req: IncomingMessage, socket: Duplex) => {
    sockets.add(socket);
    const xfcc = req.headers["x-forwarded-client-cert"] as string | undefined;
    // Dapr's caller attribution as the app read it (node:http joins repeated fields with ", ").
    const dapr = ["dapr-caller-app-id", "dapr-caller-namespace", "dapr-callee-app-id"].map((name) => req.headers[name]);
    app.upgrades.push({ url: req.url ?? "", xfcc, dapr });
    const accept = createHash("sha1").update(`${req.headers["sec-websocket-key"]}${GUID}`).digest("base64");
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    const caller = /URI=([^;,]+)/.exec(xfcc ?? "")?.[1] ?? "nobody";
    let pending: Buffer = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      const { frames, rest } = decodeFrames(Buffer.concat([pending, chunk]));
      pending = rest;
      for (const frame of frames) {
        if (frame.opcode === 0x1) socket.write(textFrame(`${caller} says: ${frame.payload.toString()}`));
        if (frame.opcode === 0x8) socket.end(Buffer.from([0x88, 0x00]));
      }
    });
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      app.ended += 1;
    };
    socket.once("end", end);
    socket.on("error", () => undefined);
    socket.once("close", () => {
      end();
      app.closed += 1;
      sockets.delete(socket);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const close = app.close;
  app.close = async () => {
    for (const socket of sockets) socket.destroy();
    await close();
  };
  return Object.assign(app, { port: (server.address() as { port: number }).port });
}

export const WS_HEADERS = (appId: string) => ({ connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "dapr-app-id": appId });

/** A client's (masked) text frame, payload under 126 bytes. */
export function clientTextFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = Buffer.from([1, 2, 3, 4]);
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!))]);
}

/** A WebSocket upgrade to `path` on 127.0.0.1:`port`: the upgraded connection, or a rejection naming the status. */
export function openWebSocket(port: number, path: string, headers: Record<string, string>): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, headers });
    req.on("upgrade", (_res, upgraded) => resolve(upgraded));
    req.on("response", (res) => reject(new Error(`not upgraded: ${res.statusCode}`)));
    req.on("error", reject);
    req.end();
  });
}
