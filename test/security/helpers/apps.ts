/**
 * Real app servers for the security suite, each recording what it parsed, each behind a
 * loopback TCP tap that keeps the exact bytes the sidecar wrote toward the app.
 *
 * Apps: node:http, node:http2 (h2c, the only app the sidecar forwards gRPC to), Python's
 * http.server (BaseHTTPRequestHandler), wsgiref, gunicorn (gthread worker: keep-alive), uvicorn
 * (h11) and lighttpd (Debian's, in front of the recording WSGI app over SCGI: its CGI-style
 * environment turns every non-alphanumeric header-name character into '_') and Go's net/http
 * (apps/nethttp_app.go: an http.ServeMux, built once per source with Debian's Go). Python apps are
 * child processes (Debian's /usr/bin/python3, which has python3-gunicorn and python3-uvicorn)
 * that print their port; each is killed, with its process group, by `close()`.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import type { Server } from "node:http";
import { createServer as createH2cServer } from "node:http2";
import type { Http2Server, ServerHttp2Stream } from "node:http2";
import { connect as netConnect, createServer as createNetServer } from "node:net";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { fileURLToPath } from "node:url";
import { buildGoCached } from "../../helpers/go-build.ts";

export const PYTHON = "/usr/bin/python3";
const APPS_DIR = fileURLToPath(new URL("../apps/", import.meta.url));

/** One request as the app itself parsed it. */
export interface AppRecord {
  readonly app: string;
  readonly method: string;
  /** The request target as the app got it (raw), when the server exposes it. */
  readonly target: string | null;
  /** The path the app hands to its handler (PATH_INFO, scope.path, WHATWG pathname…). */
  readonly path: string;
  /** The resource it resolves to: dot segments removed (and for node, WHATWG's reading). */
  readonly route: string;
  /** [name, value] as the app saw them; WSGI apps: [name from HTTP_* key, value, raw environ key]. */
  readonly headers: readonly (readonly string[])[];
  readonly trailers?: readonly (readonly string[])[];
  readonly bodyBytes: number;
}

/** A loopback TCP relay in front of an app: every byte toward the app, per connection, in order. */
export interface Tap {
  readonly port: number;
  /** Chunks written toward the app, across connections, in arrival order. */
  readonly chunks: { conn: number; data: Buffer }[];
  /** Closes every relayed connection (the sidecar's pooled app connections start afresh). */
  resetConnections(): Promise<void>;
  close(): Promise<void>;
}

export async function startTap(appPort: number): Promise<Tap> {
  const chunks: Tap["chunks"] = [];
  const open = new Set<Socket>();
  let next = 0;
  const server = createNetServer((client) => {
    const conn = next++;
    const upstream = netConnect({ host: "127.0.0.1", port: appPort });
    open.add(client);
    open.add(upstream);
    for (const s of [client, upstream]) {
      s.on("error", () => undefined);
      s.once("close", () => {
        open.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.on("data", (data: Buffer) => {
      chunks.push({ conn, data });
      upstream.write(data);
    });
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    chunks,
    async resetConnections() {
      const closing = [...open].map((s) => new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once("close", () => resolve()))));
      for (const s of open) s.destroy();
      await Promise.all(closing);
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface RecordingApp {
  readonly name: string;
  /** "http1" apps get HTTP/1.1 from the sidecar; the "h2c" app gets gRPC over h2c. */
  readonly speaks: "http1" | "h2c";
  /** The app's own port (the sidecar is pointed at tap.port). */
  readonly port: number;
  readonly tap: Tap;
  /** Every request the app parsed so far. */
  records(): AppRecord[];
  close(): Promise<void>;
}

/** WHATWG's reading of a request target (what Express-style Node routers and `new URL` see), decoded and resolved. */
export function nodeRoute(target: string): string {
  let pathname: string;
  try {
    pathname = new URL(target, "http://app.invalid").pathname;
  } catch {
    return target;
  }
  let decoded: string;
  try {
    decoded = decodeURIComponent(pathname);
  } catch {
    decoded = pathname;
  }
  // A static-file or path-based router resolves what decoding produced (as Python's apps do).
  return posix.normalize(decoded);
}

async function startNodeHttpApp(): Promise<{ port: number; records: AppRecord[]; close(): Promise<void> }> {
  const records: AppRecord[] = [];
  const server: Server = createHttpServer((req, res) => {
    let size = 0;
    req.on("data", (c: Buffer) => (size += c.length));
    req.on("end", () => {
      const target = req.url ?? "";
      records.push({
        app: "node:http",
        method: req.method ?? "",
        target,
        path: target.split("?")[0] ?? "",
        route: nodeRoute(target),
        headers: pairs(req.rawHeaders),
        trailers: pairs(req.rawTrailers),
        bodyBytes: size,
      });
      const body = JSON.stringify({ app: "node:http", method: req.method, path: target });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body), "x-app": "node:http" });
      res.end(req.method === "HEAD" ? undefined : body);
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    records,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** An h2c app (node:http2 without TLS), as a gRPC backend behind the sidecar is. */
async function startNodeH2cApp(): Promise<{ port: number; records: AppRecord[]; close(): Promise<void> }> {
  const records: AppRecord[] = [];
  const server: Http2Server = createH2cServer();
  server.on("stream", (stream: ServerHttp2Stream, headers) => {
    let size = 0;
    stream.on("data", (c: Buffer) => (size += c.length));
    stream.on("error", () => undefined);
    stream.on("end", () => {
      const target = String(headers[":path"] ?? "");
      const raw: string[] = [];
      for (const [k, v] of Object.entries(headers)) for (const one of Array.isArray(v) ? v : [v]) if (!k.startsWith(":")) raw.push(k, String(one));
      records.push({ app: "node:http2", method: String(headers[":method"] ?? ""), target, path: target.split("?")[0] ?? "", route: nodeRoute(target), headers: pairs(raw), bodyBytes: size });
      const body = JSON.stringify({ app: "node:http2", method: headers[":method"], path: target });
      if (stream.destroyed) return;
      stream.respond({ ":status": 200, "content-type": "application/json", "x-app": "node:http2" });
      stream.end(body);
    });
  });
  server.on("sessionError", () => undefined);
  const sessions = new Set<import("node:http2").ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.on("close", () => sessions.delete(s));
    s.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    records,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function pairs(flat: readonly string[]): string[][] {
  const out: string[][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
}

const PYTHON_APPS: Record<string, (dir: string) => string[]> = {
  "http.server": () => [join(APPS_DIR, "http_server_app.py")],
  wsgiref: () => [join(APPS_DIR, "wsgiref_app.py")],
  // gthread keeps connections alive (the sync worker closes after each request), as deployed.
  gunicorn: () => ["-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "1", "--worker-class", "gthread", "--threads", "4", "--keep-alive", "30", "--chdir", APPS_DIR, "--log-level", "info", "gunicorn_app:app"],
  uvicorn: () => [join(APPS_DIR, "uvicorn_app.py")],
};

async function startPythonApp(name: string): Promise<{ port: number; records: () => AppRecord[]; close(): Promise<void> }> {
  return startChildApp(name, PYTHON, (dir) => ["-u", ...PYTHON_APPS[name]!(dir)], { PYTHONPATH: APPS_DIR, PYTHONDONTWRITEBYTECODE: "1" });
}

/**
 * An app as a child process in its own process group (a gunicorn worker dies with its master)
 * that prints its port (port 0) and appends one JSON line per request to RECORD_FILE.
 */
export async function startChildApp<R = AppRecord>(
  name: string,
  command: string,
  args: (dir: string) => string[],
  env: Record<string, string> = {},
  /** Printed when the app is ready; its first group, if any, is the port (else 0). */
  ready?: RegExp,
): Promise<{ port: number; records: () => R[]; close(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "meshward-secapp-"));
  const recordFile = join(dir, "records.jsonl");
  writeFileSync(recordFile, "");
  const child: ChildProcess = spawn(command, args(dir), {
    env: { ...process.env, RECORD_FILE: recordFile, ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  liveChildren.add(child);
  let output = "";
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not print its port:\n${output}`)), 20_000);
    const onData = (d: Buffer) => {
      output += d.toString();
      // Our scripts print "PORT n"; gunicorn logs "Listening at: http://127.0.0.1:n", php -S "(http://127.0.0.1:n)".
      const m = ready !== undefined ? ready.exec(output) : (/PORT (\d+)/.exec(output) ?? /(?:Listening at: |\()http:\/\/127\.0\.0\.1:(\d+)/.exec(output));
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1] ?? 0));
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code}:\n${output}`));
    });
  }).catch(async (error: unknown) => {
    await killGroup(child);
    rmSync(dir, { recursive: true, force: true });
    throw error;
  });
  return {
    port,
    records: () =>
      readFileSync(recordFile, "utf8")
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l) as R),
    close: async () => {
      await killGroup(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * lighttpd in front of the recording WSGI app (apps/scgi_app.py, over SCGI on a Unix socket).
 * lighttpd cannot print a port it chose, so it is handed a socket this process bound to port 0,
 * the way systemd's socket activation hands one over (fd 3, LISTEN_FDS=1, LISTEN_PID its own).
 */
async function startLighttpdApp(): Promise<{ port: number; records: () => AppRecord[]; close(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "meshward-lighttpd-"));
  const socketPath = join(dir, "scgi.sock");
  const backend = await startChildApp("lighttpd's SCGI app", PYTHON, () => ["-u", join(APPS_DIR, "scgi_app.py"), socketPath], { PYTHONPATH: APPS_DIR, PYTHONDONTWRITEBYTECODE: "1" }, /READY/);
  const listener = createNetServer();
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const port = (listener.address() as AddressInfo).port;
  const fd = (listener as unknown as { _handle: { fd: number } })._handle.fd;
  const errorLog = join(dir, "error.log");
  const config = join(dir, "lighttpd.conf");
  writeFileSync(
    config,
    [
      `server.modules = ("mod_scgi")`,
      `server.document-root = "${dir}"`,
      `server.systemd-socket-activation = "enable"`,
      `server.bind = "127.0.0.1"`,
      `server.port = ${port}`,
      `server.errorlog = "${errorLog}"`,
      `server.max-keep-alive-idle = 30`,
      // Like the other apps, take a GET with a body (lighttpd answers 400 itself by default).
      `server.http-parseopts = ("method-get-body" => "enable")`,
      `scgi.server = ("/" => (("socket" => "${socketPath}", "check-local" => "disable", "fix-root-scriptname" => "enable")))`,
      "",
    ].join("\n"),
  );
  const child: ChildProcess = spawn("/bin/sh", ["-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec /usr/sbin/lighttpd -D -f "$0"', config], { stdio: ["ignore", "pipe", "pipe", fd], detached: true });
  liveChildren.add(child);
  listener.close();
  let output = "";
  child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  const stop = async () => {
    await killGroup(child);
    await backend.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`lighttpd exited: ${output}${readLog(errorLog)}`);
      if (readLog(errorLog).includes("server started")) break;
      if (Date.now() > deadline) throw new Error(`lighttpd did not start: ${output}${readLog(errorLog)}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { port, records: backend.records, close: stop };
}

/**
 * Go's net/http (apps/nethttp_app.go): an http.ServeMux with "/items/" and a catch-all behind a
 * recording middleware, HTTP/1.1 (net/http 1.19 has no h2c without golang.org/x/net). The binary
 * is built once per source and Go version (test/helpers/go-build.ts), offline.
 */
async function startGoNetHttpApp(): Promise<{ port: number; records: () => AppRecord[]; close(): Promise<void> }> {
  const binary = await buildGoCached(join(APPS_DIR, "nethttp_app.go"));
  return startChildApp("go:net/http", binary, () => []);
}

/**
 * Express 4 (apps/express_app.mjs, the express and method-override devDependencies): its body
 * parsers, method-override for the header, the query and the body, routes for every method, as a
 * process of its own under this Node.
 */
async function startExpressApp(): Promise<{ port: number; records: () => AppRecord[]; close(): Promise<void> }> {
  return startChildApp("express", process.execPath, () => [join(APPS_DIR, "express_app.mjs")]);
}

function readLog(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

const liveChildren = new Set<ChildProcess>();
// Even if a test run dies before afterAll, no app outlives it.
process.on("exit", () => {
  for (const child of liveChildren) killGroupNow(child);
});

function killGroupNow(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    /* already gone */
  }
}

async function killGroup(child: ChildProcess): Promise<void> {
  liveChildren.delete(child);
  if (child.exitCode !== null || child.signalCode !== null) {
    killGroupNow(child); // a gunicorn worker may outlive its master
    return;
  }
  const exited = new Promise((resolve) => child.once("exit", resolve));
  killGroupNow(child);
  await exited;
}

export const HTTP1_APPS = ["node:http", "http.server", "wsgiref", "gunicorn", "uvicorn", "lighttpd", "go:net/http", "express"] as const;
export type AppName = (typeof HTTP1_APPS)[number] | "node:http2";

/** Starts one app by name, behind its tap. */
export async function startRecordingApp(name: AppName): Promise<RecordingApp> {
  const started =
    name === "node:http"
      ? await startNodeHttpApp().then((a) => ({ ...a, records: () => a.records }))
      : name === "node:http2"
        ? await startNodeH2cApp().then((a) => ({ ...a, records: () => a.records }))
        : name === "lighttpd"
          ? await startLighttpdApp()
          : name === "go:net/http"
            ? await startGoNetHttpApp()
            : name === "express"
              ? await startExpressApp()
              : await startPythonApp(name);
  const tap = await startTap(started.port);
  return {
    name,
    speaks: name === "node:http2" ? "h2c" : "http1",
    port: started.port,
    tap,
    records: started.records,
    async close() {
      await tap.close();
      await started.close();
    },
  };
}
