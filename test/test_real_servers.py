"""Real third-party servers (gunicorn, uvicorn, Flask, redis) run through harness.

harness's other tests use small stdlib servers; these hold the manual's claims
against the servers people actually run: the handed-off socket is adopted
(gunicorn through its systemd support, uvicorn with ``--fd 3``), readiness
means a real answer, ``stop()`` is graceful and returns the server's true
exit code, and nothing is left behind (processes, workers, port, temp dir,
fds).  Each test is skipped only when its server is not installed.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import unittest
from typing import Dict, List

from _support import open_fds

from harness import HttpCheck, ServerProcess, TcpCheck
from harness._config import scaled
from harness._os import procinfo as _procinfo
from harness._server import supervisor
from harness._wait import Deadline, backoff


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# Every path answers JSON naming the process that served it, so a test can
# tell a worker's answer from the master's.
WSGI_APP = '''\
import json
import os


def app(environ, start_response):
    body = json.dumps({"server": "gunicorn", "path": environ["PATH_INFO"],
                       "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

ASGI_APP = '''\
import json
import os


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({"server": "uvicorn", "path": scope["path"],
                       "pid": os.getpid()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
'''

# The atexit line shows in the log only if the process ended by a clean
# interpreter exit, not by the signal's default action.
FLASK_APP = '''\
import atexit
import os

from flask import Flask

atexit.register(print, "flask app: atexit ran", flush=True)
app = Flask(__name__)


@app.route("/health")
def health():
    return {"status": "ok"}


@app.route("/double/<int:number>")
def double(number):
    return {"number": number, "double": 2 * number}


app.run(host=os.environ["HOST"], port=int(os.environ["PORT"]))
'''

PONG = b"+PONG\r\n"


def redis_call(conn: socket.socket, *args: str) -> bytes:
    """Send one command in RESP and return the raw reply (simple or bulk)."""
    command = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
    conn.sendall(command)
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError(f"redis closed the connection; got {reply!r}")
        reply += chunk
    if reply.startswith(b"$") and not reply.startswith(b"$-1"):
        size = int(reply[1:reply.index(b"\r\n")])
        while len(reply) < reply.index(b"\r\n") + 2 + size + 2:
            chunk = conn.recv(4096)
            if not chunk:
                raise ConnectionError(f"redis closed the connection; got {reply!r}")
            reply += chunk
    return reply


def redis_ping(server: ServerProcess) -> bool:
    """Readiness for redis: it accepts *and* answers PING (it may refuse while loading)."""
    with socket.create_connection((server.host, server.port), timeout=2) as conn:
        return redis_call(conn, "PING") == PONG


class RealServerTestCase(unittest.TestCase):
    """Launching a server, and proving after ``stop()`` that nothing of it is left."""

    def setUp(self) -> None:
        super().setUp()
        # harness keeps its zygote's control socket and the lifeline pipe per test
        # runner, opened on the first start(): open them now so the fd count
        # compares like with like.
        supervisor.zygote(None)
        self.fds_before = open_fds()

    def project(self, files: Dict[str, str]) -> str:
        """A temp directory holding the app's files, removed when the test ends."""
        tmp = tempfile.TemporaryDirectory(prefix="realsrv-")
        self.addCleanup(tmp.cleanup)
        for name, text in files.items():
            with open(os.path.join(tmp.name, name), "w") as f:
                f.write(text)
        return tmp.name

    def launch(self, **kwargs: object) -> ServerProcess:
        server = ServerProcess(**kwargs)  # type: ignore[arg-type]
        self.addCleanup(server.stop)  # idempotent: a no-op after the test's own stop()
        self.assertIs(server.start(), server)
        self.assertTrue(server.running)
        assert server.log_path is not None
        self.assertTrue(os.path.isdir(os.path.dirname(server.log_path)))
        return server

    def process_tree(self, server: ServerProcess) -> Dict[int, str]:
        """pid -> identity token (pid + start time) of the server and its descendants.

        Tokens, not bare pids: after the stop a pid may be reused by anyone.
        """
        assert server.pid is not None
        tree = {}
        for pid in [server.pid] + _procinfo.descendants(server.pid):
            token = _procinfo.identity(pid)
            if token is not None:
                tree[pid] = token
        self.assertIn(server.pid, tree, "the server's own pid must be identifiable")
        return tree

    def wait_for_children(self, server: ServerProcess, count: int) -> List[int]:
        """The server's child processes once there are ``count`` of them."""
        assert server.pid is not None
        deadline = Deadline(scaled(10.0))
        for pause in backoff():
            children = [p for p in _procinfo.descendants(server.pid)
                        if _procinfo.parent_pid(p) == server.pid]
            if len(children) >= count or deadline.expired:
                break
            time.sleep(deadline.cap(pause))
        self.assertEqual(len(children), count,
                         f"{server.name} children {children}; log:\n{server.log_tail()}")
        return children

    def assertListensInTree(self, server: ServerProcess, tree: Dict[int, str]) -> None:
        """The listener on the server's port belongs to the server's own processes."""
        if not _procinfo.HAVE_PROC:
            return  # no portable way to see socket owners without /proc
        assert server.port is not None
        listeners = {h.pid for h in _procinfo.port_holders(server.port) if h.status == "LISTEN"}
        self.assertTrue(listeners, f"nobody listens on port {server.port}")
        self.assertLessEqual(listeners, set(tree),
                             f"port {server.port} listeners {listeners} outside the server's "
                             f"processes {sorted(tree)}")

    def stop_leaving_nothing(self, server: ServerProcess, tree: Dict[int, str]) -> int:
        """``server.stop()``, then prove every trace of the server is gone; its exit code."""
        assert server.log_path is not None and server.port is not None
        private_dir = os.path.dirname(server.log_path)
        # Whether SIGTERM sufficed shows in the exit code the caller checks:
        # harness's SIGKILL after stop_timeout would make it -9.
        returncode = server.stop()
        self.assertIsNotNone(returncode)
        assert returncode is not None
        self.assertEqual(server.returncode, returncode)
        self.assertFalse(server.running)
        survivors = {pid: token for pid, token in tree.items() if _procinfo.is_alive(token)}
        self.assertEqual(survivors, {}, "processes of the server outlived stop()")
        self.assertFalse(os.path.exists(private_dir), "harness's temp dir was not removed")
        self.assertPortClosed(server.host, server.port, tree)
        self.assertEqual(open_fds(), self.fds_before, "fds leaked in the test process")
        self.assertEqual(server.stop(), returncode, "a second stop() changes nothing")
        return returncode

    def assertPortClosed(self, host: str, port: int, tree: Dict[int, str]) -> None:
        """No process of the server accepts on its port any more.

        The port's lease is released by stop(), so a concurrent test runner may
        already have leased it for a server of its own: an answer on the port
        then passes only if it provably comes from a process that is not ours.
        """
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.settimeout(scaled(2.0))
            try:
                sock.connect((host, port))
            except ConnectionRefusedError:
                return
        holders = [h for h in _procinfo.port_holders(port) if h.status == "LISTEN"]
        ours = [h for h in holders if _procinfo.identity(h.pid) in tree.values()]
        self.assertTrue(holders and not ours,
                        f"port {port} still accepts after stop(); listeners: "
                        f"{[h.describe() for h in holders] or 'unknown'}")


@unittest.skipUnless(installed("gunicorn"), "gunicorn is not installed for this interpreter")
class GunicornTest(RealServerTestCase):
    """gunicorn with 2 sync workers, from the running interpreter's environment."""

    def gunicorn(self, *args: str, handoff: bool) -> ServerProcess:
        project = self.project({"wsgi.py": WSGI_APP})
        # gunicorn >= 25.1 opens a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl,
        # else ~/.gunicorn/gunicorn.ctl, shared by every gunicorn of the user:
        # concurrent runs would unlink each other's.  Keep it in the project dir.
        return self.launch(
            argv=[sys.executable, "-m", "gunicorn", "--workers", "2", *args, "wsgi:app"],
            handoff=handoff, cwd=project, env={"XDG_RUNTIME_DIR": project},
            health=HttpCheck("/health", json={"server": "gunicorn"}))

    def check_serving(self, server: ServerProcess) -> Dict[int, str]:
        workers = self.wait_for_children(server, 2)
        tree = self.process_tree(server)
        self.assertLessEqual(set(workers), set(tree))
        self.assertListensInTree(server, tree)
        for path in ("/one", "/two", "/three"):
            answer = server.get(path).json()
            self.assertEqual(answer["server"], "gunicorn")
            self.assertEqual(answer["path"], path)
            self.assertIn(answer["pid"], workers, "a worker, not the master, answers")
        self.assertIn(f"Listening at: http://{server.host}:{server.port}", server.output())
        return tree

    def test_handoff_gunicorn_adopts_fd_3_without_bind(self) -> None:
        server = self.gunicorn(handoff=True)
        self.assertNotIn("--bind", server.command)
        self.assertNotIn("-b", server.command)
        tree = self.check_serving(server)
        # gunicorn's master ends its workers and exits 0 on SIGTERM.
        self.assertEqual(self.stop_leaving_nothing(server, tree), 0)
        self.assertIn("Shutting down: Master", server.output())

    def test_leased_port_with_bind(self) -> None:
        server = self.gunicorn("--bind", "{host}:{port}", handoff=False)
        self.assertIn(f"{server.host}:{server.port}", server.command)
        tree = self.check_serving(server)
        self.assertEqual(self.stop_leaving_nothing(server, tree), 0)
        self.assertIn("Shutting down: Master", server.output())


@unittest.skipUnless(installed("uvicorn"), "uvicorn is not installed for this interpreter")
class UvicornTest(RealServerTestCase):

    def test_handoff_with_fd_3(self) -> None:
        project = self.project({"asgi.py": ASGI_APP})
        server = self.launch(argv=[sys.executable, "-m", "uvicorn", "--fd", "3", "asgi:app"],
                             handoff=True, cwd=project,
                             health=HttpCheck("/health", json={"server": "uvicorn"}))
        tree = self.process_tree(server)
        self.assertListensInTree(server, tree)
        answer = server.get("/items/7").json()
        self.assertEqual(answer, {"server": "uvicorn", "path": "/items/7", "pid": server.pid})
        self.assertIn(f"Uvicorn running on socket ('{server.host}', {server.port})",
                      server.output())
        returncode = self.stop_leaving_nothing(server, tree)
        # uvicorn shuts down gracefully on SIGTERM, then (since 0.29, where
        # Server.capture_signals appeared) re-raises the signal it caught with
        # the default action, so a clean stop ends "killed by SIGTERM", not 0.
        from uvicorn.server import Server
        expected = -signal.SIGTERM if hasattr(Server, "capture_signals") else 0
        self.assertEqual(returncode, expected)
        self.assertIn("Finished server process", server.output(), "graceful shutdown")


@unittest.skipUnless(installed("flask"), "Flask is not installed for this interpreter")
class FlaskDevServerTest(RealServerTestCase):

    def test_app_code_flask(self) -> None:
        server = self.launch(app_code=FLASK_APP,
                             health=HttpCheck("/health", json={"status": "ok"}))
        tree = self.process_tree(server)
        self.assertListensInTree(server, tree)
        self.assertEqual(server.get("/double/21").json(), {"number": 21, "double": 42})
        returncode = self.stop_leaving_nothing(server, tree)
        # Werkzeug's dev server installs no SIGTERM handler; harness's boot script
        # (harness/_launch.py BOOT) turns SIGTERM into SystemExit(128 + 15) in the
        # main thread, which leaves serve_forever() through its finally (the
        # socket is closed) and exits the interpreter normally: atexit runs and
        # the exit code is 143, not -15.
        self.assertEqual(returncode, 128 + signal.SIGTERM)
        self.assertIn("flask app: atexit ran", server.output())


@unittest.skipUnless(shutil.which("redis-server"), "redis-server is not on PATH")
class RedisTest(RealServerTestCase):
    """A server that does not speak HTTP, ready when it answers PING."""

    def test_redis_from_argv(self) -> None:
        # Ready = accepts TCP, then answers PING (a list: every check, in order).
        workdir = self.project({})
        server = self.launch(argv=["redis-server", "--port", "{port}", "--bind", "{host}",
                                   "--save", "", "--appendonly", "no"],
                             cwd=workdir, health=[TcpCheck(), redis_ping])
        self.assertEqual(repr(server.check), "AllChecks(TcpCheck(), CallableCheck('redis_ping'))")
        tree = self.process_tree(server)
        self.assertListensInTree(server, tree)
        with socket.create_connection((server.host, server.port), timeout=scaled(5.0)) as conn:
            self.assertEqual(redis_call(conn, "PING"), PONG)
            self.assertEqual(redis_call(conn, "SET", "greeting", "hello"), b"+OK\r\n")
            self.assertEqual(redis_call(conn, "GET", "greeting"), b"$5\r\nhello\r\n")
        # redis saves nothing with --save "" and exits 0 on SIGTERM.
        self.assertEqual(self.stop_leaving_nothing(server, tree), 0)
        self.assertIn("ready to exit", server.output())
        self.assertEqual(os.listdir(workdir), [], "redis wrote files (a dump) in its cwd")


if __name__ == "__main__":
    unittest.main()
