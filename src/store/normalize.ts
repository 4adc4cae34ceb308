import { MeshwardError } from "../errors.ts";
import type { IssuanceFilter } from "./store.ts";

/** Serials are kept as uppercase hex (node:crypto's form); lookups accept lower case too. */
export function normalizeSerial(serial: string): string {
  return serial.trim().toUpperCase();
}

/** For writes: a serial that is not hex would never match a certificate, so refuse it. */
export function requireSerial(serial: string, what: string): string {
  const normalized = normalizeSerial(serial);
  if (!/^[0-9A-F]+$/.test(normalized)) {
    throw new MeshwardError("E_STORE_WRITE", `cannot ${what}: serial ${JSON.stringify(serial.slice(0, 80))} is not hexadecimal`);
  }
  return normalized;
}

export function requireLimit(filter: IssuanceFilter | undefined): number | undefined {
  const limit = filter?.limit;
  if (limit === undefined) return undefined;
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new MeshwardError("E_STORE_READ", `listIssuances limit must be a non-negative integer, got ${String(limit)}`);
  }
  return limit;
}

export function requireDate(value: Date, field: string): number {
  const ms = value instanceof Date ? value.getTime() : Number.NaN;
  if (!Number.isFinite(ms)) throw new MeshwardError("E_STORE_WRITE", `${field} is not a valid date`);
  return ms;
}

/** Concatenated DER SEQUENCEs (published_crl.others) split back into one Buffer each. */
export function splitDers(bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (bytes[at] !== 0x30 || at + 2 > bytes.length) throw new MeshwardError("E_STORE_READ", "the published CRLs in the store are damaged");
    let length = bytes[at + 1]!;
    let header = 2;
    if (length & 0x80) {
      const n = length & 0x7f;
      if (n === 0 || n > 4 || at + 2 + n > bytes.length) throw new MeshwardError("E_STORE_READ", "the published CRLs in the store are damaged");
      length = 0;
      for (let i = 0; i < n; i++) length = length * 256 + bytes[at + 2 + i]!;
      header += n;
    }
    const end = at + header + length;
    if (end > bytes.length) throw new MeshwardError("E_STORE_READ", "the published CRLs in the store are damaged");
    out.push(Buffer.from(bytes.subarray(at, end)));
    at = end;
  }
  return out;
}
