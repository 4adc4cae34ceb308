/** Distinguished names as text, in node:crypto's X509Certificate.subject style ("O=SPIFFE\nCN=x"). */
import { children, content, DerError, expectTag, readOid, TAG } from "./der.ts";
import type { Tlv } from "./der.ts";

const SHORT_NAMES: Record<string, string> = {
  "2.5.4.3": "CN",
  "2.5.4.5": "serialNumber",
  "2.5.4.6": "C",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.9": "street",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "2.5.4.45": "x500UniqueIdentifier",
  "0.9.2342.19200300.100.1.25": "DC",
  "0.9.2342.19200300.100.1.1": "UID",
  "1.2.840.113549.1.9.1": "emailAddress",
};

function stringValue(buf: Uint8Array, el: Tlv): string {
  const bytes = content(buf, el);
  switch (el.tag) {
    case TAG.UTF8_STRING:
      return bytes.toString("utf8");
    case TAG.PRINTABLE_STRING:
    case TAG.IA5_STRING:
    case 0x14: // TeletexString, read as Latin-1 like most tools
      return bytes.toString("latin1");
    case 0x1e: // BMPString (UTF-16BE)
      return Buffer.from(bytes).swap16().toString("utf16le");
    default:
      return `#${Buffer.from(buf.subarray(el.start, el.end)).toString("hex")}`;
  }
}

/** Name (RDNSequence) as "KEY=value" lines, one RDN per line, multi-valued RDNs joined with " + ". */
export function formatName(buf: Uint8Array, name: Tlv): string {
  expectTag(name, TAG.SEQUENCE, "Name");
  const lines: string[] = [];
  for (const rdn of children(buf, name)) {
    if (rdn.tag !== TAG.SET) throw new DerError("RelativeDistinguishedName must be a SET");
    const parts = children(buf, rdn).map((atv) => {
      const [type, value] = children(buf, expectTag(atv, TAG.SEQUENCE, "AttributeTypeAndValue"));
      const id = readOid(buf, type, "attribute type");
      if (value === undefined) throw new DerError("attribute value is missing");
      return `${SHORT_NAMES[id] ?? id}=${stringValue(buf, value)}`;
    });
    lines.push(parts.join(" + "));
  }
  return lines.join("\n");
}
