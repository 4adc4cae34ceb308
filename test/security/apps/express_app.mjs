// An Express 4 app as the security suite's recording app (test/security/helpers/apps.ts), run as a
// process of its own: `node express_app.mjs`. Plain JavaScript, as the other apps are in their
// own languages (express has no types in this project, and Node 20 runs no TypeScript itself).
//
// It is the app the review of 2026-12-07 (HIGH-1, MEDIUM-2) bypassed the sidecar with: Express's
// body parsers (express.urlencoded({ extended: false }), express.json(); body-parser inflates gzip
// and deflate and decodes any `utf-*` JSON charset) and method-override as its README sets it up:
// the X-HTTP-Method-Override header, the `_method` query value, and `_method` in a parsed body
// (the function form). Each applies to a POST only (method-override's default). Then routes for
// every method on the paths the suite uses (/items, /items/*, /forms/*, /open/*), a not-found
// handler for any other path and an error handler (a body the parsers refuse: 400, 413, 415).
//
// It listens on 127.0.0.1, port 0, prints "PORT <n>", and appends one JSON line per request it
// handled to $RECORD_FILE, in the shape of apps/record.py, before it answers: method (after
// method-override; originalMethod beside it), target (req.originalUrl), path (req.path, what the
// router matches: not decoded, dot segments kept), route (req.path percent-decoded as Express
// decodes route parameters, then dot segments removed: the resource a handler that joins its
// parameters resolves), handler (which route ran), headers (req.rawHeaders as pairs, as the
// node:http app reports), trailers, body (req.body as the parsers left it) and bodyBytes (bytes of
// the request body as received, before any inflation). Every answer carries x-app: express.
import { appendFileSync } from "node:fs";
import { posix } from "node:path";
import express from "express";
import methodOverride from "method-override";

const APP = "express";
const recordFile = process.env.RECORD_FILE;
if (!recordFile) throw new Error("RECORD_FILE is not set");

function pairs(flat) {
  const out = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
}

function routeOf(path) {
  let decoded = path;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    // Express answers 400 for a parameter it cannot decode; the raw path is what was routed.
  }
  return posix.normalize(decoded);
}

/** Records the request as the app handled it, then answers (once the whole body has arrived). */
function answer(req, res, status, handler) {
  const finish = () => {
    const record = {
      app: APP,
      method: req.method,
      originalMethod: req.originalMethod ?? req.method,
      target: req.originalUrl,
      path: req.path,
      route: routeOf(req.path),
      handler,
      status,
      headers: pairs(req.rawHeaders),
      trailers: pairs(req.rawTrailers),
      body: req.body ?? null,
      bodyBytes: req.receivedBytes,
    };
    appendFileSync(recordFile, `${JSON.stringify(record)}\n`);
    res.status(status).json({ app: APP, method: req.method, path: req.originalUrl, handler });
  };
  if (req.readableEnded) finish();
  else req.once("end", finish);
}

const app = express();

// The recorder: counts the body's bytes as they arrive (the parsers below read the same stream,
// their listeners are added in this same tick), and marks every answer as the app's.
app.use((req, res, next) => {
  req.receivedBytes = 0;
  req.on("data", (chunk) => (req.receivedBytes += chunk.length));
  res.setHeader("x-app", APP);
  next();
});

app.use(express.urlencoded({ extended: false }));
app.use(express.json());
app.use(methodOverride("X-HTTP-Method-Override"));
app.use(methodOverride("_method"));
app.use(
  methodOverride((req) => {
    if (req.body && typeof req.body === "object" && "_method" in req.body) {
      const method = req.body._method;
      delete req.body._method;
      return method;
    }
    return undefined;
  }),
);

for (const pattern of ["/items", "/items/*", "/forms/*", "/open/*"]) {
  const route = app.route(pattern);
  for (const method of ["get", "post", "put", "patch", "delete"]) route[method]((req, res) => answer(req, res, 200, `${method.toUpperCase()} ${pattern}`));
  route.all((req, res) => answer(req, res, 200, `ALL ${pattern}`));
}
app.use((req, res) => answer(req, res, 404, "not found"));
app.use((err, req, res, next) => answer(req, res, err.status ?? err.statusCode ?? 500, `error: ${err.type ?? err.message}`));

const server = app.listen(0, "127.0.0.1", () => {
  process.stdout.write(`PORT ${server.address().port}\n`);
});
server.keepAliveTimeout = 30_000;
