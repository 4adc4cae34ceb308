import { Agent, buildConnector } from "undici";

// undici's fetch, for a caller that imports this module lazily (src/cli/actions/status.ts): a
// dynamic import("undici") itself, bundled (scripts/bundle.ts), would give a CommonJS package's
// namespace with `default` alone, no named exports.
export { fetch as undiciFetch } from "undici";
import { markHandshakeCompleted } from "./after-handshake.ts";
import { SECURE_OPTIONS } from "./policy.ts";

let shared: Agent | undefined;

/**
 * An undici dispatcher whose TLS connections refuse renegotiation (the global fetch takes no TLS
 * options) and whose sockets mark their errors as coming after the handshake (undici hands a
 * socket over once it is connected, so at 'secureConnect'). Trust is Node's default store, which
 * NODE_EXTRA_CA_CERTS extends. One per process, made on first use.
 */
export function renegotiationRefusingAgent(): Agent {
  if (shared === undefined) {
    const connector = buildConnector({ secureOptions: SECURE_OPTIONS });
    shared = new Agent({
      connect: (options, callback) =>
        connector(options, (...args) => {
          if (args[0] === null) markHandshakeCompleted(args[1]);
          callback(...args);
        }),
    });
  }
  return shared;
}
