"""The recording WSGI app behind lighttpd, over SCGI on a Unix socket (python3's standard library only).

lighttpd builds the SCGI environment the way it builds its CGI and FastCGI ones
(http_cgi_encode_varname): each request header becomes HTTP_<NAME>, with every character of the
name that is not a letter or a digit turned into '_' — so `x+forwarded+client+cert` and
`x-forwarded-client-cert` are one variable. Usage: scgi_app.py <socket path>; prints READY once
it listens. SCGI (python.ca/scgi/protocol.txt): a netstring of NUL-separated header pairs,
CONTENT_LENGTH body bytes, then the answer in CGI form ("Status: ..." header lines, body); one
request per connection.
"""
import io
import os
import socket
import socketserver
import sys

sys.path.insert(0, os.path.dirname(__file__))
from record import wsgi_app  # noqa: E402

app = wsgi_app("lighttpd")


def read_netstring(stream):
    length = b""
    while True:
        c = stream.read(1)
        if c == b"":
            raise EOFError("connection closed in the netstring length")
        if c == b":":
            break
        length += c
    data = stream.read(int(length))
    if stream.read(1) != b",":
        raise ValueError("netstring without its comma")
    return data


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        fields = read_netstring(self.rfile).split(b"\0")
        environ = {}
        for i in range(0, len(fields) - 1, 2):
            # Two headers that map to one variable: the first one wins, as getenv() reads a CGI
            # environment (and Python's os.environ) built from lighttpd's list.
            environ.setdefault(fields[i].decode("latin-1"), fields[i + 1].decode("latin-1"))
        length = int(environ.get("CONTENT_LENGTH") or "0")
        environ["wsgi.input"] = io.BytesIO(self.rfile.read(length) if length > 0 else b"")
        environ.setdefault("PATH_INFO", "")
        status_headers = []

        def start_response(status, headers, exc_info=None):
            status_headers[:] = [status, headers]

        body = b"".join(app(environ, start_response))
        status, headers = status_headers
        head = "Status: %s\r\n" % status + "".join("%s: %s\r\n" % (k, v) for k, v in headers) + "\r\n"
        self.wfile.write(head.encode("latin-1") + body)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


server = Server(sys.argv[1], Handler)
print("READY", flush=True)
server.serve_forever()
