"""The incident write-up's memory-leak suite, rewritten with harness.

The failure it chased: requests to ``/health`` and ``/memory_test`` got 404
now and then, because the test started while the server was still
registering its routes.  harness only hands the server to the test once
``/health`` answered 200 twice in a row (``ready_successes=2``), and the
leak verdict comes from :func:`harness.memory.measure_leak` (a least-squares
slope over rounds, after warm-up rounds) instead of one before/after pair.
"""
from __future__ import annotations

import unittest

from harness.memory import measure_leak
from harness.testcase import ServerTestCase

# Listens at once, but registers its routes a moment later (404 until then).
# /memory_test allocates a 256 KiB buffer per request and frees it; with
# LEAK_BYTES it also keeps that many bytes per request forever (the bug).
APP = r'''
import http.server, json, os, socketserver, threading

routes = {}
kept = []
leak_bytes = int(os.environ.get("LEAK_BYTES", "0"))

def health():
    return {"status": "ok", "message": "healthy"}

def memory_test():
    buffer = bytearray(256 * 1024)
    if leak_bytes:
        kept.append(bytearray(leak_bytes))
    return {"allocated": len(buffer), "kept": len(kept)}

def register_routes():
    print("routes registered", flush=True)  # written before it shows: the test reads it
    routes.update({"/health": health, "/memory_test": memory_test})

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each answer waits ~40 ms for a delayed ACK

    def do_GET(self):
        route = routes.get(self.path)
        code, body = (200, route()) if route else (404, {"error": "no route " + self.path})
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
timer = threading.Timer(0.2, register_routes)
timer.daemon = True
timer.start()
server.serve_forever()
'''


class MemoryLeakTest(ServerTestCase):
    def workload(self, server):
        """One round: 20 requests to /memory_test."""
        def run():
            for _ in range(20):
                self.assertResponse(server.get("/memory_test"), json={"allocated": 262144})
        return run

    def test_endpoints_answer_from_the_first_request(self):
        server = self.start_server(APP)  # ready = /health answered 200 twice in a row
        self.assertResponse(server.get("/health"), json={"message": "healthy"})
        self.assertResponse(server.get("/memory_test"), json={"allocated": int})
        self.assertIn("routes registered", server.output())

    def test_memory_test_endpoint_does_not_leak(self):
        server = self.start_server(APP)
        report = self.assertNoLeak(server, self.workload(server), rounds=6, warmup=2)
        self.assertFalse(report.leaking)
        self.assertEqual(report.rounds, 6)

    def test_a_leak_is_caught_with_the_numbers(self):
        server = self.start_server(APP, env={"LEAK_BYTES": str(64 * 1024)})  # 1.25 MiB a round
        report = measure_leak(server, self.workload(server), rounds=6, warmup=2)
        self.assertTrue(report.leaking, str(report))
        self.assertGreater(report.slope, 512 * 1024)
        with self.assertRaises(AssertionError) as caught:
            self.assertNoLeak(server, self.workload(server), rounds=5, warmup=1)
        self.assertIn("leaks memory", str(caught.exception))
        self.assertIn("verdict: LEAKING", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
