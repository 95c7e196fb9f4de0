"""ServerProcess: arguments, launch, handoff, readiness, stop, security."""
from __future__ import annotations

import json
import os
import re
import socket
import stat
import sys
import tempfile
import unittest
import urllib.request

from _process_helpers import (
    OK_APP,
    NoLeftoversMixin,
    my_harness_dirs,
    pid_alive,
    remove_kept,
    server_argv,
)

from harness._os import procinfo as _procinfo
from harness.checks import HttpCheck, LogCheck
from harness.errors import HarnessError, PortUnavailable, ServerNotReady, ServerStartError
from harness.process import ServerProcess, start_server


def fetch(server: ServerProcess, path: str = "/health") -> dict:
    with urllib.request.urlopen(server.url + path, timeout=10) as response:
        return json.loads(response.read().decode())


class ArgumentTest(unittest.TestCase):
    """Bad arguments raise before anything is started (nothing to clean up)."""

    def assertRejected(self, exc: type, pattern: str, *args: object, **kwargs: object) -> None:
        before = my_harness_dirs()
        with self.assertRaisesRegex(exc, pattern):
            ServerProcess(*args, **kwargs)  # type: ignore[arg-type]
        self.assertEqual(my_harness_dirs() - before, set())

    def test_exactly_one_of_app_code_and_argv(self) -> None:
        self.assertRejected(ValueError, "exactly one of app_code.*neither")
        self.assertRejected(ValueError, "exactly one of app_code.*both", "x=1", argv=["x"])

    def test_bad_values(self) -> None:
        self.assertRejected(ValueError, "port", OK_APP, port=70000)
        self.assertRejected(TypeError, "port", OK_APP, port="80")
        self.assertRejected(ValueError, "port_range", OK_APP, port_range=(9100, 9000))
        self.assertRejected(ValueError, "start_timeout", OK_APP, start_timeout=-1)
        self.assertRejected(ValueError, "stop_timeout", OK_APP, stop_timeout=0)
        self.assertRejected(ValueError, "ready_successes", OK_APP, ready_successes=0)
        self.assertRejected(TypeError, "argv", argv="python -m http.server")
        self.assertRejected(ValueError, "argv is empty", argv=[])
        self.assertRejected(TypeError, "argv items", argv=["python", 3])
        self.assertRejected(ValueError, "app_code is empty", "  ")
        self.assertRejected(TypeError, "app_code", b"x=1")
        self.assertRejected(ValueError, "health", OK_APP, health="health")
        self.assertRejected(TypeError, "env", OK_APP, env=["A=1"])
        self.assertRejected(TypeError, r"env\['A'\]", OK_APP, env={"A": 1})
        self.assertRejected(ValueError, "cwd", OK_APP, cwd="/nonexistent/dir")
        self.assertRejected(TypeError, "handoff", OK_APP, handoff="yes")

    def test_host_must_be_numeric_loopback(self) -> None:
        self.assertRejected(ValueError, "localhost", OK_APP, host="localhost")
        self.assertRejected(ValueError, "loopback", OK_APP, host="0.0.0.0")
        self.assertRejected(TypeError, "host", OK_APP, host=None)

    def test_port_and_range_exclusive(self) -> None:
        self.assertRejected(ValueError, "port or port_range", OK_APP, port=9000,
                            port_range=(9000, 9010))


class LifecycleTest(NoLeftoversMixin, unittest.TestCase):
    def test_app_code_server_serves_and_stops(self) -> None:
        server = ServerProcess(OK_APP, health=HttpCheck(json={"message": str}))
        self.assertFalse(server.running)
        with server:
            self.assertTrue(server.running)
            self.assertEqual(fetch(server)["message"], "ok")
            self.assertEqual(server.url, f"http://127.0.0.1:{server.port}")
            pid, log_dir = server.pid, os.path.dirname(server.log_path)
        self.assertFalse(server.running)
        self.assertEqual(server.returncode, 143)  # graceful SIGTERM: SystemExit(143)
        self.assertFalse(pid_alive(pid))
        self.assertFalse(os.path.exists(log_dir))
        with socket.socket() as probe:
            self.assertNotEqual(probe.connect_ex(("127.0.0.1", server.port)), 0)

    def test_stop_is_idempotent_and_start_server_helper(self) -> None:
        server = start_server(OK_APP)
        self.assertEqual(server.stop(), 143)
        self.assertEqual(server.stop(), 143)

    def test_argv_placeholders_env_and_cwd(self) -> None:
        cwd = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, cwd)
        app = ("import os, sys, json\n"
               "print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'PORT': "
               "os.environ['PORT'], 'HOST': os.environ['HOST'], 'EXTRA': os.environ.get('EXTRA'),"
               " 'GONE': os.environ.get('GONE'), 'stdin': os.read(0, 10).decode()}), flush=True)\n"
               "import threading; threading.Event().wait()\n")
        os.environ["GONE"] = "still here"
        self.addCleanup(os.environ.pop, "GONE")
        with ServerProcess(argv=[sys.executable, "-c", app, "--port={port}", "{host}"],
                           env={"EXTRA": "1", "GONE": None}, cwd=cwd,
                           health=LogCheck(r"\}\n")) as server:
            info = json.loads(server.output().splitlines()[0])
        self.assertEqual(info["argv"], [f"--port={server.port}", "127.0.0.1"])
        self.assertEqual(info["PORT"], str(server.port))
        self.assertEqual(info["HOST"], "127.0.0.1")
        self.assertEqual(info["EXTRA"], "1")
        self.assertIsNone(info["GONE"])
        self.assertEqual(os.path.realpath(info["cwd"]), os.path.realpath(cwd))
        self.assertEqual(info["stdin"], "")  # /dev/null, never the runner's terminal

    def test_restart_after_stop(self) -> None:
        server = ServerProcess(OK_APP)
        with server:
            first = server.pid
        with server:
            self.assertNotEqual(server.pid, first)
            self.assertEqual(fetch(server)["message"], "ok")

    def test_lost_port_relaunches_on_a_new_one(self) -> None:
        flag = tempfile.mktemp(prefix="lost-port-")  # only its existence matters
        self.addCleanup(lambda: os.path.exists(flag) and os.unlink(flag))
        app = (f"import os, sys\nif not os.path.exists({flag!r}):\n"
               f"    open({flag!r}, 'w').close()\n"
               "    sys.exit('OSError: [Errno 98] Address already in use')\n" + OK_APP)
        with start_server(app) as server:
            log = server.output()
            lost = int(re.search(r"\[harness\] port (\d+) was lost", log).group(1))
            self.assertNotEqual(server.port, lost)
            self.assertIn("relaunching on a new port (relaunch 1 of 3)", log)
            self.assertEqual(fetch(server)["message"], "ok")

    def test_lost_fixed_port_is_not_relaunched(self) -> None:
        app = "import sys\nsys.exit('OSError: [Errno 98] Address already in use')\n"
        from _support import quiet_window
        with self.assertRaises(ServerStartError) as ctx:
            start_server(app, port=quiet_window(1, test=self)[0])
        remove_kept(ctx.exception.log_path)
        self.assertIn("given explicitly", str(ctx.exception))
        self.assertNotIn("relaunching", str(ctx.exception))

    def test_events_go_to_the_harness_logger(self) -> None:
        with self.assertLogs("harness", "INFO") as logs:
            with start_server(OK_APP, name="logged"):
                pass
        text = "\n".join(logs.output)
        self.assertIn("INFO:harness.process:starting server 'logged'", text)
        self.assertRegex(text, r"server 'logged' ready in \d+\.\d+ s \(pid \d+")
        self.assertRegex(text, r"server 'logged' stopped in \d+\.\d+ s \(exited with code 143\)")

    def test_marker_environment(self) -> None:
        from harness._server import marker as _marker
        app = ("import os\nprint('MARKERS', os.environ['HARNESS_OWNER'], "
               "os.environ['HARNESS_SERVER_ID'], flush=True)\n" + OK_APP)
        with start_server(app) as server:
            line = [ln for ln in server.output().splitlines() if ln.startswith("MARKERS")][0]
            self.assertEqual(line.split()[1:], [_marker.owner_token(), server.server_id])
            # What reap and who read from outside: the owner (a warm server's /proc
            # environment is its launcher's, which carries the owner too).
            env = _procinfo.environ(server.pid)
            if env is not None:
                self.assertEqual(env[_marker.OWNER_ENV], _marker.owner_token())

    def test_output_kept_after_stop(self) -> None:
        app = "print('hello from the server', flush=True)\n" + OK_APP
        server = start_server(app, health=LogCheck("hello from"))
        server.stop()
        self.assertIn("hello from the server", server.output())

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork")
    def test_a_forked_child_leaving_the_with_block_leaves_the_server_running(self) -> None:
        # multiprocessing's fork: the child runs the rest of the parent's
        # `with server:` block and leaves it; the server is the parent's.
        with start_server(OK_APP) as server:
            pid = os.fork()
            if pid == 0:  # the child
                code = 0
                try:
                    server.stop()
                    server.__exit__(None, None, None)
                except BaseException:
                    code = 1
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.WEXITSTATUS(status), 0, "stop() in the child raised")
            self.assertTrue(server.running, "the child's stop() stopped the parent's server")
            self.assertEqual(server.get("/").status, 200)
            self.assertTrue(os.path.exists(server.log_path), "the child removed the files")
        self.assertFalse(server.running)

    def test_fixed_port_taken_names_holder(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        self.addCleanup(sock.close)
        with self.assertRaises(PortUnavailable) as ctx:
            start_server(OK_APP, port=sock.getsockname()[1])
        self.assertIn(str(sock.getsockname()[1]), str(ctx.exception))

    def test_unknown_program_fails_at_once_and_cleans_up(self) -> None:
        from harness.ports import held_ports
        before = held_ports()
        with self.assertRaises(ServerStartError) as ctx:
            start_server(argv=["/nonexistent/server-binary", "{port}"])
        self.assertIn("could not launch", str(ctx.exception))
        self.assertIn("/nonexistent/server-binary", str(ctx.exception))
        self.assertEqual(held_ports(), before, "the lease is released")

    def test_fixed_port_and_range(self) -> None:
        from _support import quiet_window
        window = quiet_window(4, test=self)
        with start_server(OK_APP, port=window[0]) as server:
            self.assertEqual(server.port, window[0])
        with start_server(OK_APP, port_range=(window[1], window[1])) as server:
            self.assertEqual(server.port, window[1])

    def test_ipv6_loopback(self) -> None:
        if not _procinfo.has_ipv6_loopback():
            self.skipTest("no ::1 here")
        with start_server(OK_APP, host="::1") as server:
            self.assertEqual(server.url, f"http://[::1]:{server.port}")
            self.assertEqual(fetch(server)["message"], "ok")

    def test_tcp_and_callable_checks(self) -> None:
        with start_server(OK_APP, health=None) as server:
            self.assertEqual(fetch(server)["message"], "ok")
        seen = []

        def ready(srv: ServerProcess) -> bool:
            seen.append(srv.port)
            return fetch(srv)["message"] == "ok"
        with start_server(OK_APP, health=ready) as server:
            self.assertEqual(set(seen), {server.port})
            self.assertGreaterEqual(len(seen), 2)

    def test_graceful_sigterm_runs_finally_and_atexit(self) -> None:
        out = tempfile.mkdtemp()
        self.addCleanup(lambda: [os.unlink(os.path.join(out, f)) for f in os.listdir(out)]
                        and os.rmdir(out) or os.path.isdir(out) and os.rmdir(out))
        app = (f"import atexit\nOUT = {out!r}\n"
               "atexit.register(lambda: open(OUT + '/atexit', 'w').close())\n"
               "try:\n" + "".join("    " + line + "\n" for line in OK_APP.splitlines()) +
               "finally:\n    open(OUT + '/finally', 'w').close()\n")
        server = start_server(app)
        self.assertEqual(server.stop(), 143)
        self.assertEqual(sorted(os.listdir(out)), ["atexit", "finally"])


class HandoffTest(NoLeftoversMixin, unittest.TestCase):
    def test_app_code_handoff(self) -> None:
        app = ("import os\nprint('LISTEN', os.environ['LISTEN_FDS'], os.environ['LISTEN_FDNAMES'],"
               " os.environ['LISTEN_PID'] == str(os.getpid()), flush=True)\n" + OK_APP)
        with start_server(app, handoff=True) as server:
            self.assertEqual(fetch(server)["pid"], server.pid)
            line = [ln for ln in server.output().splitlines() if ln.startswith("LISTEN")][0]
            self.assertEqual(line, "LISTEN 1 app True")
            # harness itself no longer holds the socket: only the server does
            self.assertFalse(any(h.pid == os.getpid() for h in _procinfo.port_holders(server.port)
                                 if h.status == "LISTEN"))

    def test_argv_handoff_sets_listen_pid_to_server_pid(self) -> None:
        app = ("import os, socket\n"
               "s = socket.socket(fileno=3)\n"
               "print('LISTEN', os.environ['LISTEN_PID'] == str(os.getpid()), "
               "os.environ['LISTEN_FDS'], s.getsockname()[1], flush=True)\n"
               "import threading; threading.Event().wait()\n")
        with start_server(argv=[sys.executable, "-c", app], handoff=True,
                          health=LogCheck("LISTEN")) as server:
            line = [ln for ln in server.output().splitlines() if ln.startswith("LISTEN")][0]
            self.assertEqual(line, f"LISTEN True 1 {server.port}")
            self.assertEqual(_procinfo.cmdline(server.pid).split()[0], sys.executable)

    def test_handoff_server_that_binds_itself_gets_a_hint(self) -> None:
        app = ("import socket, os\ns = socket.socket()\n"
               "s.bind(('127.0.0.1', int(os.environ['PORT'])))\n")
        with self.assertRaises(ServerStartError) as ctx:
            start_server(app, handoff=True)
        remove_kept(ctx.exception.log_path)
        self.assertIn("fd 3", str(ctx.exception))


class SecurityTest(NoLeftoversMixin, unittest.TestCase):
    def test_private_files_and_loopback(self) -> None:
        with start_server(OK_APP) as server:
            directory = os.path.dirname(server.log_path)
            self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
            self.assertTrue(os.path.basename(directory).startswith("harness-"))
            for name in os.listdir(directory):
                info = os.stat(os.path.join(directory, name))
                private = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
                self.assertEqual(stat.S_IMODE(info.st_mode), private, name)
            self.assertIn("app.py", os.listdir(directory))
            holders = [h for h in _procinfo.port_holders(server.port) if h.status == "LISTEN"]
            if holders:
                self.assertEqual({h.pid for h in holders}, {server.pid})
            # listening on loopback only: the port is not reachable on another local address
            other = _other_local_address()
            if other:
                with socket.socket() as probe:
                    self.assertNotEqual(probe.connect_ex((other, server.port)), 0)


def _other_local_address() -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
    except OSError:
        return ""
    return "" if address.startswith("127.") else address


class TimeoutFactorTest(NoLeftoversMixin, unittest.TestCase):
    def test_factor_scales_start_timeout(self) -> None:
        os.environ["HARNESS_TIMEOUT_FACTOR"] = "3"
        self.addCleanup(os.environ.pop, "HARNESS_TIMEOUT_FACTOR")
        with self.assertRaises(ServerNotReady) as ctx:
            start_server(argv=server_argv("never_listens.py"), start_timeout=0.1)
        remove_kept(ctx.exception.log_path)
        self.assertIn("not ready within 0.3 s", str(ctx.exception))
        self.assertIn("HARNESS_TIMEOUT_FACTOR=3", str(ctx.exception))


class HttpWrapperTest(NoLeftoversMixin, unittest.TestCase):

    def test_get_and_error_carries_log_tail(self) -> None:
        app = "print('a line from the server log', flush=True)\n" + OK_APP
        with start_server(app) as server:
            self.assertEqual(server.get("/x").json()["path"], "/x")
            with self.assertRaises(HarnessError) as ctx:
                server.get("/x", expect_json={"missing": str})
            self.assertIn("a line from the server log", str(ctx.exception))

    def test_memory(self) -> None:
        with start_server(OK_APP) as server:
            self.assertGreater(server.memory(), 1 << 20)


if __name__ == "__main__":
    unittest.main()
