"""A server is a function in the test module: ``ServerProcess(target=f, args=..., kwargs=...)``.

The function is pickled by reference (module and qualified name, as
multiprocessing's spawn does) and its arguments by value, so the server
gets real objects, not source text rendered with ``%r``.  The test's own
``sys.path`` reaches the server, so a function in this very module imports
there.  Every test runs twice: warm (forked from a zygote that imported this
module once) and fresh (a new interpreter).
"""
from __future__ import annotations

import dataclasses
import http.server
import json
import os
import signal
import threading
import unittest

from _process_helpers import NoLeftoversMixin, pid_alive, remove_kept

from harness import HttpCheck, LogCheck, ServerProcess, ServerStartError

HANG = 30.0


@dataclasses.dataclass
class Settings:
    """Not expressible as source text that round-trips with %r in general: an object."""
    greeting: str
    limits: dict


def serve(settings: Settings, *, status: int = 200) -> None:
    """A server as tests write them: a function that serves forever on $HOST:$PORT."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"message": settings.greeting, "limits": settings.limits,
                               "pid": os.getpid(), "cwd": os.getcwd(),
                               "tmp": os.environ.get("TMPDIR"),
                               "setting": os.environ.get("SETTING")}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    print("serving", settings.greeting, flush=True)
    http.server.HTTPServer((os.environ["HOST"], int(os.environ["PORT"])),
                           Handler).serve_forever()


def crash_at_start(reason: str) -> None:
    raise RuntimeError(f"cannot start: {reason}")


def leave_temp_file_and_serve() -> None:
    import tempfile
    fd, path = tempfile.mkstemp(prefix="left-by-server-")
    os.close(fd)
    print("left", path, flush=True)
    serve(Settings("temp", {}))


class Modes:
    """Runs each test warm and fresh (HARNESS_WARM)."""

    warm = "1"

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        previous = os.environ.get("HARNESS_WARM")
        os.environ["HARNESS_WARM"] = self.warm
        self.addCleanup(self._restore, previous)  # type: ignore[attr-defined]

    @staticmethod
    def _restore(previous: object) -> None:
        if previous is None:
            os.environ.pop("HARNESS_WARM", None)
        else:
            os.environ["HARNESS_WARM"] = str(previous)


class WarmTargetTest(Modes, NoLeftoversMixin, unittest.TestCase):
    warm = "1"

    def test_a_function_with_real_objects_serves(self) -> None:
        settings = Settings("hello", {"rate": 10, "burst": [1, 2]})
        with ServerProcess(target=serve, args=(settings,), kwargs={"status": 200},
                           env={"SETTING": "on"}, health=HttpCheck(json={"message": "hello"})
                           ) as server:
            answer = server.get("/health").json()
            self.assertEqual(answer["limits"], {"rate": 10, "burst": [1, 2]})
            self.assertEqual(answer["pid"], server.pid)
            self.assertEqual(answer["setting"], "on")
            self.assertEqual(server.warm, self.warm == "1")
            self.assertIn("serving hello", server.output())
        self.assertEqual(server.returncode, 143)  # SIGTERM: a graceful SystemExit(143)

    def test_a_crash_at_start_is_reported_with_its_traceback(self) -> None:
        server = ServerProcess(target=crash_at_start, args=("no database",), start_timeout=HANG)
        with self.assertRaises(ServerStartError) as ctx:
            server.start()
        remove_kept(ctx.exception.log_path)
        self.assertEqual(ctx.exception.returncode, 1)
        message = str(ctx.exception)
        self.assertIn("RuntimeError: cannot start: no database", message)
        self.assertIn("in crash_at_start", message)  # the traceback, not just the last line

    def test_each_server_has_its_own_temp_dir_that_goes_with_it(self) -> None:
        with ServerProcess(target=leave_temp_file_and_serve) as server:
            left = server.output().split("left ", 1)[1].split()[0]
            self.assertTrue(os.path.exists(left))
            answer = server.get("/health").json()
            self.assertEqual(os.path.dirname(left), answer["tmp"])
        self.assertFalse(os.path.exists(left), "a file the server left in TMPDIR survived")

    def test_cwd_and_log_check(self) -> None:
        import tempfile
        with tempfile.TemporaryDirectory() as where:
            with ServerProcess(target=serve, args=(Settings("cwd", {}),), cwd=where,
                               health=LogCheck("serving cwd")) as server:
                self.assertEqual(os.path.realpath(server.get("/").json()["cwd"]),
                                 os.path.realpath(where))

    def test_handoff_passes_the_socket_as_fd_3(self) -> None:
        with ServerProcess(target=serve_handoff, handoff=True) as server:
            answer = server.get("/health").json()
            self.assertEqual(answer["listen_pid"], str(server.pid))
            self.assertEqual(answer["fds"], "1")

    def test_stop_of_a_server_ignoring_sigterm_kills_it(self) -> None:
        server = ServerProcess(target=ignore_sigterm_and_serve, stop_timeout=0.2).start()
        self.assertEqual(server.stop(), -signal.SIGKILL)
        self.assertFalse(pid_alive(server.pid))


class FreshTargetTest(WarmTargetTest):
    warm = "0"


class TargetArgumentTest(unittest.TestCase):
    def test_a_lambda_or_nested_function_is_refused_up_front(self) -> None:
        def nested() -> None:
            pass
        for bad in (lambda: None, nested):
            with self.assertRaisesRegex(ValueError, "importable by its qualified name"):
                ServerProcess(target=bad)

    def test_unpicklable_arguments_are_refused_naming_them(self) -> None:
        with self.assertRaisesRegex(ValueError, "target's arguments must be picklable"):
            ServerProcess(target=serve, args=(threading.Lock(),))

    def test_exactly_one_program(self) -> None:
        with self.assertRaisesRegex(ValueError, "exactly one of .* got both app_code and target"):
            ServerProcess("x = 1", target=serve)
        with self.assertRaisesRegex(ValueError, "args and kwargs go with target"):
            ServerProcess("x = 1", args=(1,))
        with self.assertRaisesRegex(TypeError, "args must be a tuple"):
            ServerProcess(target=serve, args="abc")


def serve_handoff() -> None:
    import socket
    listener = socket.socket(fileno=3)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"listen_pid": os.environ.get("LISTEN_PID"),
                               "fds": os.environ.get("LISTEN_FDS")}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass
    server = http.server.HTTPServer(listener.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket = listener
    server.serve_forever()


def ignore_sigterm_and_serve() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(Settings("stubborn", {}))


if __name__ == "__main__":
    unittest.main()
