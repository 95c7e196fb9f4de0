"""A deadline is a deadline: request(), load(), HttpCheck and the port server
client against peers that trickle, lie about sizes, send odd headers or never answer.

Every timing assertion is a hang-catcher (the deadline plus a generous
second), never a tight threshold: a call with a working deadline ends within
milliseconds of it; one without overstays by seconds (each hostile behaviour
lasts up to ``_hostile.MAX_SECONDS``).
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import unittest

import _hostile
from _hostile import RawServer, answers, response, server_like
from _process_helpers import NoLeftoversMixin, remove_kept
from _support import open_fds

from harness import ports
from harness._config import scaled
from harness.checks import HttpCheck
from harness.errors import RequestFailed, ServerNotReady
from harness.http import RetryPolicy, error_kind, load, request

#: Added to a deadline to catch a hang; not a timing threshold.
SLACK = 1.0


def bound(seconds: float) -> float:
    return scaled(seconds) + SLACK


class CleanTestCase(unittest.TestCase):
    """Fails a test that leaves a thread or a file descriptor behind."""

    def setUp(self) -> None:
        fds = open_fds()
        threads = set(threading.enumerate())

        def nothing_left() -> None:  # registered first: runs after the servers are closed
            self.assertEqual(set(threading.enumerate()) - threads, set(), "threads left")
            self.assertEqual(open_fds(), fds, "fds left open")

        self.addCleanup(nothing_left)

    def timed_failure(self, exc: type, func, *args, **kwargs):
        started = time.monotonic()
        with self.assertRaises(exc) as caught:
            func(*args, **kwargs)
        return caught.exception, time.monotonic() - started

    def assertSaysTooSlow(self, message: str) -> None:
        self.assertIn("too slow", message)
        self.assertRegex(message, r"\b\d+ bytes?\b")          # how much arrived
        self.assertRegex(message, r"\b\d+\.\d+ ?s\b")          # in how long


class RequestDeadlineTest(CleanTestCase):

    def test_trickled_headers_end_at_the_deadline(self) -> None:
        raw = RawServer(self, _hostile.trickled_headers)
        error, took = self.timed_failure(RequestFailed, request, "GET", raw.url + "/",
                                         timeout=0.5, deadline=1.0)
        self.assertLess(took, bound(1.0), str(error))
        self.assertEqual({error_kind(e) for e in error.errors}, {"too slow"}, str(error))
        self.assertSaysTooSlow(str(error))
        self.assertIn("deadline", str(error))

    def test_trickled_chunked_body_ends_at_the_deadline(self) -> None:
        raw = RawServer(self, _hostile.trickled_chunked_body)
        error, took = self.timed_failure(RequestFailed, request, "GET", raw.url + "/",
                                         timeout=0.3, deadline=0.6)
        self.assertLess(took, bound(0.6), str(error))
        self.assertEqual({error_kind(e) for e in error.errors}, {"too slow"}, str(error))
        self.assertSaysTooSlow(str(error))

    def test_timeout_bounds_each_attempt_as_a_whole(self) -> None:
        # No retry, a long deadline: the attempt's own timeout ends it.
        raw = RawServer(self, _hostile.trickled_chunked_body)
        error, took = self.timed_failure(RequestFailed, request, "GET", raw.url + "/",
                                         timeout=0.4, deadline=30, retry=1)
        self.assertLess(took, bound(0.4), str(error))
        self.assertSaysTooSlow(str(error))

    def test_silent_server_is_a_timeout(self) -> None:
        raw = RawServer(self, _hostile.silent)
        error, took = self.timed_failure(RequestFailed, request, "GET", raw.url + "/",
                                         timeout=0.3, deadline=0.6)
        self.assertLess(took, bound(0.6), str(error))
        self.assertEqual({error_kind(e) for e in error.errors}, {"timeout"}, str(error))
        self.assertIn("no answer", str(error))

    def test_huge_content_length_is_refused_not_allocated(self) -> None:
        raw = RawServer(self, _hostile.huge_content_length)
        error, took = self.timed_failure(RequestFailed, request, "GET", raw.url + "/",
                                         timeout=5, deadline=10)
        self.assertLess(took, bound(0), str(error))  # at once, not at the deadline
        message = str(error)
        self.assertIn("10000000000000000", message)
        self.assertIn("64 MiB", message)
        self.assertIn("max_body", message)
        self.assertEqual(len(error.errors), 1, "a body too large is not retried")
        self.assertEqual(error_kind(error.errors[0]), "too large")

    def test_endless_body_stops_at_max_body(self) -> None:
        raw = RawServer(self, _hostile.fast_endless_body)
        error, took = self.timed_failure(RequestFailed, request, "GET", raw.url + "/",
                                         timeout=5, deadline=10, max_body=100000)
        self.assertLess(took, bound(0), str(error))
        self.assertIn("max_body=100000", str(error))

    def test_max_body_argument(self) -> None:
        for value, exc in [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                           (True, TypeError), ("1", TypeError)]:
            with self.subTest(max_body=value):
                with self.assertRaises(exc) as caught:
                    request("GET", "http://127.0.0.1:9/", max_body=value)
                self.assertIn("max_body", str(caught.exception))

    def test_body_at_the_limit_is_accepted(self) -> None:
        raw = RawServer(self, answers(response(b"200 OK", body=b"x" * 1000)))
        self.assertEqual(len(request("GET", raw.url + "/", max_body=1000).body), 1000)


class RetryAfterTest(CleanTestCase):
    """Odd Retry-After values are ignored or capped, never a bare exception."""

    def test_non_ascii_digit_is_ignored(self) -> None:
        raw = RawServer(self, answers(response(b"503 Busy", b"Retry-After: \xb2"),
                                      response(b"200 OK", body=b"ok")))
        answer = request("GET", raw.url + "/", retry=RetryPolicy(backoff=0.01, max_backoff=0.05))
        self.assertEqual((answer.status, answer.attempts, answer.body), (200, 2, b"ok"))

    def test_far_future_dates_are_capped(self) -> None:
        for value in (b"Fri, 31 Dec 9999 23:59:59 GMT",
                      b"Mon, 01 Jan 2100 00:00:00 +9999999999999",
                      b"Fri, 01 Jan 99999 00:00:00 GMT",
                      b"9" * 400):
            with self.subTest(value=value):
                raw = RawServer(self, answers(response(b"503 Busy", b"Retry-After: " + value),
                                              response(b"200 OK", body=b"ok")))
                started = time.monotonic()
                answer = request("GET", raw.url + "/",
                                 retry=RetryPolicy(backoff=0.01, max_backoff=0.05))
                self.assertEqual((answer.status, answer.attempts), (200, 2))
                self.assertLess(time.monotonic() - started, bound(0.05))

    def test_parser_never_raises(self) -> None:
        from harness.http import _retry_after
        for value in ["\xb2", "\u0663", "1e9", "-5", "", " ", "9" * 400, "nan",
                      "Mon, 01 Jan 2100 00:00:00 +9999999999999", "Fri, 01 Jan 99999 00:00:00 GMT",
                      "Fri, 31 Dec 9999 23:59:59 GMT", "Thu, 01 Jan 1970 00:00:00 GMT"]:
            with self.subTest(value=value):
                seconds = _retry_after({"Retry-After": value})
                if seconds is not None:
                    self.assertGreaterEqual(seconds, 0.0)
                    self.assertEqual(RetryPolicy(max_backoff=1.0).delay(1, seconds),
                                     min(seconds, 1.0))
        self.assertEqual(_retry_after({"Retry-After": "7"}), 7.0)


class LoadDeadlineTest(CleanTestCase):

    def test_load_against_a_trickler_ends_at_its_deadline(self) -> None:
        raw = RawServer(self, _hostile.trickled_headers)
        started = time.monotonic()
        result = load(raw.url + "/", requests=20, concurrency=4, timeout=5, deadline=0.6)
        took = time.monotonic() - started
        self.assertLess(took, bound(0.6), str(result))
        self.assertEqual(result.ok, 0)
        self.assertIn("too slow", result.errors, str(result))
        self.assertEqual(set(result.errors) - {"too slow", "not sent (deadline)"}, set(),
                         str(result))

    def test_load_timeout_bounds_each_request(self) -> None:
        raw = RawServer(self, _hostile.trickled_chunked_body)
        result = load(raw.url + "/", requests=4, concurrency=2, timeout=0.3, deadline=30)
        self.assertEqual(result.errors, {"too slow": 4}, str(result))
        self.assertLess(result.duration, bound(0.6), str(result))

    def test_load_huge_body_is_counted(self) -> None:
        raw = RawServer(self, _hostile.huge_content_length)
        result = load(raw.url + "/", requests=4, concurrency=2, timeout=5, deadline=10)
        self.assertEqual(result.errors, {"too large": 4}, str(result))
        self.assertLess(result.duration, bound(0), str(result))


class ProbeDeadlineTest(CleanTestCase):

    def test_probe_of_a_trickler_returns_within_its_timeout(self) -> None:
        raw = RawServer(self, _hostile.trickled_headers)
        started = time.monotonic()
        outcome = HttpCheck().probe(server_like(raw), 0.5)
        took = time.monotonic() - started
        self.assertLess(took, 0.5 + SLACK, outcome)
        self.assertFalse(outcome.ok)
        self.assertEqual(outcome.label, "too slow")
        self.assertRegex(outcome.detail, r"\d+ bytes? in 0\.\d+ ?s")

    def test_probe_of_a_trickled_body_with_a_json_spec(self) -> None:
        raw = RawServer(self, _hostile.trickled_chunked_body)
        started = time.monotonic()
        outcome = HttpCheck(json={"status": "ok"}).probe(server_like(raw), 0.5)
        self.assertLess(time.monotonic() - started, 0.5 + SLACK, outcome)
        self.assertEqual(outcome.label, "too slow", outcome)

    def test_the_checks_own_timeout_caps_the_probe(self) -> None:
        raw = RawServer(self, _hostile.trickled_headers)
        started = time.monotonic()
        outcome = HttpCheck(timeout=0.3).probe(server_like(raw), 30)
        self.assertLess(time.monotonic() - started, bound(0.3), outcome)
        self.assertEqual(outcome.label, "too slow", outcome)

    def test_silent_health_endpoint_is_timed_out(self) -> None:
        raw = RawServer(self, _hostile.silent)
        started = time.monotonic()
        outcome = HttpCheck().probe(server_like(raw), 0.3)
        self.assertLess(time.monotonic() - started, 0.3 + SLACK, outcome)
        self.assertEqual(outcome.label, "timed out", outcome)

    def test_huge_body_with_a_json_spec_is_too_large(self) -> None:
        raw = RawServer(self, _hostile.huge_content_length)
        outcome = HttpCheck(json={"status": "ok"}).probe(server_like(raw), 5)
        self.assertFalse(outcome.ok)
        self.assertIn("too large", outcome.label)
        self.assertIn("1 MiB", outcome.label)
        # Without a JSON spec only the status matters: the body is not read.
        self.assertEqual(HttpCheck().probe(server_like(raw), 5).label, "HTTP 200")


TRICKLING_APP = '''
import os, socket, time
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((os.environ["HOST"], int(os.environ["PORT"])))
listener.listen(16)
print("listening", flush=True)
answer = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok"
while True:
    conn, _ = listener.accept()
    conn.recv(4096)
    for byte in answer:  # one byte per 0.2 s: 8 s per answer
        try:
            conn.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(0.2)
    conn.close()
'''


class StartDeadlineTest(NoLeftoversMixin, unittest.TestCase):

    def test_start_timeout_holds_against_a_trickling_health_endpoint(self) -> None:
        from harness.process import ServerProcess
        server = ServerProcess(TRICKLING_APP, start_timeout=1.0, stop_timeout=5.0)
        started = time.monotonic()
        with self.assertRaises(ServerNotReady) as caught:
            server.start()
        took = time.monotonic() - started
        remove_kept(caught.exception.log_path)
        # Launch and stop cost a little on top of the 1 s; a probe that
        # outlived the deadline would cost 8 s per answer.
        self.assertLess(took, bound(1.0) + 2.0, str(caught.exception))
        self.assertIn("too slow", str(caught.exception))
        self.assertIn("too slow", caught.exception.outcomes)


@unittest.skipUnless(hasattr(socket, "AF_UNIX"), "no Unix sockets here")
class PortServerDeadlineTest(CleanTestCase):

    def test_trickling_port_server_is_given_up_at_its_deadline(self) -> None:
        raw = RawServer(self, _hostile.trickling_portserver, unix=True)
        os.environ[ports.PORTSERVER_VAR] = raw.path
        self.addCleanup(os.environ.pop, ports.PORTSERVER_VAR, None)
        started = time.monotonic()
        with self.assertLogs("harness", logging.WARNING) as logs:
            port = ports.find_free_port()
        took = time.monotonic() - started
        ports.release_port(port)
        self.assertLess(took, bound(1.0))
        message = "\n".join(logs.output)
        self.assertIn(raw.path, message)
        self.assertSaysTooSlow(message)

    def test_silent_port_server(self) -> None:
        raw = RawServer(self, lambda conn, stop: _hostile.hold(stop), unix=True)
        os.environ[ports.PORTSERVER_VAR] = raw.path
        self.addCleanup(os.environ.pop, ports.PORTSERVER_VAR, None)
        started = time.monotonic()
        with self.assertLogs("harness", logging.WARNING) as logs:
            ports.release_port(ports.find_free_port())
        self.assertLess(time.monotonic() - started, bound(1.0))
        self.assertIn("no answer", "\n".join(logs.output))

    def test_answer_without_eof_is_taken_at_its_newline(self) -> None:
        wanted = ports.find_free_port()
        ports.release_port(wanted)

        def answer(conn: socket.socket, stop: threading.Event) -> None:
            conn.recv(64)
            conn.sendall(b"%d\n" % wanted)
            _hostile.hold(stop)  # and keeps the connection open

        raw = RawServer(self, answer, unix=True)
        os.environ[ports.PORTSERVER_VAR] = raw.path
        self.addCleanup(os.environ.pop, ports.PORTSERVER_VAR, None)
        started = time.monotonic()
        port = ports.find_free_port()
        ports.release_port(port)
        self.assertLess(time.monotonic() - started, 0.5 + SLACK)
        self.assertEqual(port, wanted)


class MessagesTest(unittest.TestCase):

    def test_too_slow_message_names_bytes_and_seconds(self) -> None:
        from harness._http_wire import DeadlineExceeded
        error = DeadlineExceeded("reading the answer", received=12, sent=30, elapsed=2.0,
                                 limit=2.0)
        self.assertEqual(error_kind(error), "too slow")
        self.assertTrue(re.search(r"12 bytes .*2\.0+ ?s", str(error)), str(error))
        silent = DeadlineExceeded("waiting for the answer", received=0, sent=30, elapsed=2.0,
                                  limit=2.0)
        self.assertEqual(error_kind(silent), "timeout")
        self.assertIsInstance(silent, socket.timeout)


if __name__ == "__main__":
    unittest.main()
