"""uvicorn (h11) serving a recording ASGI app on a socket bound to port 0."""
import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(__file__))
from record import record  # noqa: E402
import uvicorn  # noqa: E402


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    raw = scope.get("raw_path", b"").decode("latin-1")
    headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    record("uvicorn", scope["method"], raw + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""), scope["path"], headers, size)
    payload = json.dumps({"app": "uvicorn", "method": scope["method"], "path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), (b"x-app", b"uvicorn")]})
    await send({"type": "http.response.body", "body": payload})


sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
sock.listen(128)
print("PORT", sock.getsockname()[1], flush=True)
config = uvicorn.Config(app, http="h11", lifespan="off", log_level="warning", access_log=False)
uvicorn.Server(config).run(sockets=[sock])
