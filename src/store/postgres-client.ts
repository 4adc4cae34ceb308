import type { Socket } from "node:net";
import type { ConnectionOptions } from "node:tls";
import pg from "pg";
import { watchHandshake } from "../tls/after-handshake.ts";
import { SECURE_OPTIONS } from "../tls/policy.ts";

/** The part of pg's Connection (pg/lib/connection.js) that holds its TLS options and socket. */
interface PgConnection {
  ssl: boolean | ConnectionOptions;
  stream: Socket;
  once(event: "sslconnect", listener: () => void): unknown;
}

/**
 * pg's Client whose TLS refuses a server-initiated renegotiation (see tls/policy.ts). pg resolves
 * its TLS options itself, from the `ssl` option, the connection string (sslmode, sslrootcert,
 * sslcert, sslkey, ssl, through pg-connection-string; TLS parameters in the string win over an
 * `ssl` option) or PGSSLMODE; this adds SSL_OP_NO_RENEGOTIATION to what it resolved and changes
 * nothing else: no TLS stays no TLS (sslmode=disable), and verify-full, verify-ca, require and
 * no-verify keep their checks. The TLS socket's later errors are marked so that a refused renegotiation can be
 * named (tls/after-handshake.ts).
 */
export class RenegotiationRefusingClient extends pg.Client {
  constructor(config?: string | pg.ClientConfig) {
    super(config);
    const connection = (this as unknown as { connection: PgConnection }).connection;
    connection.ssl = withSecureOptions(connection.ssl);
    connection.once("sslconnect", () => watchHandshake(connection.stream));
  }
}

function withSecureOptions(ssl: boolean | ConnectionOptions): boolean | ConnectionOptions {
  if (ssl === true) return { secureOptions: SECURE_OPTIONS };
  if (typeof ssl !== "object" || ssl === null) return ssl;
  // A copy: an `ssl` object given by the caller is shared by every client of a pool. pg hides
  // `key` from enumeration (and so from logs); the copy keeps it hidden.
  const copy: ConnectionOptions = { ...ssl, secureOptions: (ssl.secureOptions ?? 0) | SECURE_OPTIONS };
  if ("key" in ssl) Object.defineProperty(copy, "key", { value: ssl.key, enumerable: false, writable: true, configurable: true });
  return copy;
}
