import { createServer } from "node:net";
import type { AddressInfo, Server } from "node:net";
import { MeshwardError } from "../errors.ts";
import type { HostPort } from "./address.ts";
import { formatHostPort } from "./address.ts";

const HINTS: Readonly<Record<string, string>> = {
  EADDRINUSE: "the address is already in use: another process listens there (pick another port, or 0 for any free one)",
  EACCES: "permission denied: ports below 1024 need privileges (use a higher port)",
  EADDRNOTAVAIL: "the address does not belong to this machine",
  ENOTFOUND: "the host name does not resolve (give an IP address of this machine, or a name that resolves to one)",
  EAI_AGAIN: "the host name could not be resolved (DNS did not answer; give an IP address of this machine)",
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

/** Addresses held by reserveAddresses, until released. */
export interface Reservation {
  /** Frees every held address (right before the real listeners bind them). */
  release(): Promise<void>;
}

/**
 * Binds each fixed address with a placeholder server that closes whatever connects, and holds
 * it until `release()`. A daemon checks its addresses this way before it asks the CA for its
 * first certificate, since a port already in use must not cost a single-use token, and keeps
 * them while it waits for the CA. Two entries with the same address fail like a port in use
 * (E_LISTEN_FAILED naming the second). An entry with port 0 is bound too (its host name
 * resolved, its address proved to be this machine's) and released at once: any free port will
 * do later, but a host name that does not resolve or an address that is not on this host
 * (EADDRNOTAVAIL) fails the same way on a port-0 listen, and must fail before the token is spent.
 */
export async function reserveAddresses(entries: readonly { readonly at: HostPort; readonly what: string }[]): Promise<Reservation> {
  const held: Server[] = [];
  const release = async () => {
    await Promise.all(held.splice(0).map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  };
  try {
    for (const { at, what } of entries) {
      const server = createServer((socket) => socket.destroy());
      server.unref();
      await listenOn(server, at, what);
      if (at.port === 0) await new Promise<void>((resolve) => server.close(() => resolve()));
      else held.push(server);
    }
  } catch (error) {
    await release();
    throw error;
  }
  return { release };
}
