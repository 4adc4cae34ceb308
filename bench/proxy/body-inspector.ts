/**
 * What reading POST bodies for `_method` costs (src/proxy/method-override-body.ts), per MiB, for
 * ordinary bodies and for the shapes that cost it most, beside a baseline measured in the same
 * process on the same chunks: AES-128-GCM over the bytes, which is what one TLS hop spends on
 * them anyway. Rounds interleave inspector and baseline; prints the medians with their ranges.
 * Figures, not assertions; run it on a quiet machine.
 *   node --import tsx bench/proxy/body-inspector.ts [--rounds N]
 */
import { createCipheriv, randomBytes } from "node:crypto";
import { methodOverrideInspector } from "../../src/proxy/method-override-body.ts";
import type { BodyInspector } from "../../src/proxy/method-override-body.ts";

const flag = (name: string, fallback: string): string => {
  const at = process.argv.indexOf(name);
  return at === -1 ? fallback : (process.argv[at + 1] ?? fallback);
};
const ROUNDS = Number(flag("--rounds", "7"));
const MIB = 1024 * 1024;
const BOUNDARY = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
const noise = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7919 + (i >> 8)) & 255));

interface Shape {
  readonly name: string;
  readonly contentType: string | undefined;
  readonly body: Buffer;
}

const shapes: Shape[] = [
  { name: "form, 1 KiB fields", contentType: "application/x-www-form-urlencoded", body: Buffer.from(Array.from({ length: 1100 }, (_, i) => `field${i}=${"v".repeat(1000)}`).join("&")).subarray(0, MIB) },
  { name: "form, one-byte fields (worst)", contentType: "application/x-www-form-urlencoded", body: Buffer.from("m=1&".repeat(MIB / 4)) },
  { name: "no Content-Type, binary", contentType: undefined, body: noise(MIB) },
  { name: "multipart, one 1 MiB file", contentType: `multipart/form-data; boundary=${BOUNDARY}`, body: Buffer.concat([Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`), noise(MIB), Buffer.from(`\r\n--${BOUNDARY}--\r\n`)]) },
  { name: "multipart, 4,000 small parts", contentType: "multipart/form-data; boundary=B", body: Buffer.from(Array.from({ length: 4000 }, (_, i) => `--B\r\nContent-Disposition: form-data; name="f${i}"\r\n\r\nv\r\n`).join("") + "--B--\r\n") },
  // Every head read in full: names that start like `_method` (the cap is 4,096 parts).
  { name: "multipart, 4,000 parts named _method_id… (worst)", contentType: "multipart/form-data; boundary=B", body: Buffer.from(Array.from({ length: 4000 }, (_, i) => `--B\r\nContent-Disposition: form-data; name="_method_id${i}"\r\n\r\nv\r\n`).join("") + "--B--\r\n") },
  { name: "JSON API payload", contentType: "application/json", body: Buffer.from(JSON.stringify(Array.from({ length: 12000 }, (_, i) => ({ id: i, payment_method: "card", note: "x".repeat(40) })))).subarray(0, MIB) },
];

function chunks(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; i += 64 * 1024) out.push(body.subarray(i, i + 64 * 1024));
  return out;
}

function inspect(shape: Shape, parts: readonly Buffer[]): number {
  const started = performance.now();
  const made = methodOverrideInspector("POST", shape.contentType === undefined ? [] : ["Content-Type", shape.contentType]);
  if (made === undefined || "refused" in made) throw new Error(`${shape.name}: no inspector (${JSON.stringify(made)})`);
  const inspector: BodyInspector = made;
  for (const part of parts) if (inspector.push(part) !== undefined) throw new Error(`${shape.name}: refused`);
  if (inspector.end() !== undefined) throw new Error(`${shape.name}: refused at the end`);
  return performance.now() - started;
}

const key = randomBytes(16);
function encrypt(parts: readonly Buffer[]): number {
  const started = performance.now();
  const cipher = createCipheriv("aes-128-gcm", key, randomBytes(12));
  for (const part of parts) cipher.update(part);
  cipher.final();
  return performance.now() - started;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const perMib = (ms: number, bytes: number) => (ms * MIB) / bytes;

console.log(`node ${process.version}, ${ROUNDS} rounds, 64 KiB chunks; ms per MiB (median, min–max)`);
console.log(`${"body".padEnd(44)} ${"inspector".padStart(18)} ${"AES-128-GCM".padStart(18)}   ratio`);
for (const shape of shapes) {
  const parts = chunks(shape.body);
  for (let warm = 0; warm < 3; warm++) {
    inspect(shape, parts);
    encrypt(parts);
  }
  const inspected: number[] = [];
  const encrypted: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    if (round % 2 === 0) {
      inspected.push(perMib(inspect(shape, parts), shape.body.length));
      encrypted.push(perMib(encrypt(parts), shape.body.length));
    } else {
      encrypted.push(perMib(encrypt(parts), shape.body.length));
      inspected.push(perMib(inspect(shape, parts), shape.body.length));
    }
  }
  const range = (v: number[]) => `${median(v).toFixed(2)} (${Math.min(...v).toFixed(2)}–${Math.max(...v).toFixed(2)})`;
  console.log(`${shape.name.padEnd(44)} ${range(inspected).padStart(18)} ${range(encrypted).padStart(18)}   ${(median(inspected) / median(encrypted)).toFixed(2)}×`);
}
