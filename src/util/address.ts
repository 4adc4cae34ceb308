import { isIP } from "node:net";
import { MeshwardError, shownValue } from "../errors.ts";

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** "127.0.0.1:8443", "[::1]:0", "localhost:9000", ":8443" (loopback). Port 0 means "any free port". */
export function parseHostPort(input: string, what = "address"): HostPort {
  const text = String(input).trim();
  const match = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    throw new MeshwardError("E_ADDRESS_INVALID", `invalid ${what} ${shownValue(input)}: use HOST:PORT, such as 127.0.0.1:8443 or [::1]:8443`);
  }
  const host = match[1] ?? match[2] ?? "";
  return { host: host === "" ? "127.0.0.1" : host, port };
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** "HOST:PORT[,HOST:PORT…]" (several replicas of one service); no empty entry, no port 0. */
export function parseHostPortList(input: string, what = "address"): HostPort[] {
  const entries = String(input).split(",").map((entry) => entry.trim());
  if (entries.some((entry) => entry === "")) {
    throw new MeshwardError("E_ADDRESS_INVALID", `invalid ${what} ${shownValue(input)}: use HOST:PORT, or several separated by commas (ca-0:8443,ca-1:8443)`);
  }
  return entries.map((entry) => {
    const parsed = parseHostPort(entry, what);
    if (parsed.port === 0) throw new MeshwardError("E_ADDRESS_INVALID", `invalid ${what} ${shownValue(entry)}: the port cannot be 0`);
    return parsed;
  });
}

/**
 * A host a plaintext listener may bind for this machine only: `localhost`, 127.0.0.0/8 or ::1
 * (no DNS name: what it resolves to is not known here).
 */
export function isLoopbackListenHost(host: string): boolean {
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) return host === "::1";
  return false;
}
