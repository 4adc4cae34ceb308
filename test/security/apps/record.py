"""Shared recorder for the security suite's Python apps (test/security/helpers/apps.ts).

Each app appends one JSON line per request it parsed to the file named by $RECORD_FILE:
what the app itself read (method, target, the path it routes on, every header as it saw it,
body length), so the test can compare it with what the sidecar judged.
"""
import json
import os
import posixpath
import threading
import urllib.parse

_lock = threading.Lock()
_file = open(os.environ["RECORD_FILE"], "a", encoding="utf-8")


def route_of(path):
    """The resource a typical Python app resolves: percent-decoded, dot segments removed
    (http.server's translate_path does the same: unquote, then posixpath.normpath)."""
    if path == "":
        return ""
    resolved = posixpath.normpath(path)
    return resolved


def record(app, method, target, path, headers, body_bytes, extra=None):
    line = {
        "app": app,
        "method": method,
        "target": target,
        "path": path,
        "route": route_of(path),
        "headers": headers,
        "bodyBytes": body_bytes,
    }
    if extra:
        line.update(extra)
    with _lock:
        _file.write(json.dumps(line) + "\n")
        _file.flush()


def wsgi_headers(environ):
    """PEP 3333: request headers arrive as HTTP_<NAME> environ keys ('-' became '_').
    Reported as (normalised name, value) plus the raw key, so XFCC in any spelling shows."""
    out = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            out.append([key[5:].lower().replace("_", "-"), value, key])
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            out.append([key.lower().replace("_", "-"), environ[key], key])
    return out


def wsgi_app(name):
    def app(environ, start_response):
        body = b""
        try:
            length = int(environ.get("CONTENT_LENGTH") or "0")
        except ValueError:
            length = 0
        stream = environ["wsgi.input"]
        if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked" and name == "gunicorn":
            body = stream.read()
        elif length > 0:
            body = stream.read(length)
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        path = environ.get("PATH_INFO", "")
        record(name, environ["REQUEST_METHOD"], raw, path, wsgi_headers(environ), len(body),
               {"query": environ.get("QUERY_STRING", ""), "environKeys": sorted(k for k in environ if k.startswith("HTTP_"))})
        payload = json.dumps({"app": name, "method": environ["REQUEST_METHOD"], "path": path, "raw": raw}).encode()
        start_response("200 OK", [("content-type", "application/json"), ("content-length", str(len(payload))), ("x-app", name)])
        return [payload]
    return app
