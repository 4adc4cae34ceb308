import { request } from "node:https";
import type { Logger } from "pino";
import { describeError, MeshwardError } from "../errors.ts";
import type { IdentitySource } from "../identity/source.ts";
import { tlsAfterHandshakeFailure, watchHandshake } from "../tls/after-handshake.ts";
import { SECURE_OPTIONS } from "../tls/policy.ts";
import type { CaBundleSyncResult } from "./metrics.ts";
import { INPUT_LIMITS, readInputBytes, readInputText } from "../util/read-input.ts";

export interface KubeApiConfig {
  /** e.g. https://kubernetes.default.svc */
  readonly apiServer: string;
  /** The injector's own service-account token (re-read at each request: the kubelet rotates it). */
  readonly tokenFile: string;
  /** PEM roots the API server's certificate must chain to. */
  readonly caFile: string;
}

export interface CaBundleSyncOptions {
  readonly api: KubeApiConfig;
  /** The MutatingWebhookConfiguration whose webhooks call this injector. */
  readonly webhookConfiguration: string;
  readonly identity: IdentitySource;
  readonly logger: Logger;
  /** How often the configuration is checked even without a bundle change (someone may have edited it). */
  readonly intervalMs?: number;
  /** Told of each pass: patched, unchanged, or error (for meshward_injector_ca_bundle_syncs_total). */
  readonly onResult?: (result: CaBundleSyncResult) => void;
}

const MAX_BODY = 4 * 1024 * 1024;
const PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/";

/**
 * Keeps `clientConfig.caBundle` of the injector's MutatingWebhookConfiguration equal to the
 * CA's current trust bundle, so the API server keeps verifying the injector's certificate
 * through a root rotation (the serving certificate moves to the new root at `activate`; the
 * bundle holds both roots from `prepare`). Dapr's injector patches its own configuration the
 * same way (dapr/dapr pkg/injector/service/patcher). Needs `get` and `patch` on that one
 * object. Returns a stop function.
 */
export function syncWebhookCaBundle(options: CaBundleSyncOptions): { stop(): void; sync(): Promise<boolean> } {
  const { logger } = options;
  let running: Promise<boolean> | undefined;
  let stopped = false;
  const sync = (): Promise<boolean> => {
    running ??= reconcile(options)
      .then((patched) => {
        options.onResult?.(patched ? "patched" : "unchanged");
        return patched;
      })
      .catch((error: unknown) => {
        logger.warn({ event: "webhook-ca-bundle-failed", err: describeError(error) }, "cannot update the webhook's caBundle; retrying");
        options.onResult?.("error");
        return false;
      })
      .finally(() => (running = undefined));
    return running;
  };
  const unsubscribe = options.identity.subscribe((event) => {
    if (!stopped && (event.type === "bundle-updated" || event.type === "rotated")) void sync();
  });
  const timer = setInterval(() => void sync(), options.intervalMs ?? 60_000);
  timer.unref();
  void sync();
  return {
    stop() {
      stopped = true;
      unsubscribe();
      clearInterval(timer);
    },
    sync,
  };
}

/** One pass: read the configuration, patch the caBundles that differ; true when it patched. */
async function reconcile(options: CaBundleSyncOptions): Promise<boolean> {
  const current = options.identity.current();
  if (current === undefined) return false;
  const want = Buffer.from(current.bundle.rootsPem).toString("base64");
  const path = `${PATH}${encodeURIComponent(options.webhookConfiguration)}`;
  const got = await kubeRequest(options.api, "GET", path);
  if (got.status !== 200) throw new MeshwardError("E_KUBE_API", `GET ${path}: HTTP ${got.status}`);
  const config = JSON.parse(got.body) as { metadata?: { resourceVersion?: string }; webhooks?: { clientConfig?: { caBundle?: string } }[] };
  const webhooks = config.webhooks ?? [];
  const ops: unknown[] = [];
  // The resourceVersion test makes the patch fail instead of overwriting a concurrent edit.
  if (config.metadata?.resourceVersion !== undefined) ops.push({ op: "test", path: "/metadata/resourceVersion", value: config.metadata.resourceVersion });
  webhooks.forEach((webhook, index) => {
    if (webhook.clientConfig?.caBundle === want) return;
    ops.push({ op: "add", path: `/webhooks/${index}/clientConfig/caBundle`, value: want });
  });
  if (ops.length <= 1) return false;
  const patched = await kubeRequest(options.api, "PATCH", path, JSON.stringify(ops), "application/json-patch+json");
  if (patched.status !== 200) throw new MeshwardError("E_KUBE_API", `PATCH ${path}: HTTP ${patched.status}`);
  options.logger.info({ event: "webhook-ca-bundle-updated", webhooks: ops.length - 1 }, "webhook caBundle set to the CA's current bundle");
  return true;
}

function kubeRequest(api: KubeApiConfig, method: string, path: string, body?: string, contentType?: string): Promise<{ status: number; body: string }> {
  let token: string;
  let ca: Buffer;
  try {
    token = readInputText(api.tokenFile, { what: "service-account token file", maxBytes: INPUT_LIMITS.secret, pipes: false }).trim();
    ca = readInputBytes(api.caFile, { what: "cluster CA file", maxBytes: INPUT_LIMITS.pem, pipes: false });
  } catch (error) {
    return Promise.reject(new MeshwardError("E_KUBE_API", `cannot read the service-account token or the cluster CA: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`));
  }
  const url = new URL(path, api.apiServer);
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        ca,
        secureOptions: SECURE_OPTIONS,
        timeout: 10_000,
        headers: { authorization: `Bearer ${token}`, accept: "application/json", ...(contentType ? { "content-type": contentType } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_BODY) return void req.destroy(new Error(`more than ${MAX_BODY} bytes`));
          chunks.push(chunk);
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      },
    );
    req.on("socket", watchHandshake);
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", (error: NodeJS.ErrnoException) => reject(new MeshwardError("E_KUBE_API", `${method} ${url.href}: ${tlsAfterHandshakeFailure(error) ?? error.code ?? error.message}`)));
    req.end(body);
  });
}
