"""wsgiref.simple_server (the standard library's WSGI server) with a recording WSGI app."""
import os
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

sys.path.insert(0, os.path.dirname(__file__))
from record import wsgi_app  # noqa: E402


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class Threading(ThreadingMixIn, WSGIServer):
    daemon_threads = True


server = make_server("127.0.0.1", 0, wsgi_app("wsgiref"), server_class=Threading, handler_class=Quiet)
print("PORT", server.server_port, flush=True)
server.serve_forever()
