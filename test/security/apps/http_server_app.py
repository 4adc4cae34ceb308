"""python3 -m http.server's request handler (BaseHTTPRequestHandler), recording what it parsed."""
import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, __import__("os").path.dirname(__file__))
from record import record  # noqa: E402


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_any(self):
        length = 0
        try:
            length = int(self.headers.get("content-length") or "0")
        except ValueError:
            pass
        body = self.rfile.read(length) if length > 0 else b""
        # The path SimpleHTTPRequestHandler.translate_path serves: query dropped, then unquoted.
        path = urllib.parse.unquote(self.path.split("?", 1)[0].split("#", 1)[0])
        record("http.server", self.command, self.path, path, [[k, v] for k, v in self.headers.items()], len(body))
        payload = json.dumps({"app": "http.server", "method": self.command, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("x-app", "http.server")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.handle_any
        raise AttributeError(name)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print("PORT", server.server_address[1], flush=True)
server.serve_forever()
