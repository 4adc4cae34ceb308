import { MeshwardError } from "../errors.ts";

export interface PemBlock {
  readonly label: string;
  readonly der: Buffer;
}

const BEGIN_RE = /-----BEGIN ([A-Z0-9 ]+)-----/g;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function invalid(message: string): MeshwardError {
  return new MeshwardError("E_PEM_INVALID", message);
}

/** Body between BEGIN and END: optional RFC 1421 headers ("Proc-Type: ..."), then base64. */
function decodeBody(body: string, label: string): Buffer {
  if (!body.includes(":")) {
    // No headers (every CSR and certificate): the base64 is the body without its line breaks.
    const base64 = body.replace(/\s+/g, "");
    if (base64.length === 0 || base64.length % 4 !== 0 || !BASE64_RE.test(base64)) throw invalid(`the ${label} block is not valid base64`);
    return Buffer.from(base64, "base64");
  }
  const lines = body.split(/\r?\n/);
  let first = 0;
  if (lines.some((line) => line.includes(":"))) {
    // Legacy encrypted PEM: headers end at the first empty line.
    const blank = lines.findIndex((line, index) => index > 0 && line.trim() === "");
    if (blank === -1) throw invalid(`the ${label} block has headers but no blank line after them`);
    first = blank + 1;
  }
  const base64 = lines.slice(first).join("").replace(/\s+/g, "");
  if (base64.length === 0 || base64.length % 4 !== 0 || !BASE64_RE.test(base64)) {
    throw invalid(`the ${label} block is not valid base64`);
  }
  return Buffer.from(base64, "base64");
}

/** Every PEM block in `text`, in order. Throws E_PEM_INVALID when there is none or one is broken. */
export function pemBlocks(text: string): PemBlock[] {
  if (typeof text !== "string") throw invalid("PEM input must be text");
  const blocks: PemBlock[] = [];
  BEGIN_RE.lastIndex = 0;
  let match: RegExpExecArray | null;
  let searchFrom = 0;
  while ((match = BEGIN_RE.exec(text)) !== null) {
    if (match.index < searchFrom) continue;
    const label = match[1]!;
    const bodyStart = match.index + match[0].length;
    const endMarker = "-----END ";
    const endAt = text.indexOf(endMarker, bodyStart);
    if (endAt === -1) throw invalid(`the ${label} block has no END line`);
    const nextBegin = text.indexOf("-----BEGIN ", bodyStart);
    if (nextBegin !== -1 && nextBegin < endAt) throw invalid(`the ${label} block has no END line before the next BEGIN`);
    const endClose = text.indexOf("-----", endAt + endMarker.length);
    if (endClose === -1) throw invalid(`the ${label} block has a broken END line`);
    const endLabel = text.slice(endAt + endMarker.length, endClose);
    if (endLabel !== label) throw invalid(`a BEGIN ${label} block ends with END ${endLabel}`);
    blocks.push({ label, der: decodeBody(text.slice(bodyStart, endAt), label) });
    searchFrom = endClose + 5;
    BEGIN_RE.lastIndex = searchFrom;
  }
  if (blocks.length === 0) throw invalid("no PEM block (-----BEGIN ...-----) found");
  return blocks;
}

/** DER of every CERTIFICATE block; E_PEM_INVALID when there is none. */
export function certificatesFromPem(text: string): Buffer[] {
  const certificates = pemBlocks(text)
    .filter((block) => block.label === "CERTIFICATE")
    .map((block) => block.der);
  if (certificates.length === 0) throw invalid("no CERTIFICATE block found");
  return certificates;
}

export function toPem(der: Uint8Array, label: string): string {
  const base64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64");
  let body = "";
  for (let i = 0; i < base64.length; i += 64) body += `${base64.slice(i, i + 64)}\n`;
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}
