import { MeshwardError } from "../errors.ts";

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
    throw new MeshwardError("E_ADDRESS_INVALID", `invalid ${what} ${JSON.stringify(input)}: use HOST:PORT, such as 127.0.0.1:8443 or [::1]:8443`);
  }
  const host = match[1] ?? match[2] ?? "";
  return { host: host === "" ? "127.0.0.1" : host, port };
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
