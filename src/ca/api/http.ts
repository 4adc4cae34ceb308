import { createHash } from "node:crypto";
import { statSync } from "node:fs";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Registry } from "prom-client";
import type { LoadedAnchors } from "../anchors.ts";
import type { PublishedCrl } from "../crl-publisher.ts";

export interface HttpApiContext {
  readonly anchors: () => LoadedAnchors;
  readonly crl: () => PublishedCrl | undefined;
  readonly registry: Registry;
  readonly readiness: () => { ready: boolean; checks: Record<string, { ok: boolean; detail: string }> };
  /** JWT-SVID keys and OIDC discovery, when the CA signs JWT-SVIDs. */
  readonly jwtSvid?: { discovery(): object; jwks(): Promise<object> };
}

type Request = IncomingMessage | Http2ServerRequest;
type Response = ServerResponse | Http2ServerResponse;

/** GET /v1/bundle, /v1/crl, /.well-known/openid-configuration, /.well-known/jwks.json, /healthz, /readyz, /metrics. */
export async function handleHttp(req: Request, res: Response, ctx: HttpApiContext): Promise<void> {
  let url: URL;
  try {
    url = new URL(req.url ?? "/", "https://ca.invalid");
  } catch {
    // A request target that is no URL is the client's error, not the CA's (it logged one before).
    return send(res, 400, "text/plain; charset=utf-8", "bad request target\n");
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    return send(res, 405, "text/plain; charset=utf-8", "method not allowed\n", { allow: "GET, HEAD" });
  }
  switch (url.pathname) {
    case "/v1/bundle": {
      const anchors = ctx.anchors();
      const wantsJson = url.searchParams.get("format") === "spiffe" || (req.headers.accept ?? "").includes("application/json");
      if (wantsJson) return send(res, 200, "application/json", JSON.stringify(spiffeBundle(anchors), null, 2));
      return send(res, 200, "application/x-pem-file", anchors.rootsPem);
    }
    case "/v1/crl": {
      const crl = ctx.crl();
      if (crl === undefined) return send(res, 503, "text/plain; charset=utf-8", "the CRL is not built yet\n");
      if (url.searchParams.get("format") === "pem") return send(res, 200, "application/x-pem-file", crl.pem);
      return send(res, 200, "application/pkix-crl", crl.der);
    }
    case "/.well-known/openid-configuration":
      if (ctx.jwtSvid === undefined) break;
      return send(res, 200, "application/json", `${JSON.stringify(ctx.jwtSvid.discovery(), null, 2)}\n`, { "cache-control": "max-age=300" });
    case "/.well-known/jwks.json":
      if (ctx.jwtSvid === undefined) break;
      return send(res, 200, "application/json", `${JSON.stringify(await ctx.jwtSvid.jwks(), null, 2)}\n`, { "cache-control": "max-age=60" });
    case "/healthz":
      return send(res, 200, "application/json", '{"status":"ok"}\n');
    case "/readyz": {
      const state = ctx.readiness();
      return send(res, state.ready ? 200 : 503, "application/json", `${JSON.stringify({ status: state.ready ? "ready" : "not-ready", checks: state.checks })}\n`);
    }
    case "/metrics":
      return send(res, 200, ctx.registry.contentType, await ctx.registry.metrics());
    default:
      break;
  }
  return send(res, 404, "text/plain; charset=utf-8", "not found\n");
}

function send(res: Response, status: number, contentType: string, body: string | Buffer, headers: Record<string, string> = {}): void {
  (res as ServerResponse).writeHead(status, { "content-type": contentType, "cache-control": "no-store", ...headers });
  (res as ServerResponse).end(body);
}

/** The SPIFFE bundle format (SPIFFE_Trust_Domain_and_Bundle.md): a JWK set with x509-svid keys. */
export function spiffeBundle(anchors: LoadedAnchors): object {
  let sequence = 1;
  try {
    // Several replicas: the shared state's version, the same on each (the directory's file never changes there).
    sequence = anchors.stateVersion !== undefined ? anchors.stateVersion + 1 : Math.floor(statSync(anchors.layout.bundle).mtimeMs / 1000);
  } catch {
    // keep 1
  }
  return {
    keys: anchors.roots.map((root) => ({
      use: "x509-svid",
      ...root.publicKey.export({ format: "jwk" }),
      x5c: [root.raw.toString("base64")],
    })),
    spiffe_sequence: sequence,
    spiffe_refresh_hint: 300,
    // meshward, after `rotate-root activate --reissue` until retire: workloads whose certificate
    // does not chain to the root named here (SHA-256 of its DER) renew now. Identities from before
    // that field compare the time their certificate arrived with meshward_reissue_before instead.
    ...(anchors.state.reissueBefore !== undefined && anchors.state.rootRotation?.phase === "activated"
      ? {
          meshward_reissue_before: Math.floor(Date.parse(anchors.state.reissueBefore) / 1000),
          meshward_reissue_root_sha256: createHash("sha256").update(anchors.issuerRoot.raw).digest("hex"),
        }
      : {}),
  };
}
