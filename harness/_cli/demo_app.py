"""The demonstration's bundled suite: the incident write-up's four suites in
small, against real server processes started from ``app_code``.

The base class records how long each server took to become ready and to
stop, so :mod:`harness._cli.demo` can say what the write-up's fixed sleeps would
have cost on exactly these servers.
"""
from __future__ import annotations

import threading
import time
import unittest
from typing import Any, ClassVar, Dict, List, NamedTuple, Optional, Tuple

from ..checks import HttpCheck
from ..errors import ServerStartError
from ..http import load
from ..process import ServerProcess
from ..testcase import ServerTestCase

# One stdlib app for every demo server, configured through its environment:
# START_UP_SECONDS: /health has no "message" until start-up is done;
# ROUTES_LATE_SECONDS: every route answers 404 until it is registered;
APP = r'''
import http.server, json, os, socketserver, threading

state = {"status": "starting"}
routes = {}

def finish_start_up():
    state.update(status="ok", message="healthy")

def register_routes():
    routes["/health"] = lambda: dict(state)
    routes["/memory_test"] = memory_test
    routes["/ping"] = lambda: {"message": "pong"}

def memory_test():
    buffer = bytearray(256 * 1024)  # allocated and freed: no leak
    return {"allocated": len(buffer)}

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each answer waits ~40 ms for a delayed ACK

    def do_GET(self):
        route = routes.get(self.path)
        code, body = (200, route()) if route else (404, {"error": "no route " + self.path})
        print(self.command, self.path, code, flush=True)
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

def later(seconds, action):
    timer = threading.Timer(float(seconds), action)
    timer.daemon = True
    timer.start()

server = Server((os.environ["HOST"], int(os.environ["PORT"])), Handler)
later(os.environ.get("START_UP_SECONDS", "0"), finish_start_up)
later(os.environ.get("ROUTES_LATE_SECONDS", "0"), register_routes)
print("listening on port", os.environ["PORT"], flush=True)
server.serve_forever()
'''

CRASHING_APP = ('import sys\nprint("error: DATABASE_URL is not set", file=sys.stderr)\n'
                'sys.exit(2)\n')

READY_WITH_MESSAGE = HttpCheck("/health", json={"message": str})


class ServerEvent(NamedTuple):
    """One server's life as the demo measured it (``time.monotonic`` seconds)."""

    name: str
    start: Tuple[float, float]   # the start() call: launch until ready, or until its crash was seen
    stop: Tuple[float, float]    # the stop() call
    crashed: bool


class Recorder:
    """Collects :class:`ServerEvent` s (thread-safe: servers may start in threads)."""

    def __init__(self) -> None:
        self.events: List[ServerEvent] = []
        self._lock = threading.Lock()
        self._starts: Dict[int, Tuple[str, Tuple[float, float]]] = {}

    def started(self, server: Any, began: float) -> None:
        with self._lock:
            self._starts[id(server)] = (server.name, (began, time.monotonic()))

    def crashed(self, name: str, began: float) -> None:
        now = time.monotonic()
        with self._lock:
            self.events.append(ServerEvent(name, (began, now), (now, now), True))

    def stopped(self, server: Any, began: float) -> None:
        now = time.monotonic()
        with self._lock:
            name, start = self._starts.pop(id(server), (server.name, (began, began)))
            self.events.append(ServerEvent(name, start, (began, now), False))


RECORDER: Optional[Recorder] = None


class DemoCase(ServerTestCase):
    """A ServerTestCase that times each server's start and stop for the table."""

    def start_server(self, app_code: Optional[str] = None, **kwargs: Any) -> Any:
        began = time.monotonic()
        try:
            server = super().start_server(app_code, **kwargs)
        except ServerStartError:
            if RECORDER is not None:
                RECORDER.crashed(kwargs.get("name", self._testMethodName), began)
            raise
        if RECORDER is not None:
            RECORDER.started(server, began)
        return server

    @classmethod
    def start_class_server(cls, app_code: Optional[str] = None, **kwargs: Any) -> Any:
        began = time.monotonic()
        server = super().start_class_server(app_code, **kwargs)
        if RECORDER is not None:
            RECORDER.started(server, began)
        return server

    def _harness_stop(self, server: Any) -> None:
        _timed_stop(server)

    @classmethod
    def _harness_stop_class_server(cls, server: Any) -> None:
        try:
            _timed_stop(server)
        finally:
            super()._harness_stop_class_server(server)  # already stopped: bookkeeping only


def _timed_stop(server: Any) -> None:
    began = time.monotonic()
    server.stop()
    if RECORDER is not None:
        RECORDER.stopped(server, began)


class CriticalIntegration(DemoCase):
    """/health says 200 before the app is ready; readiness waits for "message"."""

    def test_health_json_has_its_message(self) -> None:
        server = self.start_server(APP, health=READY_WITH_MESSAGE,
                                   env={"START_UP_SECONDS": "0.3"})
        self.assertResponse(server.get("/health"), json={"status": "ok", "message": "healthy"})

    def test_crash_at_start_up_is_reported_at_once(self) -> None:
        with self.assertRaises(ServerStartError) as caught:
            self.start_server(CRASHING_APP, name="crashing")
        self.assertIn("DATABASE_URL is not set", str(caught.exception))


class MemoryLeak(DemoCase):
    """Routes registered late (the 404s of the incident), then a leak verdict."""

    def test_routes_registered_late_answer_from_the_first_request(self) -> None:
        server = self.start_server(APP, env={"ROUTES_LATE_SECONDS": "0.3"})
        self.assertResponse(server.get("/memory_test"), json={"allocated": int})

    def test_memory_test_does_not_leak(self) -> None:
        server = self.start_server(APP)

        def ten_requests() -> None:
            for _ in range(10):
                server.get("/memory_test")

        self.assertNoLeak(server, ten_requests, rounds=5, warmup=1)


class ProductionErrors(DemoCase):
    """Servers started at the same moment never fight over a port."""

    def test_three_servers_at_once_get_three_ports(self) -> None:
        servers: List[Any] = []
        errors: List[BaseException] = []

        def start() -> None:
            try:
                servers.append(self.start_server(APP))
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        self.assertEqual(len({server.port for server in servers}), 3)


class HighFrequency(DemoCase):
    """500 requests, none lost."""

    server: ClassVar[ServerProcess]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = cls.start_class_server(APP)

    def test_500_requests_all_succeed(self) -> None:
        result = load(self.server.url + "/ping", requests=500, concurrency=16)
        self.assertEqual((result.ok, result.failed), (500, 0), str(result))


class ShowFailure(DemoCase):
    """Fails on purpose (``--show-failure``): its report ends with the server's log."""

    def test_fails_on_purpose(self) -> None:
        server = self.start_server(APP)
        server.get("/no-such-route")
        self.assertResponse(server.get("/health"), json={"message": "a different message"})


SUITE = [CriticalIntegration, MemoryLeak, ProductionErrors, HighFrequency]


def load_suite(show_failure: bool = False) -> unittest.TestSuite:
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for case in SUITE + ([ShowFailure] if show_failure else []):
        suite.addTests(loader.loadTestsFromTestCase(case))
    return suite
