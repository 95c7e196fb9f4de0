"""Servers on a Unix socket: ``ServerProcess(unix_socket=True)``.

harness makes the socket path in the server's private directory (short
enough for ``sun_path``), passes it as ``$SOCKET_PATH`` and ``{socket}`` in
argv, checks readiness over it, sends ``request()``/``load()`` over it, can
hand over a listening Unix socket, and leases no TCP port at all.
"""
from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
import tempfile
import unittest

from _process_helpers import NoLeftoversMixin

from harness import HttpCheck, LogCheck, ServerProcess, TcpCheck, load, request, start_server
from harness._os import sockets
from harness.errors import HarnessError
from harness.ports import held_ports

HANG = 30.0
UNIX_APP = r'''
import http.server, json, os, socket, socketserver, sys
path = sys.argv[1] if len(sys.argv) > 1 else os.environ["SOCKET_PATH"]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"message": "ok", "path": self.path, "pid": os.getpid(),
                           "host": self.headers.get("Host"),
                           "port_env": "PORT" in os.environ}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def address_string(self):
        return "unix"
    def log_message(self, *args):
        pass

class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

if os.environ.get("LISTEN_PID") == str(os.getpid()):
    server = Server(path, Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=3)
else:
    server = Server(path, Handler)
print("serving on", path, flush=True)
server.serve_forever()
'''


@unittest.skipUnless(hasattr(socket, "AF_UNIX"), "needs Unix sockets")
class UnixSocketServerTest(NoLeftoversMixin, unittest.TestCase):
    def test_app_code_server_on_a_unix_socket(self) -> None:
        leases = held_ports()
        with start_server(UNIX_APP, unix_socket=True,
                          health=HttpCheck(json={"message": "ok"})) as server:
            path = server.socket_path
            self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode))
            self.assertLessEqual(len(os.fsencode(path)), 100)
            self.assertEqual(os.path.dirname(path), os.path.dirname(server.log_path))
            self.assertIsNone(server.port)
            self.assertEqual(held_ports(), leases, "a Unix socket server leases no TCP port")
            self.assertIn(f"unix:{path}", repr(server))
            answer = server.get("/health?x=1").json()
            self.assertEqual((answer["path"], answer["pid"]), ("/health?x=1", server.pid))
            self.assertFalse(answer["port_env"], "no PORT for a Unix socket server")
            self.assertEqual(request("GET", "http://localhost/x", unix_socket=path).status, 200)
            result = load("http://localhost/", unix_socket=path, requests=50, concurrency=4)
            self.assertEqual(result.ok, 50, str(result))
        self.assertFalse(os.path.exists(path), "the socket file outlived the server")

    def test_argv_placeholder_and_tcp_check(self) -> None:
        with ServerProcess(argv=[sys.executable, "-c", UNIX_APP, "{socket}"], unix_socket=True,
                           health=TcpCheck()) as server:
            # TcpCheck is ready once the server listens, which it does before
            # it prints: wait for the line rather than read what is there.
            server.wait_for_log(f"serving on {server.socket_path}", literal=True)

    def test_handoff_of_a_listening_unix_socket(self) -> None:
        with start_server(UNIX_APP, unix_socket=True, handoff=True,
                          health=TcpCheck()) as server:
            # Where Linux's socket tables are not readable, TcpCheck under handoff
            # is ready once it connects to the handed socket: wait for the line.
            server.wait_for_log("serving on", literal=True)
            self.assertEqual(server.get("/").json()["pid"], server.pid)

    @unittest.skipIf(sockets.unix_listeners() is None,
                     "the accept queue of a Unix socket is read from Linux's sock_diag")
    def test_handoff_readiness_means_the_server_accepted(self) -> None:
        slow = "import time\ntime.sleep(0.5)\n" + UNIX_APP
        with start_server(slow, unix_socket=True, handoff=True, health=TcpCheck(),
                          start_timeout=HANG) as server:
            self.assertIn("serving on", server.output(), "ready before the server ran")

    def test_log_check_and_port_arguments_are_refused(self) -> None:
        with start_server(UNIX_APP, unix_socket=True, health=LogCheck("serving on")) as server:
            self.assertTrue(server.running)
        with self.assertRaisesRegex(ValueError, "unix_socket server has no TCP port"):
            ServerProcess(UNIX_APP, unix_socket=True, port=8080)


@unittest.skipUnless(hasattr(socket, "AF_UNIX"), "needs Unix sockets")
class TestChosenSocketPathTest(NoLeftoversMixin, unittest.TestCase):
    """``unix_socket=PATH``: the test chooses where the server's socket goes."""

    def make_dir(self) -> str:
        path = tempfile.mkdtemp(prefix="t-unix-")
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def test_the_server_binds_the_tests_path_and_everything_uses_it(self) -> None:
        path = os.path.join(self.make_dir(), "app.sock")
        leases = held_ports()
        with start_server(UNIX_APP, unix_socket=path,
                          health=HttpCheck(json={"message": "ok"})) as server:
            self.assertEqual(server.socket_path, path)
            self.assertIsNone(server.port)
            self.assertEqual(held_ports(), leases, "no TCP lease")
            self.assertIn(f"unix:{path}", repr(server))
            self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode))
            answer = server.get("/x").json()
            self.assertEqual((answer["path"], answer["port_env"]), ("/x", False))
        self.assertFalse(os.path.exists(path), "the socket file outlived the server")

    def test_argv_placeholder_and_a_path_given_relative(self) -> None:
        directory = self.make_dir()
        here = os.getcwd()
        os.chdir(directory)
        self.addCleanup(os.chdir, here)
        with ServerProcess(argv=[sys.executable, "-c", UNIX_APP, "{socket}"],
                           unix_socket="rel.sock", health=TcpCheck()) as server:
            self.assertEqual(server.socket_path, os.path.join(directory, "rel.sock"))
            server.wait_for_log(f"serving on {server.socket_path}", literal=True)

    def test_handoff_binds_the_tests_path(self) -> None:
        path = os.path.join(self.make_dir(), "handed.sock")
        with start_server(UNIX_APP, unix_socket=path, handoff=True,
                          health=TcpCheck()) as server:
            self.assertEqual(server.get("/").json()["pid"], server.pid)
        self.assertFalse(os.path.exists(path))

    def test_a_path_someone_already_serves_is_refused_and_a_stale_one_replaced(self) -> None:
        directory = self.make_dir()
        busy = os.path.join(directory, "busy.sock")
        holder = socket.socket(socket.AF_UNIX)
        self.addCleanup(holder.close)
        holder.bind(busy)
        holder.listen(1)
        with self.assertRaisesRegex(HarnessError, "already accepts connections"):
            start_server(UNIX_APP, unix_socket=busy, health=TcpCheck())
        stale = os.path.join(directory, "stale.sock")
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(stale)
        dead.close()  # the file stays, nobody accepts: a crashed server's leftover
        with start_server(UNIX_APP, unix_socket=stale, handoff=True, health=TcpCheck()):
            pass
        plain = os.path.join(directory, "plain.txt")
        open(plain, "w").close()
        with self.assertRaisesRegex(HarnessError, "not a socket"):
            start_server(UNIX_APP, unix_socket=plain, health=TcpCheck())
        self.assertTrue(os.path.exists(plain), "a file that is not a socket is left alone")

    def test_bad_paths_are_refused_before_anything_starts(self) -> None:
        directory = self.make_dir()
        cases = [
            (os.path.join(directory, "x" * 120), "more than a Unix socket address holds"),
            (os.path.join(directory, "missing", "s.sock"), "directory does not exist"),
            (directory, "names a directory"),
            ("", "non-empty"),
        ]
        for path, message in cases:
            with self.subTest(path=path), self.assertRaisesRegex(ValueError, message):
                ServerProcess(UNIX_APP, unix_socket=path)
        with self.assertRaisesRegex(TypeError, "unix_socket"):
            ServerProcess(UNIX_APP, unix_socket=3)  # type: ignore[arg-type]


if __name__ == "__main__":
    unittest.main()
