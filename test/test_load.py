"""load(): many requests over keep-alive connections, failures counted by kind."""
from __future__ import annotations

import socket
import threading
import unittest

from _http_servers import Handler, serve
from _support import ipv6_available, open_fds

from harness import wait_until
from harness._config import scaled
from harness._http_wire import Connection, Target
from harness.http import LoadResult, load


class CountingHandler(Handler):
    """Answers every request; counts requests and connections."""

    lock = threading.Lock()
    requests = 0
    connections = 0

    def setup(self):
        super().setup()
        with self.lock:
            type(self).connections += 1

    def count(self) -> int:
        with self.lock:
            type(self).requests += 1
            return type(self).requests

    def do_GET(self):
        self.count()
        self.reply(200, b'{"status": "ok"}', "application/json")


class ResettingHandler(CountingHandler):
    """Resets the connection (TCP RST, no answer) on every 10th request."""

    def do_GET(self):
        if self.count() % 10 == 0:
            self.reset()
        else:
            self.reply(200, b"ok")


class ResettingPostHandler(ResettingHandler):
    do_POST = ResettingHandler.do_GET  # a POST without a body: nothing more to read


class UnannouncedCloseHandler(CountingHandler):
    """Answers ``answers`` requests per connection (``Content-Length``, never
    ``Connection: close``), then ends the connection unasked: at once
    (``then="close"``, an HTTP/1.1 server entitled to), or after reading the next
    request without answering it (``then="drop"``, a real drop).

    With ``cork`` (Linux TCP_CORK) the last answer and the FIN leave in one TCP
    segment, so the client finds the connection closed before it can reuse it,
    every time; without, the close races with the client's next request.
    """

    answers = 1
    then = "close"
    cork = False
    answered = 0
    dropped = 0

    def setup(self):
        super().setup()
        self.answered_here = 0

    def add(self, name: str) -> None:
        with self.lock:
            setattr(type(self), name, getattr(type(self), name) + 1)

    def do_GET(self):
        self.count()
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.answered_here == self.answers:  # then == "drop"
            self.add("dropped")
            self.drop()
            return
        self.answered_here += 1
        last = self.answered_here == self.answers
        if last and self.cork:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        self.add("answered")  # before the answer: the client may be done once it has it
        self.reply(200, b"ok")
        if last and self.then == "close":
            if self.cork:
                self.connection.shutdown(socket.SHUT_WR)  # sends the corked answer and the FIN
            self.close_connection = True

    do_POST = do_GET


class LoadTestCase(unittest.TestCase):
    """Checks that a test leaves no fd or thread behind; makes handlers with fresh counters."""

    def setUp(self):
        before = open_fds()
        threads = set(threading.enumerate())

        def nothing_left() -> None:  # runs last, after the server is stopped
            self.assertEqual(open_fds(), before, "fds left open")
            self.assertEqual(set(threading.enumerate()) - threads, set(), "threads left running")

        self.addCleanup(nothing_left)

    def handler(self, base, **attributes):
        return type("H", (base,), {"requests": 0, "connections": 0, "lock": threading.Lock(),
                                   **attributes})


class LoadTest(LoadTestCase):

    def test_500_at_concurrency_16_against_a_healthy_threading_server(self):
        handler = self.handler(CountingHandler)
        url = serve(self, handler)
        result = load(url + "/", requests=500, concurrency=16)
        self.assertIsInstance(result, LoadResult)
        self.assertEqual((result.ok, result.failed, result.errors), (500, 0, {}), str(result))
        self.assertEqual(handler.requests, 500)
        # At most one keep-alive connection per worker (a worker that starts
        # after the others took every request opens none): none was dropped.
        self.assertEqual(result.connections, handler.connections)
        self.assertTrue(1 <= result.connections <= 16, str(result))
        self.assertEqual(len(result.latencies), 500)
        self.assertEqual(result.latencies, sorted(result.latencies))
        self.assertTrue(0 < result.p50 <= result.p95 <= result.p99 <= result.latencies[-1])
        self.assertGreater(result.throughput, 0)
        text = str(result)
        self.assertIn("500 requests at concurrency 16", text)
        self.assertIn("ok 500, failed 0", text)
        self.assertIn("p99", text)

    def test_resets_are_counted_by_kind_and_workers_reconnect(self):
        # POST is never resent: every reset the server made is a failure.
        handler = self.handler(ResettingPostHandler)
        url = serve(self, handler)
        result = load(url + "/", requests=500, concurrency=16, method="POST")
        self.assertEqual(handler.requests, 500)
        self.assertEqual((result.ok, result.failed, result.resent), (450, 50, 0), str(result))
        self.assertEqual(result.errors, {"reset": 50})
        # A worker reconnects after a reset when it has another request to send:
        # k workers that took part open k + 50 - (those whose last request was reset).
        self.assertEqual(result.connections, handler.connections)
        self.assertTrue(50 <= result.connections <= 16 + 50, str(result))
        self.assertEqual(len(result.latencies), 450)
        self.assertIn("failed 50 (reset 50)", str(result))

    def test_a_get_reset_on_a_reused_connection_is_resent_once(self):
        # A reset before any answer on a kept-alive connection looks the same as a
        # server closing it just as the request arrived: a GET is resent once, on a
        # new connection.  Every reset the server made is a failure or a resend.
        handler = self.handler(ResettingHandler)
        url = serve(self, handler)
        result = load(url + "/", requests=500, concurrency=16)
        resets = handler.requests // 10
        self.assertEqual(handler.requests, 500 + result.resent, str(result))
        self.assertEqual(result.failed + result.resent, resets, str(result))
        self.assertEqual(result.errors, {"reset": result.failed} if result.failed else {})
        self.assertEqual(result.ok + result.failed, 500)
        self.assertEqual(result.connections, handler.connections)
        if result.resent:
            self.assertIn(f"{result.resent} resent", str(result))

    def test_error_statuses_and_connection_close_answers(self):
        class Handler503(CountingHandler):
            def do_GET(self):
                n = self.count()
                # HTTP/1.0-style "close after answering" on every answer: not an error.
                self.close_connection = True
                if n % 4 == 0:
                    self.reply(503, b"busy", headers={"Connection": "close"})
                else:
                    self.reply(200, b"ok", headers={"Connection": "close"})

        url = serve(self, self.handler(Handler503))
        result = load(url + "/", requests=40, concurrency=4)
        self.assertEqual((result.ok, result.errors), (30, {"status 503": 10}), str(result))
        self.assertEqual(result.connections, 40)
        # expect_status decides what counts as ok.
        result = load(url + "/", requests=8, concurrency=2, expect_status={200, 503})
        self.assertEqual(result.ok, 8)

    def test_refused_connections_against_a_dead_port(self):
        with socket.socket() as placeholder:  # bound, not listening: connects are refused
            placeholder.bind(("127.0.0.1", 0))
            url = "http://127.0.0.1:%d/" % placeholder.getsockname()[1]
            result = load(url, requests=50, concurrency=5)
        self.assertEqual((result.ok, result.failed, result.errors), (0, 50, {"refused": 50}))
        self.assertIsNone(result.p50)
        self.assertEqual(result.throughput, 0)
        self.assertIn("refused 50", str(result))

    def test_bounded_in_time_by_the_deadline(self):
        release = threading.Event()

        class SlowHandler(CountingHandler):
            def do_GET(self):
                self.count()
                release.wait(60)
                self.reply(200, b"late")

        url = serve(self, self.handler(SlowHandler))
        self.addCleanup(release.set)  # before the server stops
        result = load(url + "/", requests=1000, concurrency=4, timeout=30, deadline=0.5)
        self.assertEqual(result.ok, 0)
        self.assertEqual(result.failed, 1000)
        # Each worker that got going timed out at the deadline (it may start one more
        # in the last millisecond); the rest were never sent.
        self.assertEqual(set(result.errors), {"timeout", "not sent (deadline)"}, str(result))
        self.assertTrue(1 <= result.errors["timeout"] <= 40, str(result))
        self.assertLess(result.duration, scaled(20))  # hang-catcher: not 30 s per request

    def test_post_with_a_json_body(self):
        bodies = []

        class EchoHandler(CountingHandler):
            def do_POST(self):
                bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.reply(201, b"created")

        url = serve(self, self.handler(EchoHandler))
        result = load(url + "/items", requests=20, concurrency=3, method="post",
                      json={"n": 1})
        self.assertEqual(result.ok, 20, str(result))
        self.assertEqual(bodies, [b'{"n": 1}'] * 20)

    def test_bad_arguments_name_the_argument(self):
        url = "http://127.0.0.1:9/"
        cases = [
            ((url,), {"requests": 0}, ValueError, "requests"),
            ((url,), {"requests": 1.5}, TypeError, "requests"),
            ((url,), {"concurrency": 0}, ValueError, "concurrency"),
            ((url,), {"timeout": -1}, ValueError, "timeout"),
            ((url,), {"deadline": 0}, ValueError, "deadline"),
            ((url,), {"method": "G T"}, ValueError, "method"),
            ((url,), {"expect_status": "200"}, TypeError, "expect_status"),
            (("http://example.com/",), {}, ValueError, "loopback"),
            (("http://10.0.0.1:80/",), {}, ValueError, "loopback"),
            ((42,), {}, TypeError, "url"),
        ]
        for args, kwargs, error, name in cases:
            with self.subTest(args=args, kwargs=kwargs):
                with self.assertRaises(error) as caught:
                    load(*args, **kwargs)
                self.assertIn(name, str(caught.exception))

    @unittest.skipUnless(ipv6_available(), "no IPv6 loopback here")
    def test_ipv6_loopback(self):
        url = serve(self, self.handler(CountingHandler), host="::1")
        result = load(url + "/", requests=40, concurrency=4)
        self.assertEqual(result.ok, 40, str(result))
        self.assertTrue(1 <= result.connections <= 4, str(result))
        self.assertIn("[::1]", str(result))

    def test_loopback_names_are_accepted(self):
        url = serve(self, self.handler(CountingHandler))
        port = url.rsplit(":", 1)[1]
        self.assertEqual(load(f"http://localhost:{port}/", requests=2, concurrency=1).ok, 2)


class UnannouncedCloseTest(LoadTestCase):
    """A server may close a kept-alive connection at any time without saying so
    (RFC 9112, 9.3.1): a request it never saw is not a failure."""

    def test_server_closing_after_every_answer_without_saying_so(self):
        # Issue 21 item 7: 98 of 200 requests were counted as "disconnected".
        handler = self.handler(UnannouncedCloseHandler)
        url = serve(self, handler)
        result = load(url + "/", requests=200, concurrency=4)
        self.assertEqual((result.ok, result.failed, result.errors), (200, 0, {}), str(result))
        self.assertEqual(handler.requests, 200)  # none lost, none seen twice
        self.assertEqual(handler.answered, 200)
        # One connection per answer; each worker's every later request found its
        # connection closed, before sending (stale) or after (resent).
        self.assertEqual(result.connections, handler.connections)
        self.assertEqual(result.connections, 200)
        self.assertTrue(200 - 4 <= result.stale + result.resent <= 200 - 1, str(result))
        self.assertEqual(len(result.latencies), 200)

    @unittest.skipUnless(hasattr(socket, "TCP_CORK"), "needs TCP_CORK (Linux) to send the "
                         "answer and the close together")
    def test_a_connection_found_closed_is_replaced_before_sending(self):
        # The close arrives with the third answer: the worker sees it before it
        # reuses the connection, so even a POST (never resent) goes through.
        handler = self.handler(UnannouncedCloseHandler, answers=3, cork=True)
        url = serve(self, handler)
        result = load(url + "/", requests=100, concurrency=4, method="POST")
        self.assertEqual((result.ok, result.failed, result.resent), (100, 0, 0), str(result))
        self.assertEqual(handler.requests, 100)
        self.assertEqual(result.connections, handler.connections)
        # Each worker with k requests opened ceil(k / 3) connections and found all
        # but its last one closed.
        self.assertTrue(result.connections - 4 <= result.stale <= result.connections - 1,
                        str(result))
        self.assertGreaterEqual(result.connections, 100 // 3)
        self.assertIn(f"{result.stale} found closed", str(result))

    def test_a_post_is_never_resent(self):
        # Each connection: one answer, then the next request is read and dropped.
        # The server may have acted on a dropped POST: counted, not sent again.
        handler = self.handler(UnannouncedCloseHandler, then="drop")
        url = serve(self, handler)
        result = load(url + "/", requests=200, concurrency=4, method="POST")
        self.assertEqual(handler.requests, 200)  # no duplicates
        self.assertEqual(result.resent, 0)
        self.assertEqual((result.ok, result.failed), (handler.answered, handler.dropped),
                         str(result))
        self.assertEqual(result.errors, {"disconnected": handler.dropped})
        # Every worker alternates answered, dropped: at least (200 - 4) / 2 drops.
        self.assertGreaterEqual(handler.dropped, 98)

    def test_a_post_on_a_connection_closed_under_it_is_counted_not_resent(self):
        # The close races with the next request: whatever reached the server
        # was answered, whatever did not is a failure (of a close kind).
        handler = self.handler(UnannouncedCloseHandler)
        url = serve(self, handler)
        result = load(url + "/", requests=200, concurrency=4, method="POST")
        self.assertEqual(result.resent, 0)
        self.assertEqual(handler.requests, result.ok, str(result))
        self.assertEqual(result.ok + result.failed, 200)
        self.assertLessEqual(set(result.errors), {"disconnected", "reset", "broken pipe"})

    def test_a_real_drop_on_a_new_connection_is_a_failure(self):
        # The server reads every request and closes without answering: each
        # request went out on a new connection, so none is resent.
        handler = self.handler(UnannouncedCloseHandler, answers=0, then="drop")
        url = serve(self, handler)
        result = load(url + "/", requests=50, concurrency=4)
        self.assertEqual((result.ok, result.failed, result.resent), (0, 50, 0), str(result))
        self.assertEqual(result.errors, {"disconnected": 50})
        self.assertEqual(handler.requests, 50)
        self.assertEqual(result.connections, 50)

    def test_a_get_dropped_on_a_reused_connection_is_resent_once(self):
        # A drop after one answer looks the same as a close racing the request:
        # the GET is resent once, on a new connection, and shows in `resent`.
        handler = self.handler(UnannouncedCloseHandler, then="drop")
        url = serve(self, handler)
        result = load(url + "/", requests=200, concurrency=4)
        self.assertEqual((result.ok, result.failed), (200, 0), str(result))
        self.assertEqual(result.resent, handler.dropped)
        self.assertEqual(handler.requests, 200 + result.resent)
        self.assertGreaterEqual(result.resent, 98)
        self.assertIn(f"{result.resent} resent", str(result))


class ConnectionStaleTest(LoadTestCase):
    """Connection.stale(): has the peer closed (or spoken on) an idle connection?"""

    def exchange(self, url: str) -> Connection:
        conn = Target(url + "/").connection()
        self.addCleanup(conn.close)
        conn.arm(scaled(10))
        conn.request("GET", "/")
        answer = conn.getresponse()
        self.assertEqual(answer.read(), b"ok")
        return conn

    def test_an_open_idle_connection_is_not_stale(self):
        conn = self.exchange(serve(self, self.handler(UnannouncedCloseHandler, answers=1000)))
        self.assertFalse(conn.stale())

    @unittest.skipUnless(hasattr(socket, "TCP_CORK"), "needs TCP_CORK (Linux)")
    def test_a_connection_the_server_closed_is_stale(self):
        conn = self.exchange(serve(self, self.handler(UnannouncedCloseHandler, cork=True)))
        self.assertTrue(conn.stale())

    def test_unasked_bytes_make_a_connection_stale(self):
        read, finished = threading.Event(), threading.Event()

        class Chatty(Handler):
            def do_GET(self):
                self.reply(200, b"ok")
                read.wait(60)  # the client has read the answer: the next bytes stay unread
                self.wfile.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
                finished.wait(60)  # the connection stays open

        conn = self.exchange(serve(self, Chatty))
        self.addCleanup(finished.set)  # before the server stops
        self.assertFalse(conn.stale())
        read.set()
        wait_until(conn.stale, timeout=30, what="the unasked bytes to arrive")


class PercentileTest(unittest.TestCase):

    def test_nearest_rank(self):
        result = LoadResult(url="u", method="GET", requests=100, concurrency=1, ok=100,
                            failed=0, errors={}, latencies=[i / 1000 for i in range(1, 101)],
                            duration=2.0, connections=1)
        self.assertEqual((result.p50, result.p95, result.p99), (0.05, 0.095, 0.099))
        self.assertEqual(result.percentile(100), 0.1)
        self.assertEqual(result.throughput, 50.0)
        with self.assertRaises(ValueError):
            result.percentile(0)


if __name__ == "__main__":
    unittest.main()
