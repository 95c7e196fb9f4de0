"""A server for the memory tests: ``mem_server.py FD MODE``.

FD is an inherited listening socket.  ``GET /work`` builds and throws away
some JSON (steady), and in MODE ``leak`` also keeps 200 KiB per request
(touched, so the pages are really resident).  ``GET /health`` answers 200.
Single-threaded on purpose: the memory a test sees is the handler's, not
the thread stacks and per-thread malloc arenas of a thread per connection.
"""
import http.server
import json
import socket
import sys

LEAK_BYTES = 200 * 1024
kept = []


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/work":
            records = [{"id": i, "name": "item-%d" % i, "tags": ["a", "b"]} for i in range(500)]
            body = json.dumps({"count": len(json.dumps(records))}).encode()
            if MODE == "leak":
                kept.append(b"x" * LEAK_BYTES)
        elif self.path == "/health":
            body = b'{"status": "ok"}'
        else:
            self.send_error(404)
            return
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


class Server(http.server.HTTPServer):
    def __init__(self, sock):
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock


if __name__ == "__main__":
    MODE = sys.argv[2]
    if MODE not in ("leak", "steady"):
        sys.exit("usage: mem_server.py FD leak|steady")
    Server(socket.socket(fileno=int(sys.argv[1]))).serve_forever()
