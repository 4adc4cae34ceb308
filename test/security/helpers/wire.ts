/**
 * Reads the bytes the sidecar wrote toward an app (one tap connection at a time) as a strict
 * HTTP/1.1 request stream (RFC 9112 §2–§7): request line, fields, then a body framed by
 * Transfer-Encoding: chunked or Content-Length, or no body. What it finds is what any app on
 * that connection would parse, whatever its own quirks.
 */
import type { Tap } from "./apps.ts";

export interface WireRequest {
  readonly conn: number;
  readonly method: string;
  readonly target: string;
  /** Field lines as sent, trailers (chunked) included, in order: [name, value]. */
  readonly fields: readonly (readonly [string, string])[];
  readonly bodyBytes: number;
}

export interface WireReading {
  readonly requests: WireRequest[];
  /** Bytes that are not an HTTP/1.1 request (an HTTP/2 preface, garbage), per connection. */
  readonly unparsed: { conn: number; text: string }[];
}

export function readWire(chunks: Tap["chunks"]): WireReading {
  const byConn = new Map<number, Buffer[]>();
  for (const ch of chunks) {
    const list = byConn.get(ch.conn) ?? [];
    list.push(ch.data);
    byConn.set(ch.conn, list);
  }
  const requests: WireRequest[] = [];
  const unparsed: WireReading["unparsed"] = [];
  for (const [conn, list] of byConn) {
    const buf = Buffer.concat(list);
    let at = 0;
    while (at < buf.length) {
      const headEnd = buf.indexOf("\r\n\r\n", at);
      const lines = headEnd < 0 ? [] : buf.subarray(at, headEnd).toString("latin1").split("\r\n");
      const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/1\.1$/.exec(lines[0] ?? "");
      if (headEnd < 0 || !m) {
        unparsed.push({ conn, text: buf.subarray(at, at + 200).toString("latin1") });
        break;
      }
      const fields: [string, string][] = [];
      for (const line of lines.slice(1)) {
        const i = line.indexOf(":");
        fields.push(i < 0 ? [line, ""] : [line.slice(0, i), line.slice(i + 1).trim()]);
      }
      let p = headEnd + 4;
      let bodyBytes = 0;
      const te = fields.find(([n]) => n.toLowerCase() === "transfer-encoding")?.[1].toLowerCase();
      const cl = fields.find(([n]) => n.toLowerCase() === "content-length")?.[1];
      let ok = true;
      if (te?.split(",").map((s) => s.trim()).at(-1) === "chunked") {
        for (;;) {
          const lineEnd = buf.indexOf("\r\n", p);
          if (lineEnd < 0) {
            ok = false;
            break;
          }
          const size = parseInt(buf.subarray(p, lineEnd).toString("latin1").split(";")[0]!, 16);
          if (Number.isNaN(size)) {
            ok = false;
            break;
          }
          p = lineEnd + 2;
          if (size === 0) {
            // trailer section, then CRLF
            for (;;) {
              const tEnd = buf.indexOf("\r\n", p);
              if (tEnd < 0) {
                ok = false;
                break;
              }
              const line = buf.subarray(p, tEnd).toString("latin1");
              p = tEnd + 2;
              if (line === "") break;
              const i = line.indexOf(":");
              fields.push(i < 0 ? [line, ""] : [line.slice(0, i), line.slice(i + 1).trim()]);
            }
            break;
          }
          bodyBytes += size;
          p += size + 2;
        }
      } else if (cl !== undefined) {
        bodyBytes = Number(cl);
        p += bodyBytes;
      }
      requests.push({ conn, method: m[1]!, target: m[2]!, fields, bodyBytes });
      if (!ok) break;
      at = p;
    }
  }
  return { requests, unparsed };
}
