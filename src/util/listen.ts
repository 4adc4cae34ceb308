import type { AddressInfo, Server } from "node:net";
import { MeshwardError } from "../errors.ts";
import type { HostPort } from "./address.ts";
import { formatHostPort } from "./address.ts";

const HINTS: Readonly<Record<string, string>> = {
  EADDRINUSE: "the address is already in use: another process listens there (pick another port, or 0 for any free one)",
  EACCES: "permission denied: ports below 1024 need privileges (use a higher port)",
  EADDRNOTAVAIL: "the address does not belong to this machine",
};

/**
 * Starts a server listening and resolves with the bound address; a failure becomes
 * E_LISTEN_FAILED naming what could not listen, where, and what to do.
 */
export function listenOn(server: Server, at: HostPort, what: string): Promise<HostPort> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      const hint = (error.code !== undefined ? HINTS[error.code] : undefined) ?? error.message;
      reject(new MeshwardError("E_LISTEN_FAILED", `${what} cannot listen on ${formatHostPort(at)}: ${hint}`, { cause: error }));
    };
    server.once("error", onError);
    server.listen(at.port, at.host, () => {
      server.off("error", onError);
      const bound = server.address() as AddressInfo;
      resolve({ host: bound.address, port: bound.port });
    });
  });
}
