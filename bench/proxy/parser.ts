/**
 * The two llhttp builds behind MessageParser (src/proxy/http1/llhttp.ts), in one process,
 * interleaved: Node's own C build through `_http_common` ("node") and undici's pinned
 * WebAssembly build ("wasm"). Each round runs every case with both, their order swapped every
 * round so that the machine's drift hits both alike; prints messages/s and MB/s per round, the
 * medians with their ranges, and wasm/node. Figures, not assertions; run it on a quiet machine.
 *   node --import tsx bench/proxy/parser.ts [--rounds N] [--ms M]
 */
import { createNodeParser } from "../../src/proxy/http1/llhttp-node.ts";
import { createWasmParser } from "../../src/proxy/http1/llhttp-wasm.ts";
import type { MessageParser, MessageParserFactory } from "../../src/proxy/http1/message-parser.ts";

const flag = (name: string, fallback: string): string => {
  const at = process.argv.indexOf(name);
  return at === -1 ? fallback : (process.argv[at + 1] ?? fallback);
};
const ROUNDS = Number(flag("--rounds", "7"));
const MS = Number(flag("--ms", "400"));

interface Case {
  readonly name: string;
  readonly kind: "request" | "response";
  /** The chunks one pass feeds, as a socket would deliver them. */
  readonly chunks: readonly Buffer[];
  readonly messages: number;
  /** A new parser for every pass (a new connection), else one parser for the whole run (keep-alive). */
  readonly fresh?: boolean;
}

const GET = "GET /items/1 HTTP/1.1\r\nHost: app-b.mesh.test:8080\r\nUser-Agent: wrk/4.2\r\nAccept: */*\r\ndapr-app-id: bench-b\r\n\r\n";
const RESPONSE = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nDate: Thu, 03 Dec 2026 11:00:00 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=60\r\n\r\nhello, world!";
const KIB = "x".repeat(1024);
const CHUNKED = `HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n${`400\r\n${KIB}\r\n`.repeat(16)}0\r\n\r\n`;
const MIB = 1024 * 1024;

/** `bytes` cut into socket-sized reads. */
function reads(bytes: Buffer, size = 64 * 1024): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return out;
}

const CASES: Case[] = [
  { name: "GET, pipelined x100", kind: "request", chunks: [Buffer.from(GET.repeat(100))], messages: 100 },
  { name: "GET, new parser each", kind: "request", chunks: [Buffer.from(GET)], messages: 1, fresh: true },
  { name: "200 + 13 B body x100", kind: "response", chunks: [Buffer.from(RESPONSE.repeat(100))], messages: 100 },
  { name: "chunked 16 KiB body", kind: "response", chunks: reads(Buffer.from(CHUNKED)), messages: 1 },
  { name: "1 MiB, content-length", kind: "response", chunks: reads(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${MIB}\r\n\r\n`), Buffer.alloc(MIB, 120)])), messages: 1 },
  { name: "1 MiB, chunked", kind: "response", chunks: reads(Buffer.concat([Buffer.from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), Buffer.from(`${(64 * 1024).toString(16)}\r\n${"y".repeat(64 * 1024)}\r\n`.repeat(16)), Buffer.from("0\r\n\r\n")])), messages: 1 },
];

const PARSERS: Record<"node" | "wasm", MessageParserFactory> = { node: createNodeParser, wasm: createWasmParser };

interface Result {
  readonly messagesPerSecond: number;
  readonly megabytesPerSecond: number;
}

/** Runs one case with one build for about MS milliseconds. */
function measure(create: MessageParserFactory, c: Case): Result {
  let completed = 0;
  let bodyBytes = 0;
  const events = {
    onHead: () => false,
    onBody: (chunk: Buffer) => {
      bodyBytes += chunk.length;
    },
    onComplete: () => {
      completed++;
    },
  };
  const passBytes = c.chunks.reduce((sum, chunk) => sum + chunk.length, 0);
  let parser: MessageParser = create(c.kind, 16 * 1024, events);
  let passes = 0;
  const started = process.hrtime.bigint();
  const deadline = started + BigInt(MS) * 1_000_000n;
  while (process.hrtime.bigint() < deadline) {
    for (let i = 0; i < 20; i++) {
      if (c.fresh === true) {
        parser.close();
        parser = create(c.kind, 16 * 1024, events);
      }
      for (const chunk of c.chunks) {
        const result = parser.execute(chunk);
        if (result !== chunk.length) throw new Error(`${c.name}: ${JSON.stringify(result)}`);
      }
      passes++;
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  parser.close();
  if (completed !== passes * c.messages) throw new Error(`${c.name}: ${completed} messages completed, ${passes * c.messages} expected (body ${bodyBytes})`);
  return { messagesPerSecond: completed / seconds, megabytesPerSecond: (passes * passBytes) / seconds / 1e6 };
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const fmt = (value: number): string => (value >= 100 ? value.toFixed(0) : value.toFixed(1));
const range = (values: number[]): string => `${fmt(Math.min(...values))}–${fmt(Math.max(...values))}`;

function main(): void {
  // Warm both (JIT, the WebAssembly compile) before measuring.
  for (const c of CASES) for (const create of Object.values(PARSERS)) measure(create, { ...c, name: c.name }) && undefined;
  const results = new Map<string, Result[]>();
  for (let round = 0; round < ROUNDS; round++) {
    const order: ("node" | "wasm")[] = round % 2 === 0 ? ["node", "wasm"] : ["wasm", "node"];
    for (const c of CASES) {
      for (const name of order) {
        const key = `${c.name}|${name}`;
        const result = measure(PARSERS[name], c);
        results.set(key, [...(results.get(key) ?? []), result]);
      }
    }
    process.stderr.write(`round ${round + 1}/${ROUNDS} done\n`);
  }
  console.log(`Node ${process.version}, ${ROUNDS} rounds of ${MS} ms per case and build, medians (ranges):`);
  console.log(`${"case".padEnd(24)} ${"node msg/s".padStart(22)} ${"wasm msg/s".padStart(22)} ${"node MB/s".padStart(16)} ${"wasm MB/s".padStart(16)}  wasm/node (range of per-round ratios)`);
  for (const c of CASES) {
    const node = results.get(`${c.name}|node`)!;
    const wasm = results.get(`${c.name}|wasm`)!;
    const nodeRate = node.map((r) => r.messagesPerSecond);
    const wasmRate = wasm.map((r) => r.messagesPerSecond);
    const ratios = wasmRate.map((rate, i) => rate / nodeRate[i]!);
    console.log(
      `${c.name.padEnd(24)} ${`${fmt(median(nodeRate))} (${range(nodeRate)})`.padStart(22)} ${`${fmt(median(wasmRate))} (${range(wasmRate)})`.padStart(22)} ${`${fmt(median(node.map((r) => r.megabytesPerSecond)))}`.padStart(16)} ${`${fmt(median(wasm.map((r) => r.megabytesPerSecond)))}`.padStart(16)}  ${median(ratios).toFixed(2)} (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`,
    );
  }
}

main();
