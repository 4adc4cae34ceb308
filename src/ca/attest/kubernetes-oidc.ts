import { request } from "node:https";
import { createRemoteJWKSet, customFetch, type JWTVerifyGetKey } from "jose";
import { MeshwardError } from "../../errors.ts";
import { tlsAfterHandshakeFailure, watchHandshake } from "../../tls/after-handshake.ts";
import { failureCooldown } from "./failure-cooldown.ts";
import { SECURE_OPTIONS } from "../../tls/policy.ts";
import { INPUT_LIMITS, readInputBytes, readInputText } from "../../util/read-input.ts";

export interface KubernetesOidcConfig {
  readonly apiServer: string;
  readonly tokenFile: string;
  readonly caFile: string;
  readonly cacheMaxAge: number;
  readonly cooldown: number;
}

export interface KubernetesOidc {
  /** The signing keys from /openid/v1/jwks: cached, refetched when older than cacheMaxAge or on an unknown kid after the cooldown; after a failed fetch, none for the cooldown. */
  readonly getKey: JWTVerifyGetKey;
  /** The issuer from /.well-known/openid-configuration (fetched until it succeeds, at most once per cooldown). */
  issuer(): Promise<string>;
}

/** Largest discovery document or JWKS accepted. */
const MAX_BODY = 1 << 20;

/**
 * The cluster's service-account token signers, found through the API server's OIDC discovery
 * (KEP-1393: /.well-known/openid-configuration and /openid/v1/jwks), asked with the CA's own
 * token and verified against the cluster's CA, so no JWKS ConfigMap goes stale after the
 * cluster rotates its keys. jose's remote JWKS does the caching and the cooldown. The JWKS is
 * fetched from the API server itself, not the discovery document's jwks_uri, which often
 * names an address pods cannot reach.
 */
export function kubernetesOidc(config: KubernetesOidcConfig): KubernetesOidc {
  const base = config.apiServer.replace(/\/+$/, "");
  const jwksUrl = new URL(`${base}/openid/v1/jwks`);
  const getKey = createRemoteJWKSet(jwksUrl, {
    timeoutDuration: 5000,
    cooldownDuration: config.cooldown,
    cacheMaxAge: config.cacheMaxAge,
    [customFetch]: async (url: string, options: { signal: AbortSignal }) => {
      jwksFailure.check();
      let fetched: { status: number; body: string };
      try {
        fetched = await get(url, config, options.signal);
      } catch (error) {
        throw jwksFailure.record(error);
      }
      const { status, body } = fetched;
      if (status !== 200) {
        jwksFailure.record(new MeshwardError("E_JWKS_UNAVAILABLE", `${url} answered HTTP ${status}`));
      } else {
        try {
          JSON.parse(body);
        } catch {
          jwksFailure.record(new MeshwardError("E_JWKS_UNAVAILABLE", `${url} answered with no JSON`));
        }
      }
      return new Response(body, { status, headers: { "content-type": "application/json" } });
    },
  });
  const jwksFailure = failureCooldown(config.cooldown);
  const discoveryFailure = failureCooldown(config.cooldown);
  let issuer: Promise<string> | undefined;
  return {
    getKey,
    issuer() {
      try {
        discoveryFailure.check();
      } catch (error) {
        return Promise.reject(error);
      }
      issuer ??= discoverIssuer(`${base}/.well-known/openid-configuration`, config).catch((error: unknown) => {
        issuer = undefined; // try again at the next token after the cooldown
        throw discoveryFailure.record(error);
      });
      return issuer;
    },
  };
}

async function discoverIssuer(url: string, config: KubernetesOidcConfig): Promise<string> {
  const { status, body } = await get(url, config, AbortSignal.timeout(5000));
  if (status !== 200) throw new MeshwardError("E_JWKS_UNAVAILABLE", `the API server's OIDC discovery document answered HTTP ${status}`);
  let issuer: unknown;
  try {
    issuer = (JSON.parse(body) as { issuer?: unknown }).issuer;
  } catch {
    throw new MeshwardError("E_JWKS_UNAVAILABLE", "the API server's OIDC discovery document is not JSON");
  }
  if (typeof issuer !== "string" || issuer === "") throw new MeshwardError("E_JWKS_UNAVAILABLE", "the API server's OIDC discovery document names no issuer");
  return issuer;
}

/** GET with the CA's service-account token, TLS verified against the cluster CA; redirects are not followed. */
function get(url: string, config: KubernetesOidcConfig, signal: AbortSignal): Promise<{ status: number; body: string }> {
  let token: string;
  let ca: Buffer;
  try {
    token = readInputText(config.tokenFile, { what: "service-account token file", maxBytes: INPUT_LIMITS.secret, pipes: false }).trim();
    ca = readInputBytes(config.caFile, { what: "cluster CA file", maxBytes: INPUT_LIMITS.pem, pipes: false });
  } catch (error) {
    return Promise.reject(new MeshwardError("E_JWKS_UNAVAILABLE", `cannot read the CA's service-account token or the cluster CA: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`));
  }
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "GET", ca, secureOptions: SECURE_OPTIONS, signal, headers: { authorization: `Bearer ${token}`, accept: "application/json" } }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY) {
          req.destroy();
          reject(new MeshwardError("E_JWKS_UNAVAILABLE", `${url} sent more than ${MAX_BODY} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("socket", watchHandshake);
    req.on("error", (error: NodeJS.ErrnoException) => reject(new MeshwardError("E_JWKS_UNAVAILABLE", `cannot fetch ${url}: ${tlsAfterHandshakeFailure(error) ?? error.code ?? error.message}`)));
    req.end();
  });
}
