import { Agent, request as httpsRequest } from "node:https";
import { isMeshwardError, MeshwardError } from "../../errors.ts";
import { tlsAfterHandshakeFailure, watchHandshake } from "../../tls/after-handshake.ts";
import { SECURE_OPTIONS } from "../../tls/policy.ts";
import { kubeApiBreaker, type KubeApiBreakerEvent } from "./kube-api-breaker.ts";
import { INPUT_LIMITS, readInputText } from "../../util/read-input.ts";

/** The two Kubernetes API calls the KUBERNETES validator makes; an interface so tests can record them. */
export interface KubernetesApi {
  /** POST /apis/authentication.k8s.io/v1/tokenreviews; returns the TokenReview's status. */
  reviewToken(token: string, audiences: readonly string[]): Promise<TokenReviewStatus>;
  /** GET /api/v1/namespaces/{namespace}/pods/{name}; undefined when the pod does not exist. */
  getPod(namespace: string, name: string): Promise<PodObject | undefined>;
}

export interface TokenReviewStatus {
  readonly authenticated?: boolean;
  readonly error?: string;
  readonly audiences?: readonly string[];
  readonly user?: { readonly username?: string; readonly uid?: string; readonly extra?: Readonly<Record<string, readonly string[]>> };
}

export interface PodObject {
  readonly metadata?: { readonly name?: string; readonly namespace?: string; readonly uid?: string; readonly annotations?: Readonly<Record<string, string>> };
  readonly spec?: { readonly serviceAccountName?: string };
}

export interface KubernetesApiOptions extends KubeApiConnectionOptions {
  /**
   * The circuit breaker in front of the calls (kube-api-breaker.ts): after this many failed calls
   * in a row no call is sent for a cooldown (KUBE_API_FAILURES_TO_OPEN and its cooldowns by
   * default; tests pass their own, and a clock).
   */
  readonly breaker?: { readonly failuresToOpen?: number; readonly cooldownMs?: number; readonly maxCooldownMs?: number; readonly now?: () => number };
  /** Told when the breaker opens and closes (the CA logs it and sets meshward_ca_kubernetes_api_circuit_open). */
  readonly onBreakerChange?: (event: KubeApiBreakerEvent) => void;
}

/**
 * Connections one client keeps to the API server at most. Calls share them (keep-alive) and wait
 * when all are busy, so however many requests reach the CA, it never holds more than this many
 * connections to the API server, nor does a TLS handshake per call.
 */
export const KUBE_API_MAX_SOCKETS = 8;

const MAX_RESPONSE_BYTES = 1 << 20;
const SEGMENT = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** In a pod: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT. */
export function inClusterApiServer(env: NodeJS.ProcessEnv = process.env): string {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT ?? "443";
  if (host === undefined || host === "") {
    throw new MeshwardError("E_CONFIG_INVALID", "kubernetes.apiServer is not set and KUBERNETES_SERVICE_HOST is empty (not running in a pod); name the API server");
  }
  return `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** Where and how to reach the API server: the part of KubernetesApiOptions every client of it shares. */
export interface KubeApiConnectionOptions {
  /** https://host:port of the API server. */
  readonly apiServer: string;
  /** The CA's own service-account token (read on every call: projected tokens rotate). */
  readonly tokenFile: string;
  /** PEM bundle the API server's certificate must chain to. */
  readonly caFile: string;
  /**
   * How long a call may wait for one of the connections, and then for the API server's whole
   * answer, connecting included (default 5 s each).
   */
  readonly timeoutMs?: number;
  /** Most connections open to the API server at once (default KUBE_API_MAX_SOCKETS); further calls wait for one. */
  readonly maxSockets?: number;
}

/**
 * The connection handling of the CA's Kubernetes API clients (the TokenReview/pod client below,
 * and the dapr-trust-bundle writer, src/ca/dapr-trust-bundle-sync.ts): one keep-alive agent with
 * a bounded number of sockets, the token and CA file re-read on every call, TLS 1.2+ without
 * renegotiation, a bounded JSON answer, and a timeout on both the wait for a socket and the answer.
 */
export interface KubeApiConnection {
  /** One call; resolves with the HTTP status and the parsed JSON body, rejects (E_KUBERNETES_UNAVAILABLE) when no JSON answer came. */
  call(method: "GET" | "POST" | "PUT", path: string, body?: object): Promise<{ status: number; json: unknown }>;
  /** Whether a failure of call() never reached the API server (credentials unreadable, no free connection in time). */
  notSent(error: unknown): boolean;
  /** Closes the idle connections and those that later become idle. */
  close(): void;
}

export function kubeApiConnection(options: KubeApiConnectionOptions): KubeApiConnection {
  const base = new URL(options.apiServer);
  if (base.protocol !== "https:") throw new MeshwardError("E_CONFIG_INVALID", `kubernetes.apiServer must be an https:// URL, got ${options.apiServer}`);
  const maxSockets = options.maxSockets ?? KUBE_API_MAX_SOCKETS;
  const timeoutMs = options.timeoutMs ?? 5000;
  // One agent per client: maxTotalSockets also bounds the sockets of a rotated caFile (the agent
  // pools by TLS options); idle sockets close after a minute and never keep the process alive.
  // Calls that never reached the API server (credentials unreadable, no free connection in time):
  // the breaker counts them neither as its failures nor as its successes.
  const notSent = new WeakSet<object>();
  const agent = new Agent({ keepAlive: true, maxSockets, maxTotalSockets: maxSockets, maxFreeSockets: maxSockets, timeout: 60_000, scheduling: "lifo" });
  const call = (method: "GET" | "POST" | "PUT", path: string, body?: object): Promise<{ status: number; json: unknown }> =>
    new Promise((resolve, reject) => {
      let token: string;
      let ca: string;
      try {
        token = readInputText(options.tokenFile, { what: "service-account token file", maxBytes: INPUT_LIMITS.secret, pipes: false }).trim();
        ca = readInputText(options.caFile, { what: "cluster CA file", maxBytes: INPUT_LIMITS.pem, pipes: false });
      } catch (error) {
        const failure = new MeshwardError("E_KUBERNETES_UNAVAILABLE", `cannot read the CA's Kubernetes credentials: ${(error as Error).message}`);
        notSent.add(failure);
        reject(failure);
        return;
      }
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = httpsRequest(
        {
          host: base.hostname.replace(/^\[|\]$/g, ""),
          port: base.port || 443,
          path,
          method,
          ca,
          minVersion: "TLSv1.2",
          secureOptions: SECURE_OPTIONS,
          agent,
          headers: { authorization: `Bearer ${token}`, accept: "application/json", ...(payload ? { "content-type": "application/json", "content-length": String(payload.length) } : {}) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_RESPONSE_BYTES) {
              req.destroy(new Error(`the response is larger than ${MAX_RESPONSE_BYTES} bytes`));
              return;
            }
            chunks.push(chunk);
          });
          res.on("end", () => {
            clearTimeout(answer);
            try {
              resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString("utf8")) });
            } catch {
              reject(new MeshwardError("E_KUBERNETES_UNAVAILABLE", `the Kubernetes API answered ${method} ${path} with ${res.statusCode} and no JSON`, { details: { status: res.statusCode ?? 0 } }));
            }
          });
          res.on("error", (error) => fail(error, true));
        },
      );
      const fail = (error: Error, sent: boolean) => {
        const failure = error instanceof MeshwardError ? error : new MeshwardError("E_KUBERNETES_UNAVAILABLE", `the Kubernetes API at ${options.apiServer} failed: ${tlsAfterHandshakeFailure(error) ?? error.message}`);
        if (!sent) notSent.add(failure);
        reject(failure);
        return failure;
      };
      // A call waits for a free connection at most timeoutMs: behind a flood of reviews (at most
      // maxSockets at a time) it fails and the caller retries, rather than queueing without end.
      // It is refused here, at once: Node's agent reports a request destroyed in its queue only
      // when it hands it a connection, that is once one of the busy ones frees up or closes, which
      // an API server slow to answer may put off without end.
      const queued = setTimeout(() => req.destroy(fail(new Error(`all ${maxSockets} connections to it were busy for ${timeoutMs} ms`), false)), timeoutMs);
      // Then the whole answer must arrive within timeoutMs of the call getting its connection
      // (connecting included). This was the socket's idle timeout, which let an answer that
      // trickles in (never idle that long) hold the call and its connection without end.
      let answer: NodeJS.Timeout | undefined;
      req.once("socket", () => {
        clearTimeout(queued);
        answer = setTimeout(() => req.destroy(new Error(`no complete answer within ${timeoutMs} ms`)), timeoutMs);
      });
      req.once("close", () => {
        clearTimeout(queued);
        clearTimeout(answer);
      });
      req.on("socket", watchHandshake);
      req.on("error", (error) => fail(error, true));
      req.end(payload);
    });
  return {
    call,
    notSent: (error) => typeof error === "object" && error !== null && notSent.has(error),
    close: () => agent.destroy(),
  };
}

/** node:https client for the two calls, verified against caFile, authenticated with tokenFile. */
export function kubernetesApi(options: KubernetesApiOptions): KubernetesApi {
  const connection = kubeApiConnection(options);
  const call = connection.call;
  const breaker = kubeApiBreaker({ apiServer: options.apiServer, ...options.breaker, onChange: options.onBreakerChange });
  /** Failures that were answers about the one call (answeredAboutCall): the breaker counts them neither way. */
  const aboutOneCall = new WeakSet<object>();
  const uncounted = (error: unknown) => connection.notSent(error) || (typeof error === "object" && error !== null && aboutOneCall.has(error));
  return {
    reviewToken: (token, audiences) => breaker.run(() => reviewToken(token, audiences), uncounted),
    // A name no pod can have is answered without a call (and tells the breaker nothing).
    getPod: (namespace, name) =>
      !SEGMENT.test(namespace) || !SEGMENT.test(name) ? Promise.resolve(undefined) : breaker.run(() => getPod(namespace, name), uncounted),
  };

  /** call(), with an answer that was not JSON classified by its status like one that was. */
  async function send(what: KubeApiCall, method: "GET" | "POST", path: string, body?: object): Promise<{ status: number; json: unknown }> {
    try {
      return await call(method, path, body);
    } catch (error) {
      const status = isMeshwardError(error) ? error.details?.status : undefined;
      if (typeof status === "number" && answeredAboutCall(what, status)) throw failure(what, status, undefined);
      throw error;
    }
  }

  async function reviewToken(token: string, audiences: readonly string[]): Promise<TokenReviewStatus> {
    const { status, json } = await send("TokenReview", "POST", "/apis/authentication.k8s.io/v1/tokenreviews", {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenReview",
      spec: { token, audiences },
    });
    if (status !== 200 && status !== 201) throw failure("TokenReview", status, json);
    return ((json as { status?: TokenReviewStatus }).status ?? {}) as TokenReviewStatus;
  }

  async function getPod(namespace: string, name: string): Promise<PodObject | undefined> {
    const { status, json } = await send("pod read", "GET", `/api/v1/namespaces/${namespace}/pods/${name}`);
    if (status === 404) return undefined;
    if (status !== 200) throw failure("pod read", status, json);
    return json as PodObject;
  }

  /**
   * The error for an answer `status`. A TokenReview refused for its body is the token's doing
   * (E_TOKEN_INVALID, as a review that does not authenticate it: it keeps the caller's
   * signRateLimit share); the rest are the CA's (E_KUBERNETES_UNAVAILABLE: the share is given back).
   */
  function failure(what: KubeApiCall, status: number, json: unknown): MeshwardError {
    const error =
      what === "TokenReview" && answeredAboutCall(what, status)
        ? new MeshwardError("E_TOKEN_INVALID", `the Kubernetes API server refused the TokenReview of this token with HTTP ${status}${apiMessage(json)}`)
        : apiError(what, status, json);
    if (answeredAboutCall(what, status)) aboutOneCall.add(error);
    return error;
  }
}

type KubeApiCall = "TokenReview" | "pod read";

/**
 * Whether the API server's answer `status` (not 2xx) is about this one call rather than a failure
 * of the API server, or of the CA's standing with it, that every call meets: such an answer counts
 * neither as a failure of the circuit breaker nor as a success. A caller chooses what the CA sends
 * (its token, and through the token the pod's namespace and name), so if such answers counted, a
 * caller whose token the API server answers with a 4xx could open the breaker, five in a row, and
 * have every KUBERNETES attestation refused for everyone. These are:
 * - TokenReview: 400, 413, 422: the request's body (the token) was refused. The Kubernetes API
 *   server itself answers every non-empty token 201 with status.authenticated false or
 *   status.error, and 400 only for an empty token or a namespaced request
 *   (kubernetes pkg/registry/authentication/tokenreview/storage.go), which the validator never
 *   sends (kubernetes.ts refuses empty, oversized and non-JWT tokens first); a proxy or webhook in
 *   front of it may refuse more.
 * - pod read: 400 and 403 (RBAC that lets the CA read pods in some namespaces only: the token names
 *   the namespace); 404 is an answer (no such pod).
 * Everything else counts: 5xx, 429 (API Priority and Fairness shedding load: the breaker's cue to
 * send less), 408, and 401/403/404/405 on the cluster-scoped TokenReview and 401 on a pod read (the
 * CA's credentials, RBAC or the API's version: the same for every call), as do no answer at all
 * and timeouts. Dapr Sentry has no breaker: a failed TokenReview fails that one request
 * (dapr/dapr pkg/sentry/server/validator/kubernetes/kubernetes.go, executeTokenReview).
 */
export function answeredAboutCall(what: KubeApiCall, status: number): boolean {
  return what === "TokenReview" ? status === 400 || status === 413 || status === 422 : status === 400 || status === 403;
}

function apiError(what: KubeApiCall, status: number, json: unknown): MeshwardError {
  const hint = status === 401 || status === 403 ? " (check the CA's RBAC: create tokenreviews, get pods; see docs/migrating-from-dapr-sentry.md)" : "";
  return new MeshwardError("E_KUBERNETES_UNAVAILABLE", `the Kubernetes ${what} failed with HTTP ${status}${apiMessage(json)}${hint}`);
}

/** ": <the Status object's message>" (at most 300 characters), or "" without one. */
function apiMessage(json: unknown): string {
  const message = typeof (json as { message?: unknown } | undefined)?.message === "string" ? (json as { message: string }).message.slice(0, 300) : "";
  return message ? `: ${message}` : "";
}
