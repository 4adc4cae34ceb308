import { Agent, buildConnector } from "undici";
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
