/**
 * What each sidecar config field means: the schema's `.describe()` text (config/sidecar.ts,
 * from which docs/configuration.md is generated) and the help of the matching `meshward
 * sidecar` flag. Plain strings, so that `meshward sidecar --help` prints them without loading
 * zod and the schema.
 */
export const SIDECAR_FIELD_HELP = {
  appId: "This app's id; the SVID is spiffe://<trustDomain>/ns/<namespace>/<appId>.",
  namespace: "This app's namespace.",
  trustDomain: "Trust domain; read from the bundle's root when omitted.",
  ca: "Address of the meshward CA (HOST:PORT), or of its replicas (HOST:PORT,HOST:PORT…; a DNS name may resolve to several).",
  bundle: "Bootstrap trust bundle file (PEM) the CA's certificate must chain to; when omitted, the PEM in MESHWARD_TRUST_ANCHORS (what the Kubernetes injector sets).",
  token: "Join token or JWT for the first certificate (prefer tokenFile or MESHWARD_TOKEN; a token here is a secret in a file). Given as the --token flag instead, it is readable by every local user in the process list, and the sidecar logs a warning.",
  tokenFile: "File holding the token, re-read at each use (Kubernetes projected tokens rotate).",
  out: "Directory where the sidecar keeps its identity (cert.pem, key.pem 0600, bundle.pem; created 0700, rewritten on every rotation). After a restart a valid certificate found there renews the identity, so a spent single-use token is not needed again.",
  dnsNames: "DNS names to ask for in the SVID (the token must allow them), so non-SPIFFE callers such as curl can verify the inbound port by host name.",
  validator: "How the CA checks the token: JOIN_TOKEN, JWKS, KUBERNETES or INSECURE (join-token, jwks, kubernetes, insecure are accepted too).",
  inbound: "Where the sidecar accepts mTLS from other sidecars (HOST:PORT, port 0 picks one); without app there is no inbound listener (default: 0.0.0.0:3501 when app is set)",
  app: "The app's own port on loopback (HOST:PORT) that inbound traffic is forwarded to. Leave it out for an app that only calls others (a job, a CLI): no inbound listener, as Dapr runs a sidecar without an app port.",
  outbound: "Loopback HOST:PORT where the app sends HTTP/gRPC for other apps (routed by dapr-app-id header or Host).",
  outboundAllowedHosts: "Host names the outbound port answers besides 127.0.0.1, ::1, localhost and the app id the request is routed to: exact names, *.example.com, or * for any. Other Host values get 421 E_OUTBOUND_HOST, so a web page that rebinds its DNS name to 127.0.0.1 cannot call other apps as this workload; add names here only for callers that keep a forwarded Host (a gateway).",
  peers: "Static peer table: app id (or appId.namespace) → HOST:PORT of that app's sidecar inbound port.",
  peerTemplate: "DNS template for peers not in the table, e.g. {appId}.{namespace}.svc.cluster.local:{port}.",
  peerPort: "The {port} value in peerTemplate.",
  tcpUpstreams: "TCP outbound: app id → local HOST:PORT; bytes sent there are carried over mTLS to that app's sidecar.",
  policy: "Access policy file: a Dapr `kind: Configuration` YAML with spec.accessControl; watched and reloaded.",
  mode: "strict: only mTLS on the inbound port; permissive: plaintext too (counted and logged), for migrations.",
  protocol: "http: HTTP/1.1, HTTP/2 and gRPC with per-request policy and XFCC; tcp: bytes piped, policy decided on connect.",
  escapedSlashes: "Paths with %2F or %5C: reject (400), unescape (decode to '/' before the policy judges and the app receives the path), or keep (judged and forwarded as they are; only for apps that never decode them). Like Envoy's path_with_escaped_slashes_action.",
  headersWithUnderscores:
    "Request fields whose name holds '_' (CGI and WSGI servers read '_' as '-', gunicorn reads SCRIPT_NAME as the path prefix to cut): reject (400 E_AMBIGUOUS_REQUEST), drop (removed before forwarding, counted in meshward_sidecar_dropped_fields_total and logged) or allow (forwarded). gRPC calls over HTTP/2 keep their metadata keys with '_' whatever this says. Fields read as the request's method or target (X-HTTP-Method-Override, X-Original-URL, X-Rewrite-URL, SCRIPT_NAME, PATH_INFO, …) are refused in every spelling whatever this says. Like Envoy's headers_with_underscores_action.",
  status: "Serve /metrics, /healthz, /readyz and the status page (/) on this HOST:PORT.",
  statusTokenFile: "File holding the status page token (at least 16 characters; the file readable by its owner only, mode 0600, else E_KEY_PERMISSIONS); required when status is not on loopback (or MESHWARD_STATUS_TOKEN).",
  statusPage: "Serve the status page (/ and /status.json) on the status port. When false only /healthz, /readyz and /metrics are served, and no status token is needed off loopback (Kubernetes probes).",
  limits: "Connection and request limits.",
  egress: "TLS origination: plaintext loopback ports turned into (m)TLS to a backend.",
  policyReloadInterval: "How often the policy file is checked for changes.",
  bundleRefreshInterval: "How often the trust bundle and CRL are fetched from the CA (new roots and revocations reach open servers and clients within this).",
  logLevel: "Log level.",
  logFormat: "Log format.",
} as const;

/** The fields of `limits`. */
export const SIDECAR_LIMIT_HELP = {
  maxHeaderBytes: "Largest request header block accepted on either listener; larger requests get 431.",
  headersTimeout: "Time a client has to send complete request headers (slowloris guard); then 408 and close.",
  handshakeTimeout: "Time a client has to finish the TLS handshake (and to send its first byte).",
  idleTimeout: "Close a connection with no traffic for this long: HTTP/1.1 keep-alive, HTTP/2 (GOAWAY, open streams finish) and TCP mode.",
  upgradeIdleTimeout: "Close an upgraded connection (a WebSocket, once the app answered 101) with no byte either way for this long, both sides, on either listener (Envoy's stream_idle_timeout); a WebSocket that may be silent longer needs pings more often than this.",
  maxConnectionAge: "Close inbound connections older than this (HTTP/2 GOAWAY, HTTP/1 Connection: close, a TCP tunnel ended) so revocations and root retirement reach them; a connection also ends when its caller's certificate expires. The outbound's TCP tunnels and WebSockets to peers, and egress connections to their backends, are ended at this age too.",
  drainTimeout: "On SIGTERM, and after an inbound connection is retired (age cap, caller certificate expiry, a root leaving the bundle): how long in-flight requests, WebSockets and HTTP/2 streams may take before the connection is closed.",
  maxConcurrentStreams: "HTTP/2 streams one connection may have open at once on either listener (SETTINGS_MAX_CONCURRENT_STREAMS); each non-gRPC stream takes a connection to the app.",
  maxConnections: "Open connections each listener (inbound, outbound, each TCP upstream and egress port) accepts; past it a new connection is closed at once, before any TLS or HTTP, and counted. Also the inbound's connections to the app (a request past it waits up to idleTimeout, then 503 E_APP_BUSY). The default fits the injector's 256 Mi memory limit.",
  maxConnectionsPerAddress: "Inbound connections open at once from one source IP address, of which half (at least 1) may still be in their TLS handshake; past either a new connection is reset on accept, before any TLS. Also the connections to the app held at once for one address (its HTTP/1 requests and HTTP/2 streams to an HTTP/1 app together): another HTTP/2 stream waits for one of them up to idleTimeout, then 503 E_APP_BUSY. Callers behind one NAT share one address.",
  maxHandshakeBytes:
    "Off unless set (absent or 0: no counting stream, Node's native TLS path); at least 4096 turns it on. Bytes a caller may send on the inbound listener before its TLS handshake completes (ClientHello, client certificate chain, Finished); a connection over it is reset before OpenSSL has the whole chain, so nothing in it is verified, and counted in meshward_sidecar_refused_total{reason=\"handshake_too_large\"}. Node cannot bound the client chain OpenSSL verifies on the event loop (no max_cert_list, no verify depth): a made-up chain of RSA links with huge exponents costs ~20 ms per link. A meshward or Dapr caller sends ~1.5 KB, an RSA-4096 leaf with two intermediates ~5 KB; 16384 is the CA's value. On, every inbound connection pays for it for its whole life (~x1.3 CPU per handshake and per small request, ~x1.8 per MiB received, +13 KiB memory, not in the memory bound), and it bounds each stall (~160 ms per handshake at 16 KiB), not the CPU per byte an attacker can make it spend; see docs/threat-model.md (Resource exhaustion).",
  statusMaxConnections: "Connections the status port (--status: /healthz, /readyz, /metrics, the status page) keeps open at once, from everyone; past it a new connection is reset on accept and counted in meshward_status_connections_refused_total. Probes and a Prometheus scrape need a handful. A connection has 5 s to send a complete request head, then it is closed.",
  statusMaxConnectionsPerAddress: "Status-port connections open at once from one source IP address (the kubelet's probes, Prometheus and a browser each count under their own); past it a new connection is reset on accept.",
  maxHeldRequestBytes: "Request bytes the inbound holds for all callers together: HTTP/2 header blocks of open streams and request bodies held before the app takes them (HTTP/2 streams waiting for a connection to the app or for a slow app to read, HTTP/1.1 bodies waiting for a connection). One source address may hold its share (this × maxConnectionsPerAddress / maxConnections). Each HTTP/2 stream's flow-control window is sized so that maxConcurrentStreams backed-up streams fit that share (share / maxConcurrentStreams in 16 KiB steps, 16 KiB to 64 KiB; 16 KiB at the defaults): a slow app slows its callers instead of refusing them. Past either a request gets 503 E_SIDECAR_BUSY (gRPC RESOURCE_EXHAUSTED) instead of being held.",
} as const;
