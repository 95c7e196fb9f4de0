"""Readiness decided by facts: where the server's process tree listens, never how idle it is.

A check that does not talk to the port (a callable, a ``LogCheck``) says
"ready" about whatever it looks at.  harness then looks at the server's
process tree once: a listener on ``$PORT`` (the server's), a listener
elsewhere (its own Unix socket, another TCP port: the check was about
that), or none at all (a server whose check passed before it bound, or a
process without a port).  Only the last case makes harness wait, and that
wait is logged, with the option that removes it.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
import unittest
from typing import Any, Callable, List

from _process_helpers import OK_APP, NoLeftoversMixin, remove_kept

from harness import LogCheck, ServerProcess, TcpCheck, start_server
from harness._os import proc
from harness.errors import ServerNotReady

LONG = 60.0

# A 0.1-era server: it binds its own Unix socket (the path comes in $SOCK)
# and writes a line for every request it answers, as werkzeug's dev server
# does: its tree is never idle while it is probed.
OWN_UNIX_APP = r'''
import http.server, os, socketserver, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def address_string(self):
        return "unix"
    def log_message(self, fmt, *args):
        sys.stderr.write("request %s\n" % (fmt % args))

class Server(socketserver.UnixStreamServer):
    def get_request(self):
        conn, _ = super().get_request()
        return conn, ("unix", 0)

Server(os.environ["SOCK"], Handler).serve_forever(poll_interval=0.01)
'''

# A server on a TCP port of its own choosing, announced in a file.
OWN_PORT_APP = r'''
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, fmt, *args):
        print("request", fmt % args, flush=True)
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
with open(os.environ["ANNOUNCE"] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(os.environ["ANNOUNCE"] + ".tmp", os.environ["ANNOUNCE"])
server.serve_forever(poll_interval=0.01)
'''


def http_get_ok(family: int, address: Any) -> bool:
    """One HTTP/1.0 GET: True if it answered 200."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(address)
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return sock.recv(64).startswith(b"HTTP/1.0 200")
    except OSError:
        return False
    finally:
        sock.close()


class CountingCheck:
    """A callable check that remembers what every call returned."""

    def __init__(self, func: Callable[[Any], bool]) -> None:
        self.func = func
        self.results: List[bool] = []
        self.__name__ = getattr(func, "__name__", "check")

    def __call__(self, server: Any) -> bool:
        result = bool(self.func(server))
        self.results.append(result)
        return result

    @property
    def passes_after_the_first(self) -> int:
        """Calls that passed after the first pass: the probes ready waited through."""
        first = self.results.index(True)
        return len(self.results) - first - 1


class ListenerFactsTest(NoLeftoversMixin, unittest.TestCase):
    def make_dir(self) -> str:
        path = tempfile.mkdtemp(prefix="t-ready-")
        self.addCleanup(shutil.rmtree, path, True)
        return path

    @unittest.skipUnless(proc.HAVE_PROC and hasattr(socket, "AF_UNIX"),
                         "listeners are read from Linux's tables")
    def test_a_server_on_its_own_unix_socket_is_ready_when_its_check_passes(self) -> None:
        # Written for 0.1: no unix_socket=, no listens=.  Its tree holds a
        # listening Unix socket, so the check's pass is about that socket:
        # ready at once, however busy the server is, not a wait for $PORT.
        sock = os.path.join(self.make_dir(), "app.sock")
        check = CountingCheck(lambda server: os.path.exists(sock)
                              and http_get_ok(socket.AF_UNIX, sock))
        with self.assertLogs("harness", logging.INFO) as logs:
            with start_server(OWN_UNIX_APP, env={"SOCK": sock}, health=check,
                              start_timeout=LONG) as server:
                self.assertEqual(check.passes_after_the_first, server.ready_successes - 1,
                                 f"ready waited through passing checks: {check.results}")
                self.assertTrue(http_get_ok(socket.AF_UNIX, sock))
        ready = [r.getMessage() for r in logs.records if " ready in " in r.getMessage()]
        self.assertEqual(len(ready), 1, logs.output)
        self.assertIn(f"unix:{sock}", ready[0], "the ready line says where it listens")
        self.assertFalse([r for r in logs.records if r.levelno >= logging.WARNING],
                         "nothing was waited for")

    @unittest.skipUnless(proc.HAVE_PROC, "listeners are read from Linux's tables")
    def test_a_server_on_a_port_of_its_own_is_ready_when_its_check_passes(self) -> None:
        announce = os.path.join(self.make_dir(), "port")

        def answers(server: Any) -> bool:
            if not os.path.exists(announce):
                return False
            with open(announce) as f:
                return http_get_ok(socket.AF_INET, ("127.0.0.1", int(f.read())))
        check = CountingCheck(answers)
        with start_server(OWN_PORT_APP, env={"ANNOUNCE": announce}, health=check,
                          start_timeout=LONG) as server:
            self.assertEqual(check.passes_after_the_first, server.ready_successes - 1,
                             f"ready waited through passing checks: {check.results}")

    @unittest.skipUnless(proc.HAVE_PROC, "listeners are read from Linux's tables")
    def test_a_check_that_passes_before_the_server_listens_waits_and_says_so(self) -> None:
        # The server says "booted", works for a while, then binds $PORT: a
        # LogCheck passes before anything listens.  Ready still means a
        # client can connect, and the wait is logged with its reason.
        app = ("import time\nprint('booted', flush=True)\nend = time.monotonic() + 0.3\n"
               "while time.monotonic() < end:\n    pass\n" + OK_APP)
        with self.assertLogs("harness", logging.INFO) as logs:
            with start_server(app, health=LogCheck("booted"), start_timeout=LONG) as server:
                with socket.create_connection(("127.0.0.1", server.port), timeout=LONG):
                    pass  # no retry: refused would raise
        warnings = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING]
        self.assertEqual(len(warnings), 1, logs.output)
        self.assertRegex(warnings[0], r"waited [\d.]+ s for a listener")
        self.assertIn("listens=False", warnings[0])

    def test_a_worker_that_never_listens_is_ready_after_the_grace_and_told_why(self) -> None:
        # A busy worker (its tree is never idle) that passed its check and
        # has no port: ready, not a failure, and the log says how to skip
        # the wait.
        worker = [sys.executable, "-c",
                  "import time\nprint('working', flush=True)\nwhile True:\n    time.sleep(0)\n"]
        with self.assertLogs("harness", logging.WARNING) as logs:
            with start_server(argv=worker, health=LogCheck("working"),
                              start_timeout=LONG) as server:
                self.assertTrue(server.running)
        self.assertEqual(len(logs.records), 1, logs.output)
        message = logs.records[0].getMessage()
        self.assertIn("listens nowhere", message)
        self.assertIn("listens=False", message)

    def test_listens_false_leases_and_shows_no_port(self) -> None:
        worker = [sys.executable, "-c",
                  "import os, time\nprint('port', os.environ.get('PORT'), flush=True)\n"
                  "time.sleep(60)\n"]
        with self.assertLogs("harness", logging.INFO) as logs:
            with start_server(argv=worker, health=LogCheck("port"), listens=False) as server:
                self.assertIsNone(server.port)
                self.assertIn("port None", server.output())
                self.assertNotIn("127.0.0.1", repr(server))
                with self.assertRaisesRegex(Exception, "listens=False"):
                    _ = server.url
        self.assertFalse([r for r in logs.records if r.levelno >= logging.WARNING],
                         logs.output)
        self.assertNotRegex(" ".join(logs.output), r"http://127\.0\.0\.1:\d+")

    def test_listens_false_with_a_port_is_refused(self) -> None:
        for kwargs in ({"port": 12345}, {"handoff": True}, {"port_range": (20000, 20010)}):
            with self.subTest(**kwargs), self.assertRaisesRegex(ValueError, "listens=False"):
                ServerProcess(argv=["true"], listens=False, health=LogCheck("x"), **kwargs)
        with self.assertRaisesRegex(ValueError, r"\{port\}"):
            ServerProcess(argv=["serve", "--port={port}"], listens=False, health=LogCheck("x"))

    @unittest.skipUnless(proc.HAVE_PROC and hasattr(socket, "AF_UNIX"),
                         "listeners are read from Linux's tables")
    def test_listens_true_waits_for_port_and_names_where_the_server_listens(self) -> None:
        sock = os.path.join(self.make_dir(), "app.sock")
        server = ServerProcess(OWN_UNIX_APP, env={"SOCK": sock}, listens=True,
                               health=lambda s: os.path.exists(sock), start_timeout=1.5)
        with self.assertRaises(ServerNotReady) as ctx:
            server.start()
        remove_kept(ctx.exception.log_path)
        self.assertRegex(str(ctx.exception), r"check passed, but nothing listens on port \d+")
        self.assertIn(f"unix:{sock}", str(ctx.exception))

    def test_ready_line_says_how_the_time_was_spent(self) -> None:
        with self.assertLogs("harness", logging.INFO) as logs:
            with start_server(OK_APP) as server:
                pass
        ready = [r.getMessage() for r in logs.records if " ready in " in r.getMessage()]
        self.assertEqual(len(ready), 1, logs.output)
        self.assertIn(server.url, ready[0])
        self.assertRegex(ready[0], r"launched in [\d.]+ ms")
        self.assertRegex(ready[0], r"check passed at [\d.]+ ms after \d+ probes?")
        self.assertRegex(ready[0], r"2 passes in a row at [\d.]+ ms")


class ReadySuccessesTest(NoLeftoversMixin, unittest.TestCase):
    def test_one_accepted_probe_is_enough_under_handoff(self) -> None:
        probes: List[bool] = []

        class Counting(TcpCheck):
            def probe(self, server: Any, timeout: float) -> Any:
                outcome = super().probe(server, timeout)
                probes.append(outcome.ok)
                return outcome
        with start_server(OK_APP, handoff=True, health=Counting()) as server:
            self.assertEqual(server.ready_successes, 1)
        self.assertEqual(probes.count(True), 1, probes)

    def test_the_default_is_still_two_elsewhere_and_an_explicit_value_wins(self) -> None:
        self.assertEqual(ServerProcess(OK_APP).ready_successes, 2)
        self.assertEqual(ServerProcess(OK_APP, health=None).ready_successes, 2)
        self.assertEqual(ServerProcess(OK_APP, handoff=True).ready_successes, 2)  # HTTP
        self.assertEqual(ServerProcess(OK_APP, handoff=True, health=None,
                                       ready_successes=3).ready_successes, 3)


if __name__ == "__main__":
    unittest.main()
