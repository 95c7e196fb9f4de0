"""Shared by the hostile servers: a tiny stdlib HTTP server with pluggable routes."""
import http.server
import json
import os
import socket


class Handler(http.server.BaseHTTPRequestHandler):
    routes = {}  # path -> callable() -> (status, body dict)

    def do_GET(self):
        route = self.routes.get(self.path)
        status, payload = route() if route else (404, {"error": "no route"})
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(routes, port=None):
    """Serve forever on $HOST:$PORT (or the handed-off fd 3)."""
    listen(routes, port).serve_forever()


def listen(routes, port=None):
    """A server bound and listening on $HOST:$PORT (or the handed-off fd 3)."""
    Handler.routes = routes
    host = os.environ["HOST"]
    port = int(os.environ["PORT"]) if port is None else port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    http.server.HTTPServer.address_family = family
    if os.environ.get("LISTEN_FDS") == "1" and os.environ.get("LISTEN_PID") == str(os.getpid()):
        server = http.server.HTTPServer((host, port), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = socket.socket(fileno=3)
    else:
        server = http.server.HTTPServer((host, port), Handler)
    print("listening", flush=True)
    return server


def ok():
    return 200, {"message": "ok"}
