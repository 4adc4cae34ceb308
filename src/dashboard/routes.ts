import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import type { IncomingHttpHeaders } from "node:http";
import { isIP } from "node:net";
import { describeError, MeshwardError } from "../errors.ts";
import type { StatusProvider } from "./feed.ts";

/** The parts of a request the status routes read; node:http and node:http2 requests both fit. */
export interface StatusRequest {
  readonly url?: string | undefined;
  readonly method?: string | undefined;
  readonly headers: IncomingHttpHeaders;
}

/** The parts of a response the status routes use; node:http and node:http2 responses both fit. */
export interface StatusResponse {
  writeHead(status: number, headers: Record<string, string>): unknown;
  end(): unknown;
  end(body: string): unknown;
}

export type StatusHandler = (req: StatusRequest, res: StatusResponse) => Promise<void>;

export interface StatusRoutesOptions {
  /**
   * When set, every request needs `Authorization: Bearer <token>` or `?token=<token>`, else 401.
   * Components require one whenever the status port is not bound to loopback (statusTokenRequired).
   */
  readonly token?: string;
}

export interface StatusRoutes {
  /** Exact-path routes for createOpsServer's extraRoutes: "/" (the page) and "/status.json" (the feed). */
  readonly routes: Readonly<Record<string, StatusHandler>>;
  /**
   * One handler for both paths (404 for any other), for servers with their own routing (the CA).
   * Such a server must apply the DNS rebinding guard itself (checkHostHeader in
   * telemetry/host-check.ts), as createOpsServer does, when it listens on loopback.
   */
  readonly handler: StatusHandler;
}

export const STATUS_PATHS = ["/", "/status.json"] as const;

/** True unless `host` is a loopback address (127.0.0.0/8, ::1, localhost). */
export function statusTokenRequired(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "").toLowerCase();
  if (bare === "localhost" || bare === "::1" || bare === "::ffff:127.0.0.1") return false;
  if (isIP(bare) === 4) return !bare.startsWith("127.");
  return true;
}

/** Throws E_STATUS_TOKEN_WEAK for a token shorter than 16 characters. */
export function checkStatusToken(token: string): void {
  if (token.length < 16) {
    throw new MeshwardError("E_STATUS_TOKEN_WEAK", "the status page token must be at least 16 characters; generate one with `openssl rand -hex 32`");
  }
}

export function createStatusRoutes(provider: StatusProvider, options: StatusRoutesOptions = {}): StatusRoutes {
  if (options.token !== undefined) checkStatusToken(options.token);
  const expected = options.token === undefined ? undefined : digest(options.token);

  const guarded = (serve: StatusHandler): StatusHandler => async (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" });
      res.end("method not allowed\n");
      return;
    }
    if (expected !== undefined && !authorized(req, expected)) {
      res.writeHead(401, {
        "content-type": "text/plain; charset=utf-8",
        "www-authenticate": 'Bearer realm="meshward-status"',
        "cache-control": "no-store",
      });
      res.end("the status page needs a token: open /?token=<token> or send Authorization: Bearer <token>\n");
      return;
    }
    await serve(req, res);
  };

  const page = guarded(async (req, res) => {
    const { html, csp } = pageAssets();
    // The first state is rendered into the page, so it never shows empty while the first poll
    // is on its way; when the provider fails the page starts in its LOADING state and polls.
    const initial = req.method === "HEAD" ? undefined : await Promise.resolve().then(provider).catch(() => undefined);
    res.writeHead(200, { ...SECURITY_HEADERS, "content-type": "text/html; charset=utf-8", "content-security-policy": csp });
    finish(req, res, html.replace("/*STATE*/", () => (initial === undefined ? "" : scriptSafeJson(initial))));
  });

  const feed = guarded(async (req, res) => {
    let body: string;
    try {
      body = JSON.stringify(await provider());
    } catch (error) {
      res.writeHead(503, { ...SECURITY_HEADERS, "content-type": "application/json" });
      res.end(JSON.stringify({ error: "status unavailable", detail: describeError(error) }));
      return;
    }
    res.writeHead(200, { ...SECURITY_HEADERS, "content-type": "application/json" });
    finish(req, res, body);
  });

  const routes: Record<string, StatusHandler> = { "/": page, "/status.json": feed };
  return {
    routes,
    handler: async (req, res) => {
      const route = routes[pathOf(req.url)];
      if (route === undefined) {
        res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
        res.end("not found\n");
        return;
      }
      await route(req, res);
    },
  };
}

const SECURITY_HEADERS = {
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
  // The token may travel in the URL: never send it on as a referrer.
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
} as const;

function finish(req: StatusRequest, res: StatusResponse, body: string): void {
  if (req.method === "HEAD") res.end();
  else res.end(body);
}

/**
 * JSON that can sit inside a <script type="application/json"> element: no "<" (so no
 * "</script>" or "<!--"), no ">" or "&", and no U+2028/U+2029; JSON.parse reads it back unchanged.
 */
export function scriptSafeJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, "\\u003c")
    .replace(/>/g, "\\u003e")
    .replace(/&/g, "\\u0026")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

function pathOf(url: string | undefined): string {
  return (url ?? "/").split("?", 1)[0] ?? "/";
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

function authorized(req: StatusRequest, expected: Buffer): boolean {
  const header = req.headers.authorization;
  const fromHeader = typeof header === "string" && /^bearer\s+/i.test(header) ? header.replace(/^bearer\s+/i, "").trim() : undefined;
  const fromQuery = new URL(req.url ?? "/", "http://status.invalid").searchParams.get("token") ?? undefined;
  const presented = fromHeader ?? fromQuery;
  return presented !== undefined && timingSafeEqual(digest(presented), expected);
}

interface PageAssets {
  readonly html: string;
  readonly csp: string;
}

let cachedAssets: PageAssets | undefined;

/**
 * One self-contained HTML response: the stylesheet and script are inlined so the page needs no
 * further (token-guarded) requests, and the CSP allows exactly those two by hash — no other
 * script or style can run even if something slipped past the page's escaping.
 */
function pageAssets(): PageAssets {
  if (cachedAssets) return cachedAssets;
  const read = (name: string) => {
    try {
      return readFileSync(new URL(`./static/${name}`, import.meta.url), "utf8");
    } catch (error) {
      throw new MeshwardError("E_STATUS_ASSETS", `the status page asset ${name} is missing next to ${import.meta.url} (a build must copy src/dashboard/static): ${describeError(error)}`);
    }
  };
  const css = read("status.css");
  const js = read("status.js");
  if (/<\/(script|style)/i.test(css + js)) throw new MeshwardError("E_STATUS_ASSETS", "status page assets must not contain closing script/style tags");
  const template = read("index.html");
  const html = template.replace("/*STYLE*/", () => css).replace("/*SCRIPT*/", () => js);
  const hash = (text: string) => `'sha256-${createHash("sha256").update(text, "utf8").digest("base64")}'`;
  const csp = [
    "default-src 'none'",
    `script-src ${hash(js)}`,
    `style-src ${hash(css)}`,
    "connect-src 'self'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
  cachedAssets = { html, csp };
  return cachedAssets;
}
