"""The incident write-up's "critical integration" suite, rewritten with harness.

The failure it chased: ``test_real_server_startup_shutdown`` raised
``KeyError: 'message'`` now and then, because the test's first request
reached the server after it answered ``/health`` with 200 but before it had
finished starting (its JSON had no ``message`` yet).  The write-up's fix was
"multiple health checks with retry logic"; with harness the readiness check
itself requires the ``message`` key, so the test cannot start early, and a
wrong answer fails with the body and the missing key instead of a KeyError.

Copy this file: the app is a plain stdlib server, the test is a ServerTestCase.
"""
from __future__ import annotations

import os
import socket
import time
import unittest

from harness.checks import HttpCheck
from harness.errors import ServerStartError
from harness.ports import held_ports
from harness.testcase import ServerTestCase

# Answers /health with 200 at once, but {"status": "starting"} until its
# start-up work (a timer standing in for loading configuration) is done;
# then {"status": "ok", "message": "healthy"}.
APP = r'''
import http.server, json, os, socketserver, threading

state = {"status": "starting"}

def finish_start_up():
    print("start-up finished", flush=True)  # written before it shows: the test reads it
    state.update(status="ok", message="healthy")

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each answer waits ~40 ms for a delayed ACK

    def do_GET(self):
        code, body = (200, dict(state)) if self.path == "/health" else (404, {"error": "no route"})
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 128

server = Server((os.environ["HOST"], int(os.environ["PORT"])), Handler)
timer = threading.Timer(float(os.environ.get("START_UP_SECONDS", "0.3")), finish_start_up)
timer.daemon = True  # a stop during start-up must not wait for it
timer.start()
print("listening on", os.environ["PORT"], flush=True)
server.serve_forever()
'''

CRASHES = 'import sys\nprint("error: DATABASE_URL is not set", file=sys.stderr)\nsys.exit(2)\n'


class CriticalIntegrationTest(ServerTestCase):
    # Ready means: /health answers 200 *with* a "message" string, twice in a row.
    server_defaults = {"health": HttpCheck("/health", json={"message": str})}

    def test_real_server_startup_shutdown(self):
        server = self.start_server(APP)
        self.assertResponse(server.get("/health"), json={"status": "ok", "message": "healthy"})
        self.assertIn("start-up finished", server.output())
        log_path = server.log_path
        self.assertEqual(server.stop(), 143)  # stopped by SIGTERM, shut down cleanly
        self.assertFalse(server.running)
        self.assertNotIn(server.port, held_ports())  # the lease is released...
        with self.assertRaises(ConnectionRefusedError):  # ...and nothing answers: no 2 s sleep
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        self.assertFalse(os.path.exists(log_path))  # nothing left in /tmp

    def test_plain_200_check_would_have_started_the_test_too_early(self):
        # What the write-up's test saw: with health="/health" (any 200) the
        # server counts as ready while it is still starting.
        server = self.start_server(APP, health="/health", env={"START_UP_SECONDS": "5"})
        response = server.get("/health")
        self.assertEqual(response.status, 200)
        self.assertNotIn("message", response.json())  # the KeyError of the incident
        with self.assertRaises(AssertionError) as caught:
            self.assertResponse(response, json={"message": str})
        self.assertIn("'message' is missing", str(caught.exception))

    def test_server_that_dies_at_start_up_is_reported_at_once(self):
        started = time.monotonic()
        with self.assertRaises(ServerStartError) as caught:
            self.start_server(CRASHES, start_timeout=30)
        self.assertLess(time.monotonic() - started, 25)  # hang-catcher: not the 30 s timeout
        error = caught.exception
        self.assertEqual(error.returncode, 2)
        self.assertIn("DATABASE_URL is not set", str(error))

    def test_every_test_gets_its_own_server_and_port(self):
        first = self.start_server(APP, name="first")
        second = self.start_server(APP, name="second")
        self.assertNotEqual(first.port, second.port)
        for server in (first, second):
            self.assertResponse(server.get("/health"), json={"message": "healthy"})


class SharedServerTest(ServerTestCase):
    """One server for the whole class, started in setUpClass."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = cls.start_class_server(
            APP, health=HttpCheck("/health", json={"message": str}))

    def test_health(self):
        self.assertResponse(self.server.get("/health"), json={"message": "healthy"})

    def test_unknown_route_is_404(self):
        self.assertResponse(self.server.get("/nope"), status=404, json={"error": str})


if __name__ == "__main__":
    unittest.main()
