"""request(), RetryPolicy and Response against stdlib servers that misbehave on purpose."""
from __future__ import annotations

import http.client
import json
import threading
import time
import unittest

from _http_servers import Handler, serve
from _support import ipv6_available, open_fds

from harness._config import scaled
from harness.errors import HarnessError, RequestFailed, ResponseInvalid
from harness.http import IDEMPOTENT_METHODS, Response, RetryPolicy, error_kind, request

FAST = RetryPolicy(backoff=0.001, max_backoff=0.01)


class Counter:
    """A thread-safe call counter shared by a handler class and its test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def next(self) -> int:
        with self._lock:
            self.value += 1
            return self.value


def handler(**methods):
    """A Handler subclass whose do_GET/do_POST/... are the given functions."""
    return type("TestHandler", (Handler,), {f"do_{k}": v for k, v in methods.items()})


class RetryPolicyTest(unittest.TestCase):

    def test_defaults_match_the_contract(self):
        policy = RetryPolicy()
        self.assertEqual(policy.attempts, 5)
        self.assertEqual(policy.retry_on_status, frozenset({502, 503, 504}))
        self.assertEqual(policy.methods, IDEMPOTENT_METHODS)
        self.assertNotIn("POST", policy.methods)
        self.assertTrue(policy.allows("get"))
        self.assertFalse(policy.allows("POST"))

    def test_is_immutable_and_comparable(self):
        policy = RetryPolicy(attempts=3)
        with self.assertRaises(AttributeError):
            policy.attempts = 9
        self.assertEqual(policy, RetryPolicy(attempts=3))
        self.assertEqual(hash(policy), hash(RetryPolicy(attempts=3)))
        changed = policy.replace(methods={"get", "post"})
        self.assertEqual(changed.methods, frozenset({"GET", "POST"}))
        self.assertEqual(policy.attempts, changed.attempts)

    def test_bad_arguments_name_the_argument(self):
        cases = [
            (dict(attempts=0), ValueError, "attempts"),
            (dict(attempts=2.5), TypeError, "attempts"),
            (dict(attempts=True), TypeError, "attempts"),
            (dict(backoff=-1), ValueError, "backoff"),
            (dict(backoff="1"), TypeError, "backoff"),
            (dict(max_backoff=float("inf")), ValueError, "max_backoff"),
            (dict(backoff=2.0, max_backoff=1.0), ValueError, "max_backoff"),
            (dict(jitter=1), TypeError, "jitter"),
            (dict(retry_on_status=503), TypeError, "retry_on_status"),
            (dict(retry_on_status={503, 700}), ValueError, "retry_on_status"),
            (dict(methods="GET"), TypeError, "methods"),
            (dict(methods={"GET", "BAD METHOD"}), ValueError, "methods"),
        ]
        for kwargs, error, name in cases:
            with self.subTest(**kwargs):
                with self.assertRaises(error) as caught:
                    RetryPolicy(**kwargs)
                self.assertIn(name, str(caught.exception))

    def test_backoff_doubles_up_to_the_cap_and_retry_after_is_capped(self):
        policy = RetryPolicy(backoff=0.1, max_backoff=0.5, jitter=False)
        self.assertEqual([policy.delay(n) for n in (1, 2, 3, 4, 50)], [0.1, 0.2, 0.4, 0.5, 0.5])
        self.assertEqual(policy.delay(1, retry_after=0), 0.0)
        self.assertEqual(policy.delay(1, retry_after=120), 0.5)
        jittered = RetryPolicy(backoff=0.1, max_backoff=0.5)
        for _ in range(100):
            self.assertTrue(0.05 <= jittered.delay(1) <= 0.1)


class RetryAfterTest(unittest.TestCase):

    def test_seconds_dates_and_garbage(self):
        from harness.http import _retry_after
        self.assertEqual(_retry_after({"Retry-After": " 3 "}), 3.0)
        self.assertEqual(_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), 0.0)
        future = _retry_after({"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"})
        self.assertGreater(future, 3600)
        self.assertEqual(RetryPolicy(max_backoff=1.0).delay(1, future), 1.0)  # capped
        self.assertIsNone(_retry_after({"Retry-After": "soon"}))
        self.assertIsNone(_retry_after({}))


class RequestArgumentsTest(unittest.TestCase):
    """Every mistake is a TypeError/ValueError naming the argument, before any connection."""

    def test_bad_arguments(self):
        url = "http://127.0.0.1:9/"
        cases = [
            (("GET", 8080), {}, TypeError, "url"),
            (("GET", "ftp://127.0.0.1/"), {}, ValueError, "http://"),
            (("GET", "http://127.0.0.1:99999/"), {}, ValueError, "url"),
            (("GET", "http:///path"), {}, ValueError, "host"),
            ((1, url), {}, TypeError, "method"),
            (("GE T", url), {}, ValueError, "method"),
            (("GET", url), {"timeout": 0}, ValueError, "timeout"),
            (("GET", url), {"timeout": "5"}, TypeError, "timeout"),
            (("GET", url), {"deadline": -1}, ValueError, "deadline"),
            (("GET", url), {"retry": "twice"}, TypeError, "retry"),
            (("GET", url), {"retry": 0}, ValueError, "attempts"),
            (("POST", url), {"body": b"x", "json": {}}, ValueError, "body or json"),
            (("POST", url), {"body": 12}, TypeError, "body"),
            (("GET", url), {"headers": ["a"]}, TypeError, "headers"),
            (("GET", url), {"expect_status": "200"}, TypeError, "expect_status"),
            (("GET", url), {"expect_status": 99}, ValueError, "expect_status"),
            (("GET", url), {"expect_json": ["message"]}, TypeError, "expect_json"),
            (("GET", url), {"diagnostics": "tail"}, TypeError, "diagnostics"),
        ]
        for args, kwargs, error, name in cases:
            with self.subTest(args=args, kwargs=kwargs):
                with self.assertRaises(error) as caught:
                    request(*args, **kwargs)
                self.assertIn(name, str(caught.exception))


class RetryTest(unittest.TestCase):

    def setUp(self):
        self.calls = Counter()
        before = open_fds()
        # Registered first, so it runs last: after the test's server is stopped.
        self.addCleanup(lambda: self.assertEqual(open_fds(), before, "fds left open"))

    def test_connections_dropped_twice_then_answered(self):
        calls = self.calls

        def do_GET(self):
            if calls.next() <= 2:
                self.drop()
            else:
                self.reply(200, b"third time")

        url = serve(self, handler(GET=do_GET))
        response = request("GET", url + "/", retry=FAST)
        self.assertEqual((response.status, response.body, response.attempts),
                         (200, b"third time", 3))
        self.assertEqual(calls.value, 3)

    def test_503_with_retry_after_zero_twice_then_200(self):
        calls = self.calls

        def do_GET(self):
            if calls.next() <= 2:
                self.reply(503, b"starting", headers={"Retry-After": "0"})
            else:
                self.reply(200, b'{"status": "ok"}', "application/json")

        url = serve(self, handler(GET=do_GET))
        # A large backoff that Retry-After: 0 must override: without it this waits 20 s.
        response = request("GET", url + "/health", timeout=30,
                           retry=RetryPolicy(backoff=10, max_backoff=10),
                           expect_status=200, expect_json={"status": "ok"})
        self.assertEqual(response.attempts, 3)
        self.assertLess(response.elapsed, 10)  # hang-catcher: the 10 s backoff was never waited

    def test_retried_status_that_persists_is_returned_or_fails_expect_status(self):
        def do_GET(self):
            self.reply(503, b"still starting", headers={"Retry-After": "0"})

        url = serve(self, handler(GET=do_GET))
        response = request("GET", url + "/", retry=3)
        self.assertEqual((response.status, response.attempts), (503, 3))
        with self.assertRaises(ResponseInvalid) as caught:
            request("GET", url + "/", retry=3, expect_status=200)
        message = str(caught.exception)
        self.assertIn("503", message)
        self.assertIn("after 3 attempts", message)
        self.assertIn("still starting", message)
        self.assertEqual(caught.exception.response.status, 503)

    def test_failed_post_is_not_replayed_by_default(self):
        calls = self.calls

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            calls.next()
            self.drop()

        url = serve(self, handler(POST=do_POST))
        with self.assertRaises(RequestFailed) as caught:
            request("POST", url + "/orders", json={"item": 1}, retry=FAST)
        self.assertEqual(calls.value, 1, "the POST was replayed")
        self.assertEqual(len(caught.exception.errors), 1)
        self.assertIn("never replayed", str(caught.exception))
        self.assertIn("POST", str(caught.exception))

    def test_post_is_retried_when_the_policy_allows_it(self):
        calls = self.calls

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if calls.next() <= 2:
                self.drop()
            else:
                self.reply(201, body, "application/json")

        url = serve(self, handler(POST=do_POST))
        policy = FAST.replace(methods=IDEMPOTENT_METHODS | {"POST"})
        response = request("POST", url + "/orders", json={"item": 1}, retry=policy,
                           expect_status=201, expect_json={"item": 1})
        self.assertEqual((calls.value, response.attempts), (3, 3))

    def test_refused_post_is_retried_because_nothing_was_sent(self):
        # A port nobody listens on: bind without listen, so connects are refused.
        import socket
        with socket.socket() as placeholder:
            placeholder.bind(("127.0.0.1", 0))
            url = "http://127.0.0.1:%d/" % placeholder.getsockname()[1]
            with self.assertRaises(RequestFailed) as caught:
                request("POST", url, body=b"x", retry=FAST.replace(attempts=3))
        self.assertEqual([error_kind(e) for e in caught.exception.errors], ["refused"] * 3)
        self.assertIsInstance(caught.exception.errors[0], ConnectionRefusedError)
        message = str(caught.exception)
        self.assertIn(url, message)
        self.assertIn("failed after 3 attempts", message)
        self.assertEqual(message.count("refused (ConnectionRefusedError"), 3)
        self.assertIn("no attempts left", message)

    def test_slow_server_times_out_within_the_deadline_not_attempts_times_timeout(self):
        release = threading.Event()
        calls = self.calls

        def do_GET(self):
            calls.next()
            release.wait(60)
            self.reply(200, b"too late")

        url = serve(self, handler(GET=do_GET))
        self.addCleanup(release.set)  # runs before the server is stopped
        started = time.monotonic()
        with self.assertRaises(RequestFailed) as caught:
            request("GET", url + "/slow", timeout=1.0, deadline=1.5, retry=FAST)
        took = time.monotonic() - started
        # attempts x timeout would be 5 s; the deadline keeps it near 1.5 s.
        self.assertLess(took, scaled(4.5))
        kinds = [error_kind(e) for e in caught.exception.errors]
        self.assertIn(len(kinds), (1, 2, 3))  # 1 s, then what is left of 1.5 s
        self.assertEqual(set(kinds), {"timeout"})
        self.assertIn(f"deadline of {scaled(1.5):.3f}s was reached", str(caught.exception))

    def test_diagnostics_are_appended_to_errors(self):
        def do_GET(self):
            self.reply(404, b"no such page")

        url = serve(self, handler(GET=do_GET))
        with self.assertRaises(ResponseInvalid) as caught:
            request("GET", url + "/x", expect_status=200, diagnostics=lambda: "server log: boom")
        self.assertTrue(str(caught.exception).endswith("server log: boom"))
        with self.assertRaises(ResponseInvalid) as caught:
            request("GET", url + "/x", expect_status=200, diagnostics=lambda: 1 / 0)
        self.assertIn("diagnostics failed: ZeroDivisionError", str(caught.exception))


class ValidationTest(unittest.TestCase):
    BODY = {"msg": "hello", "count": "3", "ok": True, "data": {"items": [1, 2]}}

    @classmethod
    def setUpClass(cls):
        body = json.dumps(cls.BODY).encode()

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/text":
                self.reply(200, b"<html>not json</html>", "text/html")
            elif path == "/latin1":
                self.reply(200, "caf\u00e9".encode("latin-1"), "text/plain; charset=latin-1")
            else:
                self.reply(200, body, "application/json")

        cls.url = serve(cls, handler(GET=do_GET))

    def test_missing_key_is_named_never_a_bare_keyerror(self):
        with self.assertRaises(ResponseInvalid) as caught:
            request("GET", self.url + "/", expect_json={"message": str})
        message = str(caught.exception)
        self.assertNotIsInstance(caught.exception, KeyError)
        self.assertIn("JSON key 'message' is missing", message)
        self.assertIn("'msg'", message)  # the keys that are there
        self.assertIn("200", message)
        self.assertIn('"msg": "hello"', message)  # body excerpt
        self.assertEqual(caught.exception.response.status, 200)

    def test_wrong_type_wrong_value_nested_and_predicates(self):
        cases = [
            ({"count": int}, "JSON key 'count' should be of type int, got str '3'"),
            ({"ok": int}, "JSON key 'ok' should be of type int, got bool True"),
            ({"msg": "bye"}, "JSON key 'msg' should be 'bye', got 'hello'"),
            ({"count": 3}, "JSON key 'count' should be 3, got '3'"),
            ({"data": {"items": str}}, "JSON key 'data'['items'] should be of type str"),
            ({"data": {"total": int}}, "JSON key 'data'['total'] is missing"),
            ({"msg": {"x": 1}}, "JSON key 'msg' should be a JSON object"),
            ({"data": {"items": lambda v: len(v) > 5}}, "failed the check <lambda>"),
            (lambda doc: doc["nope"], "failed the check <lambda>: KeyError"),
        ]
        for spec, expected in cases:
            with self.subTest(spec=spec):
                with self.assertRaises(ResponseInvalid) as caught:
                    request("GET", self.url + "/", expect_json=spec)
                self.assertIn(expected, str(caught.exception))

    def test_matching_specs_pass(self):
        response = request("GET", self.url + "/", expect_status=range(200, 300), expect_json={
            "msg": str, "count": (int, str), "ok": True, "data": {"items": list},
        })
        self.assertEqual(response.json(), self.BODY)
        request("GET", self.url + "/", expect_status={200, 204},
                expect_json=lambda doc: doc["ok"])

    def test_body_that_is_not_json(self):
        response = request("GET", self.url + "/text", expect_status=200)
        with self.assertRaises(ResponseInvalid) as caught:
            response.json()
        self.assertIn("not valid JSON", str(caught.exception))
        self.assertIn("<html>not json</html>", str(caught.exception))
        with self.assertRaises(ResponseInvalid):
            request("GET", self.url + "/text", expect_json={"a": 1})

    def test_response_attributes(self):
        response = request("GET", self.url + "/latin1", params={"q": "a b"})
        self.assertIsInstance(response, Response)
        self.assertEqual(response.text, "caf\u00e9")
        self.assertEqual(response.headers["content-type"], "text/plain; charset=latin-1")
        self.assertEqual((response.status, response.reason, response.attempts), (200, "OK", 1))
        self.assertTrue(response.ok)
        self.assertGreater(response.elapsed, 0)
        self.assertTrue(response.url.endswith("/latin1?q=a+b"))
        self.assertIn("200 OK", repr(response))

    def test_status_mismatch_names_expected_and_actual(self):
        with self.assertRaises(ResponseInvalid) as caught:
            request("GET", self.url + "/", expect_status=(201, 204))
        self.assertIn("answered 200 OK, expected status one of 201, 204", str(caught.exception))


@unittest.skipUnless(ipv6_available(), "no IPv6 loopback here")
class Ipv6Test(unittest.TestCase):

    def test_request_to_an_ipv6_literal(self):
        def do_GET(self):
            self.reply(200, self.headers["Host"].encode())

        url = serve(self, handler(GET=do_GET), host="::1")
        self.assertTrue(url.startswith("http://[::1]:"))
        response = request("GET", url + "/")
        self.assertEqual(response.text, url[len("http://"):])  # Host header keeps the brackets


class ErrorKindTest(unittest.TestCase):

    def test_names(self):
        import socket
        self.assertEqual(error_kind(http.client.RemoteDisconnected("x")), "disconnected")
        self.assertEqual(error_kind(ConnectionResetError()), "reset")
        self.assertEqual(error_kind(ConnectionRefusedError()), "refused")
        self.assertEqual(error_kind(socket.timeout()), "timeout")
        self.assertEqual(error_kind(http.client.BadStatusLine("x")), "protocol error")
        self.assertTrue(issubclass(RequestFailed, HarnessError))


if __name__ == "__main__":
    unittest.main()
