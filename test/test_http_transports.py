"""HTTPS (verify=) and Unix-socket transports for request(), load() and HttpCheck,
and HttpCheck(status=None / range / collection)."""
from __future__ import annotations

import os
import pathlib
import shutil
import socket
import ssl
import tempfile
import threading
import time
import unittest

import _hostile
from _hostile import RawServer, server_like
from _http_servers import Handler, self_signed_cert, serve, serve_unix, server_tls_context
from _support import open_fds

from harness._config import scaled
from harness._http_wire import ssl_context
from harness.checks import HttpCheck
from harness.errors import RequestFailed
from harness.http import error_kind, load, request

SLACK = 1.0


class EchoHandler(Handler):
    """Answers every GET with its Host header and path; /503 with a 503."""

    def do_GET(self) -> None:
        if self.path == "/503":
            self.reply(503, b"busy")
        else:
            self.reply(200, f"{self.headers['Host']} {self.path}".encode())

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.reply(201, body)


class UnannouncedCloseHandler(EchoHandler):
    """Closes the connection after each answer, without saying "Connection: close"."""

    def do_GET(self) -> None:
        super().do_GET()
        self.close_connection = True


class NoLeftovers(unittest.TestCase):
    def setUp(self) -> None:
        fds = open_fds()
        threads = set(threading.enumerate())

        def nothing_left() -> None:
            self.assertEqual(set(threading.enumerate()) - threads, set(), "threads left")
            self.assertEqual(open_fds(), fds, "fds left open")

        self.addCleanup(nothing_left)


class Certificate:
    """One self-signed certificate for the module (made once, removed at the end)."""

    directory = ""
    cert = key = ""

    @classmethod
    def make(cls) -> None:
        if cls.cert:
            return
        cls.directory = tempfile.mkdtemp(prefix="harness-test-tls-")
        made = self_signed_cert(cls.directory)
        if made is None:
            shutil.rmtree(cls.directory, True)
            raise unittest.SkipTest("no openssl program here to make a test certificate")
        cls.cert, cls.key = made


def tearDownModule() -> None:
    if Certificate.directory:
        shutil.rmtree(Certificate.directory, True)


class HttpsTest(NoLeftovers):

    @classmethod
    def setUpClass(cls) -> None:
        Certificate.make()
        cls.server_context = server_tls_context(Certificate.cert, Certificate.key)

    def setUp(self) -> None:
        super().setUp()
        self.url = serve(self, EchoHandler, tls=self.server_context)
        self.assertTrue(self.url.startswith("https://127.0.0.1:"))

    def test_verify_with_the_ca_file(self) -> None:
        answer = request("GET", self.url + "/x?y=1", verify=Certificate.cert,
                         expect_status=200)
        port = self.url.rsplit(":", 1)[1]
        self.assertEqual(answer.text, f"127.0.0.1:{port} /x?y=1")
        path_like = pathlib.Path(Certificate.cert)
        self.assertEqual(request("GET", self.url + "/", verify=path_like).status, 200)

    def test_verify_false_and_a_context(self) -> None:
        self.assertEqual(request("GET", self.url + "/", verify=False).status, 200)
        context = ssl.create_default_context(cafile=Certificate.cert)
        self.assertEqual(request("POST", self.url + "/", body=b"hi", verify=context).body,
                         b"hi")

    def test_default_verification_rejects_a_self_signed_certificate_once(self) -> None:
        started = time.monotonic()
        with self.assertRaises(RequestFailed) as caught:
            request("GET", self.url + "/", timeout=5)
        self.assertLess(time.monotonic() - started, scaled(5) + SLACK)
        error = caught.exception
        self.assertEqual([error_kind(e) for e in error.errors], ["TLS certificate"],
                         "a rejected certificate is not retried")
        self.assertIn("verify=False", str(error))
        self.assertIn("certificate", str(error))

    def test_load_over_https(self) -> None:
        result = load(self.url + "/", requests=40, concurrency=4, verify=Certificate.cert)
        self.assertEqual(result.ok, 40, str(result))
        self.assertLessEqual(result.connections, 4, str(result))
        self.assertEqual((result.stale, result.resent), (0, 0), str(result))
        rejected = load(self.url + "/", requests=4, concurrency=2)
        self.assertEqual(rejected.errors, {"TLS certificate": 4}, str(rejected))

    def test_load_over_https_when_the_server_closes_unannounced(self) -> None:
        url = serve(self, UnannouncedCloseHandler, tls=self.server_context)
        result = load(url + "/", requests=100, concurrency=4, verify=Certificate.cert)
        self.assertEqual((result.ok, result.failed), (100, 0), str(result))
        self.assertEqual(result.connections, 100, str(result))
        self.assertTrue(100 - 4 <= result.stale + result.resent <= 100 - 1, str(result))

    def test_http_check_over_https(self) -> None:
        host, port = self.url[len("https://"):].rsplit(":", 1)
        trusted = ssl_context(Certificate.cert)
        server = type("S", (), {"host": host, "port": int(port), "url": self.url,
                                "ssl_context": trusted})()
        self.assertEqual(HttpCheck().probe(server, 5).label, "HTTP 200")
        server.ssl_context = None  # the system's CAs: this certificate is not among them
        outcome = HttpCheck().probe(server, 5)
        self.assertFalse(outcome.ok)
        self.assertEqual(outcome.label, "TLS certificate rejected", outcome)
        server.ssl_context = ssl_context(False)
        self.assertTrue(HttpCheck().probe(server, 5).ok)

    def test_https_url_against_a_plain_http_server(self) -> None:
        plain = serve(self, EchoHandler)
        server = type("S", (), {"host": "127.0.0.1", "port": int(plain.rsplit(":", 1)[1]),
                                "url": plain.replace("http://", "https://")})()
        outcome = HttpCheck().probe(server, 5)
        self.assertFalse(outcome.ok)
        self.assertTrue(outcome.label.startswith("TLS error"), outcome)
        with self.assertRaises(RequestFailed) as caught:
            request("GET", server.url + "/", verify=False, retry=2)
        self.assertEqual({error_kind(e) for e in caught.exception.errors}, {"TLS error"})

    def test_a_trickle_over_tls_ends_at_the_deadline(self) -> None:
        raw = RawServer(self, _hostile.trickled_headers, tls=self.server_context)
        started = time.monotonic()
        with self.assertRaises(RequestFailed) as caught:
            request("GET", raw.url + "/", timeout=0.3, deadline=0.6, verify=False)
        self.assertLess(time.monotonic() - started, scaled(0.6) + SLACK)
        self.assertEqual({error_kind(e) for e in caught.exception.errors}, {"too slow"})
        probe_started = time.monotonic()
        outcome = HttpCheck().probe(server_like(raw, ssl_context=ssl_context(False)), 0.3)
        self.assertLess(time.monotonic() - probe_started, 0.3 + SLACK)
        self.assertEqual(outcome.label, "too slow", outcome)

    def test_a_stalled_handshake_ends_at_the_deadline(self) -> None:
        # A TCP server that accepts and never speaks TLS: the handshake waits.
        raw = RawServer(self, _hostile.silent)
        started = time.monotonic()
        with self.assertRaises(RequestFailed) as caught:
            request("GET", raw.url.replace("http://", "https://") + "/", timeout=0.3,
                    deadline=0.6, verify=False)
        self.assertLess(time.monotonic() - started, scaled(0.6) + SLACK)
        self.assertEqual({error_kind(e) for e in caught.exception.errors}, {"timeout"})
        self.assertIn("TLS handshake", str(caught.exception))


class VerifyArgumentTest(unittest.TestCase):

    def test_bad_values_name_the_argument(self) -> None:
        url = "https://127.0.0.1:9/"
        for value, exc in [(1, TypeError), (None, TypeError), (b"ca.pem", TypeError),
                           ("", TypeError), ("/no/such/ca.pem", ValueError)]:
            with self.subTest(verify=value):
                with self.assertRaises(exc) as caught:
                    request("GET", url, verify=value)
                self.assertIn("verify", str(caught.exception))
                with self.assertRaises(exc):
                    load(url, verify=value)
                with self.assertRaises(exc):
                    ssl_context(value)

    def test_a_file_that_is_not_a_ca_bundle(self) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as junk:
            junk.write("not a certificate\n")
            junk.flush()
            with self.assertRaises(ValueError) as caught:
                ssl_context(junk.name)
            self.assertIn("verify", str(caught.exception))

    def test_values(self) -> None:
        self.assertIsNone(ssl_context(True))  # None: the default, the system's CAs
        unverified = ssl_context(False)
        self.assertEqual(unverified.verify_mode, ssl.CERT_NONE)
        self.assertIs(ssl_context(False), unverified)  # shared, made once
        context = ssl.create_default_context()
        self.assertIs(ssl_context(context), context)


@unittest.skipUnless(hasattr(socket, "AF_UNIX"), "no Unix sockets here")
class UnixSocketTest(NoLeftovers):

    def setUp(self) -> None:
        super().setUp()
        self.path = serve_unix(self, EchoHandler)

    def test_request_over_a_unix_socket(self) -> None:
        answer = request("GET", "http://localhost/health?x=1", unix_socket=self.path)
        self.assertEqual(answer.text, "localhost /health?x=1")  # Host from the URL
        answer = request("POST", "http://api.internal:8080/items", json={"a": 1},
                         unix_socket=self.path, expect_status=201)
        self.assertEqual(answer.json(), {"a": 1})

    def test_load_over_a_unix_socket_any_host(self) -> None:
        result = load("http://localhost/", requests=40, concurrency=4, unix_socket=self.path)
        self.assertEqual(result.ok, 40, str(result))
        self.assertEqual((result.stale, result.resent), (0, 0), str(result))
        # The loopback-only rule is about where traffic goes: a Unix socket is local.
        result = load("http://example.com/", requests=4, concurrency=2, unix_socket=self.path)
        self.assertEqual(result.ok, 4, str(result))
        with self.assertRaises(ValueError):
            load("http://example.com/", requests=4)

    def test_load_when_the_server_closes_unannounced(self) -> None:
        path = serve_unix(self, UnannouncedCloseHandler)
        result = load("http://localhost/", requests=100, concurrency=4, unix_socket=path)
        self.assertEqual((result.ok, result.failed), (100, 0), str(result))
        self.assertEqual(result.connections, 100, str(result))
        self.assertTrue(100 - 4 <= result.stale + result.resent <= 100 - 1, str(result))

    def test_http_check_uses_socket_path(self) -> None:
        server = type("S", (), {"host": "127.0.0.1", "port": 9, "url": "http://127.0.0.1:9",
                                "socket_path": self.path})()
        self.assertEqual(HttpCheck().probe(server, 5), HttpCheck().probe(server, 5))
        self.assertTrue(HttpCheck().probe(server, 5).ok)
        self.assertEqual(HttpCheck("/503", status=None).probe(server, 5).label, "HTTP 503")
        server.socket_path = os.path.join(os.path.dirname(self.path), "missing.sock")
        self.assertEqual(HttpCheck().probe(server, 5).label, "no such socket file")

    def test_missing_socket_and_bad_argument(self) -> None:
        missing = os.path.join(os.path.dirname(self.path), "missing.sock")
        with self.assertRaises(RequestFailed) as caught:
            request("GET", "http://localhost/", unix_socket=missing, retry=2)
        self.assertIn(missing, str(caught.exception))
        with self.assertRaises(TypeError) as caught_type:
            request("GET", "http://localhost/", unix_socket=3)
        self.assertIn("unix_socket", str(caught_type.exception))
        with self.assertRaises(TypeError):
            load("http://localhost/", unix_socket=b"/tmp/x")
        for call in (lambda: request("GET", "http://localhost/", unix_socket="/tmp/a\0b"),
                     lambda: load("http://localhost/", unix_socket="/tmp/a\0b")):
            with self.assertRaisesRegex(ValueError, "unix_socket contains a NUL byte"):
                call()  # at once: not five connection attempts to a path that cannot be

    def test_trickle_over_a_unix_socket_ends_at_the_deadline(self) -> None:
        raw = RawServer(self, _hostile.trickled_headers, unix=True)
        started = time.monotonic()
        with self.assertRaises(RequestFailed) as caught:
            request("GET", raw.url + "/", timeout=0.3, deadline=0.6, unix_socket=raw.path)
        self.assertLess(time.monotonic() - started, scaled(0.6) + SLACK)
        self.assertEqual({error_kind(e) for e in caught.exception.errors}, {"too slow"})
        started = time.monotonic()
        result = load(raw.url + "/", requests=4, concurrency=2, timeout=5, deadline=0.5,
                      unix_socket=raw.path)
        self.assertLess(time.monotonic() - started, scaled(0.5) + SLACK)
        self.assertIn("too slow", result.errors, str(result))
        started = time.monotonic()
        outcome = HttpCheck().probe(server_like(raw), 0.3)
        self.assertLess(time.monotonic() - started, 0.3 + SLACK)
        self.assertEqual(outcome.label, "too slow", outcome)


UNIX_APP = """
import http.server, os, socketserver

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("%s %s" % (self.headers["Host"], self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def address_string(self):
        return "unix"
    def log_message(self, *args):
        pass

socketserver.UnixStreamServer(os.environ["SOCKET_PATH"], Handler).serve_forever()
"""

HTTPS_APP = """
import http.server, os, ssl

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass

context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(os.environ["CERT"], os.environ["KEY"])
server = http.server.HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


class ServerProcessTransportTest(unittest.TestCase):
    """ServerProcess(unix_socket=True / https=True) probes and requests through this module."""

    def test_unix_socket_server(self) -> None:
        if not hasattr(socket, "AF_UNIX"):
            self.skipTest("no Unix sockets here")
        from harness.process import start_server
        with start_server(UNIX_APP, unix_socket=True, start_timeout=30) as server:
            self.assertTrue(server.socket_path)
            self.assertTrue(server.check.probe(server, 5).ok)
            answer = server.get("/health?x=1")
            self.assertEqual(answer.status, 200)
            self.assertTrue(answer.text.endswith(" /health?x=1"), answer.text)
            result = load(server.url + "/", requests=20, concurrency=2,
                          unix_socket=server.socket_path)
            self.assertEqual(result.ok, 20, str(result))

    def test_https_server(self) -> None:
        Certificate.make()
        from harness.process import start_server
        env = {"CERT": Certificate.cert, "KEY": Certificate.key}
        with start_server(HTTPS_APP, https=True, verify=Certificate.cert, env=env,
                          start_timeout=30) as server:
            self.assertTrue(server.url.startswith("https://"), server.url)
            self.assertEqual(server.get("/health").text, "ok")
            self.assertEqual(request("GET", server.url + "/", verify=Certificate.cert).text, "ok")


class StatusSpecTest(NoLeftovers):

    def setUp(self) -> None:
        super().setUp()
        url = serve(self, EchoHandler)
        self.server = type("S", (), {"host": "127.0.0.1", "port": int(url.rsplit(":", 1)[1]),
                                     "url": url})()

    def probe(self, check: HttpCheck) -> str:
        outcome = check.probe(self.server, 5)
        return ("ok " if outcome.ok else "not ready ") + outcome.label

    def test_any_answer_is_ready_with_status_none(self) -> None:
        self.assertEqual(self.probe(HttpCheck("/503", status=None)), "ok HTTP 503")
        self.assertEqual(self.probe(HttpCheck("/", status=None)), "ok HTTP 200")

    def test_ranges_and_collections(self) -> None:
        self.assertEqual(self.probe(HttpCheck("/503", status=range(200, 600))), "ok HTTP 503")
        self.assertEqual(self.probe(HttpCheck("/503", status=range(200, 300))),
                         "not ready HTTP 503")
        self.assertEqual(self.probe(HttpCheck("/", status={200, 204})), "ok HTTP 200")
        self.assertEqual(self.probe(HttpCheck("/503", status=[200, 204])), "not ready HTTP 503")
        self.assertEqual(self.probe(HttpCheck("/", status=200)), "ok HTTP 200")

    def test_repr(self) -> None:
        self.assertEqual(repr(HttpCheck()), "HttpCheck('/health', status=200)")
        self.assertEqual(repr(HttpCheck(status=None)), "HttpCheck('/health', status=None)")
        self.assertEqual(repr(HttpCheck(status=range(200, 400))),
                         "HttpCheck('/health', status=range(200, 400))")
        self.assertEqual(repr(HttpCheck(status=[204, 200])),
                         "HttpCheck('/health', status={200, 204})")

    def test_bad_status_values(self) -> None:
        for value, exc in [("200", TypeError), (700, ValueError), (True, TypeError),
                           ([200, "x"], TypeError), ([], ValueError), (range(0, 1000), ValueError),
                           (range(200, 300, 2), ValueError), (range(300, 200), ValueError),
                           (2.5, TypeError)]:
            with self.subTest(status=value):
                with self.assertRaises(exc) as caught:
                    HttpCheck(status=value)
                self.assertIn("status", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
