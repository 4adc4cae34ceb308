import { MeshwardError } from "../errors.ts";

export interface PemBlock {
  readonly label: string;
  readonly der: Buffer;
}

/** Every PEM block in `text`, in order. Throws E_PEM_INVALID when there is none or one is broken. */
export function pemBlocks(text: string): PemBlock[] {
  void text;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "pemBlocks");
}

/** DER of every CERTIFICATE block; E_PEM_INVALID when there is none. */
export function certificatesFromPem(text: string): Buffer[] {
  void text;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "certificatesFromPem");
}

export function toPem(der: Uint8Array, label: string): string {
  void der; void label;
  throw new MeshwardError("E_NOT_IMPLEMENTED", "toPem");
}
