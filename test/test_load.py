"""load(): many requests over keep-alive connections, failures counted by kind."""
from __future__ import annotations

import socket
import threading
import unittest

from _http_servers import Handler, serve
from _support import ipv6_available, open_fds

from harness._config import scaled
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


class LoadTest(unittest.TestCase):

    def setUp(self):
        before = open_fds()
        threads = set(threading.enumerate())

        def nothing_left() -> None:  # runs last, after the server is stopped
            self.assertEqual(open_fds(), before, "fds left open")
            self.assertEqual(set(threading.enumerate()) - threads, set(), "threads left running")

        self.addCleanup(nothing_left)

    def handler(self, base):
        return type("H", (base,), {"requests": 0, "connections": 0, "lock": threading.Lock()})

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
        handler = self.handler(ResettingHandler)
        url = serve(self, handler)
        result = load(url + "/", requests=500, concurrency=16)
        self.assertEqual(handler.requests, 500)
        self.assertEqual((result.ok, result.failed), (450, 50), str(result))
        self.assertEqual(result.errors, {"reset": 50})
        # A worker reconnects after a reset when it has another request to send:
        # k workers that took part open k + 50 - (those whose last request was reset).
        self.assertEqual(result.connections, handler.connections)
        self.assertTrue(50 <= result.connections <= 16 + 50, str(result))
        self.assertEqual(len(result.latencies), 450)
        self.assertIn("failed 50 (reset 50)", str(result))

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
