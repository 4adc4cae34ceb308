// The webhook's connection caps, apart from its server so that `meshward injector --help` can
// print them without loading it.

/** Connections open at once; the API server keeps a few, so this is generous. */
export const DEFAULT_WEBHOOK_MAX_CONNECTIONS = 1024;
/** Connections open at once from one source address (the API servers share a few addresses). */
export const DEFAULT_WEBHOOK_MAX_CONNECTIONS_PER_ADDRESS = 256;
