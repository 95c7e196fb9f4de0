"""Readiness checks on their own: labels, JSON validation, the wait loop."""
from __future__ import annotations

import http.server
import json
import os
import re
import socket
import tempfile
import threading
import unittest

from harness._os import procinfo as _procinfo
from harness._wait import Deadline
from harness.checks import (
    AllChecks,
    CallableCheck,
    HttpCheck,
    LogCheck,
    Outcome,
    Tally,
    TcpCheck,
    WaitEnd,
    as_check,
    poll_interval,
    wait_ready,
)

HANG = 30.0  # hang-catcher only


class FakeServer:
    """What a check needs from a server: host, port, log."""

    def __init__(self, port: int = 0, log_path: str = "", handoff: bool = False) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.log_path = log_path
        self.log_offset = 0
        self.launch_id = 1
        self.handoff = handoff
        self.listen_inode = None


class ThreadServer:
    """An in-process HTTP server answering from a dict path -> (status, body)."""

    def __init__(self, answers: dict) -> None:
        answers_ = answers

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = answers_.get(self.path, (404, b"no"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def closed_port() -> int:
    """A port nobody listens on (bound, not listening, for the test's duration)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1], sock


class HttpCheckTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.server = ThreadServer({
            "/health": (200, json.dumps({"message": "ok", "n": 3}).encode()),
            "/missing": (200, json.dumps({"status": "starting"}).encode()),
            "/text": (200, b"hello"),
            "/list": (200, b"[1, 2]"),
            "/nested": (200, json.dumps({"db": {"ready": True, "pool": 4}}).encode()),
        })
        cls.addClassCleanup(cls.server.close)
        cls.fake = FakeServer(cls.server.port)

    def probe(self, check: HttpCheck) -> Outcome:
        return check.probe(self.fake, 5.0)

    def test_200_passes(self) -> None:
        self.assertEqual(self.probe(HttpCheck("/health")), Outcome(True, "HTTP 200"))

    def test_404_is_not_ready_with_status_label(self) -> None:
        outcome = self.probe(HttpCheck("/nope"))
        self.assertFalse(outcome.ok)
        self.assertEqual(outcome.label, "HTTP 404")

    def test_json_missing_key_is_named(self) -> None:
        outcome = self.probe(HttpCheck("/missing", json={"message": str}))
        self.assertEqual(outcome.label, "JSON missing 'message'")
        self.assertIn("starting", outcome.detail)

    def test_json_type_value_and_predicate(self) -> None:
        self.assertTrue(self.probe(HttpCheck("/health", json={"message": str, "n": int})).ok)
        self.assertEqual(self.probe(HttpCheck("/health", json={"n": str})).label,
                         "JSON 'n' is int, expected str")
        self.assertEqual(self.probe(HttpCheck("/health", json={"message": "bye"})).label,
                         "JSON 'message' is 'ok', expected 'bye'")

        def positive_and_big(v: int) -> bool:
            return v > 10
        self.assertEqual(self.probe(HttpCheck("/health", json={"n": positive_and_big})).label,
                         "JSON 'n' failed positive_and_big")

    def test_same_spec_language_as_expect_json(self) -> None:
        # Nested dicts, tuples of types, JSON true not an int, and a predicate
        # over the whole document: what request(expect_json=...) accepts.
        self.assertTrue(self.probe(HttpCheck("/nested", json={"db": {"ready": True}})).ok)
        self.assertTrue(self.probe(HttpCheck("/nested", json={"db": {"pool": (int, float)}})).ok)
        self.assertEqual(self.probe(HttpCheck("/nested", json={"db": {"ready": int}})).label,
                         "JSON 'db'['ready'] is bool, expected int")
        self.assertEqual(self.probe(HttpCheck("/nested", json={"db": {"up": bool}})).label,
                         "JSON missing 'db'['up']")

        def pool_is_big(doc: dict) -> bool:
            return doc["db"]["pool"] > 10
        self.assertEqual(self.probe(HttpCheck("/nested", json=pool_is_big)).label,
                         "JSON failed pool_is_big")
        with self.assertRaises(TypeError) as caught:
            HttpCheck(json=["message"])  # type: ignore[arg-type]
        self.assertIn("json must be", str(caught.exception))

    def test_not_json_and_not_object(self) -> None:
        self.assertEqual(self.probe(HttpCheck("/text", json={"a": 1})).label, "body is not JSON")
        self.assertEqual(self.probe(HttpCheck("/list", json={"a": 1})).label,
                         "JSON is a list, not an object")

    def test_refused_port(self) -> None:
        port, holder = closed_port()
        self.addCleanup(holder.close)
        outcome = HttpCheck().probe(FakeServer(port), 1.0)
        self.assertEqual(outcome.label, "connection refused")

    def test_callable_interface(self) -> None:
        self.assertTrue(HttpCheck("/health")(self.fake))
        self.assertFalse(HttpCheck("/nope")(self.fake))

    def test_probe_honours_timeout(self) -> None:
        # A listener that never answers: the probe returns "timed out", not a hang.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        self.addCleanup(sock.close)
        outcome = HttpCheck().probe(FakeServer(sock.getsockname()[1]), 0.05)
        self.assertEqual(outcome.label, "timed out")

    def test_bad_arguments(self) -> None:
        with self.assertRaisesRegex(ValueError, "path"):
            HttpCheck("health")
        with self.assertRaisesRegex(TypeError, "status"):
            HttpCheck(status="200")  # type: ignore[arg-type]
        with self.assertRaisesRegex(ValueError, "status"):
            HttpCheck(status=700)
        with self.assertRaisesRegex(TypeError, "json"):
            HttpCheck(json=["message"])  # type: ignore[arg-type]
        with self.assertRaisesRegex(ValueError, "timeout"):
            HttpCheck(timeout=0)


class TcpCheckTest(unittest.TestCase):
    def test_listening_and_refused(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        self.addCleanup(sock.close)
        self.assertTrue(TcpCheck().probe(FakeServer(sock.getsockname()[1]), 1.0).ok)
        port, holder = closed_port()
        self.addCleanup(holder.close)
        self.assertEqual(TcpCheck().probe(FakeServer(port), 1.0).label, "connection refused")

    @unittest.skipUnless(_procinfo.HAVE_PROC, "the accept queue is read from Linux's tables")
    def test_handoff_needs_the_server_to_accept(self) -> None:
        # harness listens itself under handoff: a connect alone proves nothing.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        self.addCleanup(sock.close)
        server = FakeServer(sock.getsockname()[1], handoff=True)
        server.listen_inode = os.fstat(sock.fileno()).st_ino
        outcome = TcpCheck().probe(server, 0.2)
        self.assertFalse(outcome.ok, "a connection nobody accepted is not readiness")
        self.assertEqual(outcome.label, "connection queued, not accepted")
        self.assertIn("accept()", outcome.detail)
        taken: list = []
        thread = threading.Thread(target=lambda: [taken.append(sock.accept()[0])
                                                  for _ in range(2)])
        thread.start()
        self.addCleanup(lambda: [c.close() for c in taken])
        outcome = TcpCheck().probe(server, 5.0)
        thread.join(HANG)
        self.assertTrue(outcome.ok, outcome)
        self.assertEqual(outcome.label, "connection accepted")


class LogCheckTest(unittest.TestCase):
    def setUp(self) -> None:
        fd, self.path = tempfile.mkstemp()
        os.close(fd)
        self.addCleanup(os.unlink, self.path)

    def append(self, text: str) -> None:
        with open(self.path, "a") as f:
            f.write(text)

    def test_incremental_and_sticky(self) -> None:
        check = LogCheck(r"listening on \d+")
        server = FakeServer(log_path=self.path)
        self.assertFalse(check.probe(server, 1).ok)
        self.append("booting\nlistening on ")
        self.assertFalse(check.probe(server, 1).ok)
        self.append("8080\n")  # the match spans two reads
        self.assertTrue(check.probe(server, 1).ok)
        self.assertTrue(check.probe(server, 1).ok)

    def test_a_line_still_being_written_does_not_match(self) -> None:
        # "port 80" is the start of "port 8080": matching it would report the
        # wrong port (and a half-written line), so only complete lines count.
        check = LogCheck(r"port \d+")
        server = FakeServer(log_path=self.path)
        self.append("listening on port 80")
        self.assertFalse(check.probe(server, 1).ok)
        self.append("80\n")
        self.assertTrue(check.probe(server, 1).ok)

    def test_literal_text_is_not_a_regex(self) -> None:
        check = LogCheck("Running on http://127.0.0.1:8000/ (Press CTRL+C)", literal=True)
        server = FakeServer(log_path=self.path)
        self.append("Running on http://127.0.0.1:8000/ Press CTRL C\n")  # what the regex matches
        self.assertFalse(check.probe(server, 1).ok)
        self.append(" * Running on http://127.0.0.1:8000/ (Press CTRL+C)\n")
        self.assertTrue(check.probe(server, 1).ok)
        with self.assertRaisesRegex(TypeError, "literal=True"):
            LogCheck(re.compile("x"), literal=True)

    def test_new_launch_starts_over(self) -> None:
        check = LogCheck("ready")
        server = FakeServer(log_path=self.path)
        self.append("ready\n")
        self.assertTrue(check.probe(server, 1).ok)
        server.launch_id = 2
        server.log_offset = os.path.getsize(self.path)
        self.assertFalse(check.probe(server, 1).ok)

    def test_bad_pattern(self) -> None:
        with self.assertRaisesRegex(ValueError, "pattern"):
            LogCheck("(")
        with self.assertRaisesRegex(TypeError, "pattern"):
            LogCheck(42)  # type: ignore[arg-type]


class AsCheckTest(unittest.TestCase):
    def test_conversions(self) -> None:
        self.assertIsInstance(as_check(None), TcpCheck)
        check = as_check("/ready")
        self.assertIsInstance(check, HttpCheck)
        self.assertEqual(check.path, "/ready")
        self.assertIsInstance(as_check(lambda s: True), CallableCheck)
        tcp = TcpCheck()
        self.assertIs(as_check(tcp), tcp)

    def test_bad_health(self) -> None:
        with self.assertRaisesRegex(ValueError, "health"):
            as_check("ready")
        with self.assertRaisesRegex(TypeError, "health"):
            as_check(42)  # type: ignore[arg-type]

    def test_callable_outcomes(self) -> None:
        def broken(server: object) -> bool:
            raise RuntimeError("db down")
        self.assertEqual(CallableCheck(broken).probe(None, 1).label, "RuntimeError: db down")
        self.assertEqual(CallableCheck(lambda s: 0).probe(None, 1).label, "check returned 0")
        self.assertTrue(CallableCheck(lambda s: "yes").probe(None, 1).ok)


class AllChecksTest(unittest.TestCase):
    def test_every_check_in_order_and_the_first_failure_is_the_outcome(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        self.addCleanup(sock.close)
        server = FakeServer(sock.getsockname()[1])
        calls = []

        def ping(srv: object) -> bool:
            calls.append(srv)
            return len(calls) >= 2  # "loading" on the first call, ready after

        check = as_check([None, ping])  # health=[TcpCheck(), ping], as a list
        self.assertIsInstance(check, AllChecks)
        self.assertTrue(check.uses_port)
        self.assertEqual(check.probe(server, 1.0).label, "check returned False")
        outcome = check.probe(server, 1.0)
        self.assertEqual((outcome.ok, outcome.label), (True, "connected + check passed"))
        self.assertEqual(calls, [server, server])
        # A failing first step stops the probe: the ping is not even tried.
        port, holder = closed_port()
        self.addCleanup(holder.close)
        self.assertEqual(check.probe(FakeServer(port), 1.0).label, "connection refused")
        self.assertEqual(len(calls), 2)
        self.assertEqual(repr(check), "AllChecks(TcpCheck(), CallableCheck('ping'))")

    def test_a_log_line_alone_does_not_use_the_port(self) -> None:
        self.assertFalse(AllChecks(LogCheck("ready"), lambda s: True).uses_port)
        self.assertTrue(AllChecks(LogCheck("ready"), "/health").uses_port)

    def test_bad_lists_are_refused_naming_health(self) -> None:
        with self.assertRaisesRegex(ValueError, r"health=\[\]"):
            as_check([])
        with self.assertRaisesRegex(TypeError, "health must be .* got int 42"):
            as_check([TcpCheck(), 42])
        with self.assertRaisesRegex(ValueError, "health must be a path"):
            as_check(("ready",))


class WaitReadyTest(unittest.TestCase):
    def test_needs_consecutive_successes(self) -> None:
        answers = iter([True, False, True, True, True])
        check = CallableCheck(lambda s: next(answers))
        result = wait_ready(None, check, successes=2, deadline=Deadline(10),
                            exited=lambda t: False)
        self.assertTrue(result.ok)
        self.assertEqual(result.tally.attempts, 4)  # True, False, True, True

    def test_exit_ends_the_wait_at_once(self) -> None:
        calls = []

        def exited(timeout: float) -> bool:
            calls.append(timeout)
            return len(calls) > 3
        result = wait_ready(None, CallableCheck(lambda s: False), successes=1,
                            deadline=Deadline(60), exited=exited)
        self.assertEqual(result.reason, "exited")
        self.assertLess(result.tally.attempts, 3)

    def test_timeout_and_summary(self) -> None:
        result = wait_ready(None, CallableCheck(lambda s: False), successes=1,
                            deadline=Deadline(0.05), exited=lambda t: False)
        self.assertEqual(result.reason, "timeout")
        self.assertRegex(result.tally.summary(), r"^check returned False \u00d7\d+$")

    def test_verify_can_reject_a_streak(self) -> None:
        result = wait_ready(None, CallableCheck(lambda s: True), successes=2,
                            deadline=Deadline(10), exited=lambda t: False,
                            verify=lambda: Outcome(False, "port answered by another process",
                                                   foreign=True))
        self.assertEqual(result.reason, WaitEnd.PORT_LOST)

    def test_tally_summary_order_and_counts(self) -> None:
        tally = Tally()
        labels = ["connection refused"] * 12 + ["HTTP 404"] * 3 + ["JSON missing 'message'"] * 2
        for label in labels:
            tally.add(Outcome(False, label))
        self.assertEqual(tally.summary(),
                         "connection refused \u00d712, HTTP 404 \u00d73, "
                         "JSON missing 'message' \u00d72")

    def test_poll_interval_grows_and_is_capped(self) -> None:
        self.assertEqual(poll_interval(0.0), 0.001)
        self.assertLess(poll_interval(0.1), poll_interval(0.5))
        self.assertEqual(poll_interval(100.0), 0.05)


if __name__ == "__main__":
    unittest.main()
