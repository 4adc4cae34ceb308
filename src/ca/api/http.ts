import { createHash, type X509Certificate } from "node:crypto";
import { statSync } from "node:fs";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Registry } from "prom-client";
import type { LoadedAnchors } from "../anchors.ts";
import type { PublishedCrl } from "../crl-publisher.ts";
import { parseCrl } from "../../pki/crl.ts";
import { certificatesFromPem, toPem } from "../../pki/pem.ts";

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
      // /v1/crl: the current issuer's CRL (as always); ?format=set: every published CRL, one per
      // issuer whose certificates may still be valid, with each issuer's chain (JSON; a CA older
      // than the set answers the current CRL's DER instead, which clients tell by its first byte);
      // ?issuer=<SHA-256 of the issuer certificate, hex>: that issuer's CRL, 404 when none is published.
      const crl = ctx.crl();
      if (crl === undefined) return send(res, 503, "text/plain; charset=utf-8", "the CRL is not built yet\n");
      const format = url.searchParams.get("format");
      if (format === "set") return send(res, 200, "application/json", crlSetDocument(crl, ctx.anchors()));
      let der = crl.der;
      const issuer = url.searchParams.get("issuer");
      if (issuer !== null) {
        const wanted = issuer.toLowerCase().replace(/:/g, "");
        const entry = crlSet(crl, ctx.anchors()).find((e) => e.issuerSha256 === wanted);
        if (entry === undefined) return send(res, 404, "text/plain; charset=utf-8", "no CRL is published for that issuer (no certificate it signed may still be valid, or it was retired with rotate-issuer --now)\n");
        der = entry.der;
      }
      if (format === "pem") return send(res, 200, "application/x-pem-file", der === crl.der ? crl.pem : toPem(der, "X509 CRL"));
      return send(res, 200, "application/pkix-crl", der);
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

interface CrlSetEntry {
  readonly der: Buffer;
  readonly current: boolean;
  /** SHA-256 (hex) of the issuer certificate that signed it; undefined when this replica does not hold that issuer (its anchors lag the store's). */
  readonly issuerSha256: string | undefined;
  readonly issuerChain: readonly Buffer[];
  /**
   * Signed by a root of the bundle (root-crl.ts): listed with no issuer_chain, so that clients older
   * than root CRLs (which verify a CRL only with their own issuers or the chain named) leave it out;
   * current ones verify it with the roots of their bundle.
   */
  readonly root: boolean;
}

const crlSets = new WeakMap<PublishedCrl, { anchors: LoadedAnchors; entries: readonly CrlSetEntry[]; document: string }>();

/** The published CRLs, each matched to the issuer (and its chain) whose signature it carries. */
function crlSet(crl: PublishedCrl, anchors: LoadedAnchors): readonly CrlSetEntry[] {
  return cachedSet(crl, anchors).entries;
}

function crlSetDocument(crl: PublishedCrl, anchors: LoadedAnchors): string {
  return cachedSet(crl, anchors).document;
}

function cachedSet(crl: PublishedCrl, anchors: LoadedAnchors): { entries: readonly CrlSetEntry[]; document: string } {
  const cached = crlSets.get(crl);
  if (cached !== undefined && cached.anchors === anchors) return cached;
  const issuers = [
    { certificate: anchors.issuer.certificate, chainPem: anchors.issuerChainPem },
    ...(anchors.previousIssuer !== undefined ? [{ certificate: anchors.previousIssuer.signer.certificate, chainPem: anchors.previousIssuer.chainPem }] : []),
  ];
  const verifies = (der: Buffer, certificate: X509Certificate) => {
    try {
      parseCrl(der, certificate);
      return true;
    } catch {
      return false;
    }
  };
  const entries = [crl.der, ...crl.others].map((der, index): CrlSetEntry => {
    const issuer = issuers.find((candidate) => verifies(der, candidate.certificate));
    const root = issuer === undefined ? anchors.roots.find((candidate) => verifies(der, candidate)) : undefined;
    const signer = issuer?.certificate ?? root;
    return {
      der,
      current: index === 0,
      issuerSha256: signer === undefined ? undefined : createHash("sha256").update(signer.raw).digest("hex"),
      issuerChain: issuer === undefined ? [] : certificatesFromPem(issuer.chainPem),
      root: root !== undefined,
    };
  });
  const document = `${JSON.stringify({
    crls: entries.map((e) => ({
      ...(e.issuerSha256 !== undefined ? { issuer_sha256: e.issuerSha256 } : {}),
      issuer_chain: e.issuerChain.map((d) => d.toString("base64")),
      current: e.current,
      ...(e.root ? { root: true } : {}),
      crl: e.der.toString("base64"),
    })),
  })}\n`;
  const value = { anchors, entries, document };
  crlSets.set(crl, value);
  return value;
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
