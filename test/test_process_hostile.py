"""One test per hostile server (scripts in test/servers/)."""
from __future__ import annotations

import os
import re
import socket
import time
import unittest
from typing import Any

from _process_helpers import OK_APP, NoLeftoversMixin, pid_alive, remove_kept, server_argv

from harness._config import scaled_for_cleanup
from harness._os import procinfo as _procinfo
from harness.checks import Check, HttpCheck, LogCheck, Outcome, TcpCheck
from harness.errors import ServerNotReady, ServerStartError
from harness.process import LISTENER_GRACE, ServerProcess, start_server

# A generous hang-catcher: these servers fail fast or never; the deadline is
# only there so a regression cannot hang CI.
LONG = 60.0


class AfterLog(Check):
    """Waits (bounded) until ``text`` is in the log, then probes with ``inner``.

    Lets a test with a short start_timeout still see what the server does
    once it runs, however loaded the machine is.
    """

    def __init__(self, text: str, inner: Check) -> None:
        self.text, self.inner, self.uses_port = text, inner, inner.uses_port

    def probe(self, server: Any, timeout: float) -> Outcome:
        end = time.monotonic() + LONG
        while self.text not in server.output() and time.monotonic() < end:
            time.sleep(0.005)
        return self.inner.probe(server, timeout)

    def __repr__(self) -> str:
        return repr(self.inner)


class _NoLease:
    """Stands in for a port lease: the port, and nothing to give back."""

    def __init__(self, port: int) -> None:
        self.port = port

    def release(self) -> None:
        pass


class HostileServerTest(NoLeftoversMixin, unittest.TestCase):
    def expect_failure(self, exc: type, argv: list, **kwargs: object) -> ServerStartError:
        with self.assertRaises(exc) as ctx:
            start_server(argv=argv, **kwargs)
        error = ctx.exception
        self.assertTrue(os.path.exists(error.log_path), "the log of a failed start is kept")
        self.assertIn(error.log_path, str(error))
        remove_kept(error.log_path)
        return error

    def test_crash_at_start_reported_at_once(self) -> None:
        error = self.expect_failure(ServerStartError, server_argv("crash_at_start.py"),
                                    start_timeout=LONG)
        self.assertNotIsInstance(error, ServerNotReady)
        self.assertEqual(error.returncode, 3)
        message = str(error)
        self.assertIn("exited with code 3 during start-up", message)
        self.assertIn("FATAL: config file settings.toml not found", message)
        self.assertIn("crash_at_start.py", message)  # the command
        self.assertIn("pid ", message)
        seconds = float(re.search(r"after ([\d.]+) s", message).group(1))
        self.assertLess(seconds, LONG / 4, "reported at the crash, not at the deadline")

    def test_exit_code_zero_is_a_failure(self) -> None:
        import sys
        error = self.expect_failure(ServerStartError, [sys.executable, "-c", "print('bye')"],
                                    start_timeout=LONG)
        self.assertEqual(error.returncode, 0)
        self.assertIn("exited with code 0", str(error))
        self.assertIn("daemonizes", str(error))

    def test_signal_death_is_named(self) -> None:
        import sys
        app = "import os, signal\nos.kill(os.getpid(), signal.SIGABRT)\n"
        error = self.expect_failure(ServerStartError, [sys.executable, "-c", app])
        self.assertIn("killed by SIGABRT", str(error))

    def test_never_listens(self) -> None:
        error = self.expect_failure(ServerNotReady, server_argv("never_listens.py"),
                                    health=AfterLog("never listening", TcpCheck()),
                                    start_timeout=0.5)
        self.assertIn("not ready within 0.5 s", str(error))
        self.assertIn("connection refused \u00d7", str(error))
        self.assertIn("never listening", str(error))  # its output
        self.assertIsNotNone(error.returncode)  # stopped, and reaped

    def test_late_routes_never_ready_while_404(self) -> None:
        hits = []

        def record(server: ServerProcess) -> bool:
            outcome = HttpCheck().probe(server, 5.0)
            hits.append(outcome.label)
            return outcome.ok
        with start_server(argv=server_argv("late_routes.py"), env={"LATE_REQUESTS": "5"},
                          health=record, start_timeout=LONG) as server:
            # ready only after the two passes that followed the five 404s
            self.assertEqual(hits[-2:], ["HTTP 200", "HTTP 200"])
            self.assertEqual(hits.count("HTTP 404"), 5)
            self.assertEqual(server.get("/health").status, 200)

    def test_late_routes_forever_lists_404s(self) -> None:
        error = self.expect_failure(ServerNotReady, server_argv("late_routes.py"),
                                    env={"LATE_REQUESTS": "-1"}, start_timeout=0.5,
                                    health=AfterLog("listening", HttpCheck()))
        self.assertRegex(str(error), r"HTTP 404 \u00d7\d+")
        # Every probe saw a refusal or a 404, but the last one, which the
        # deadline may cut short (a loaded machine: "timed out").
        others = {label: n for label, n in error.outcomes.items()
                  if label not in ("connection refused", "HTTP 404")}
        self.assertLessEqual(sum(others.values()), 1, others)

    def test_json_missing_message(self) -> None:
        error = self.expect_failure(ServerNotReady, server_argv("json_missing.py"),
                                    health=AfterLog("listening", HttpCheck(json={"message": str})),
                                    start_timeout=0.5)
        self.assertRegex(str(error), r"JSON missing 'message' \u00d7\d+")
        self.assertIn("starting", str(error))  # the body excerpt

    def test_json_missing_then_present_becomes_ready(self) -> None:
        with start_server(argv=server_argv("json_missing.py"), env={"BAD_REQUESTS": "3"},
                          health=HttpCheck(json={"message": str}), start_timeout=LONG):
            pass

    def test_ignores_sigterm_killed_after_grace(self) -> None:
        server = start_server(argv=server_argv("ignores_sigterm.py"), stop_timeout=0.3)
        self.assertEqual(server.stop(), -9)
        self.assertFalse(pid_alive(server.pid))

    def test_stopped_process_is_continued_and_stopped(self) -> None:
        import signal
        server = start_server(argv=server_argv("ok_server.py"), stop_timeout=LONG)
        os.kill(server.pid, signal.SIGSTOP)
        self.assertEqual(server.stop(), -15)  # SIGCONT then SIGTERM: no need to SIGKILL

    def test_escaped_grandchildren_die(self) -> None:
        with start_server(argv=server_argv("escaping_children.py"),
                          health=HttpCheck(), start_timeout=LONG) as server:
            line = [ln for ln in server.output().splitlines() if ln.startswith("grandchildren")]
            stay, escape = (int(p) for p in line[0].split()[1:])
            self.assertTrue(pid_alive(stay) and pid_alive(escape))
            if _procinfo.HAVE_PROC:
                self.assertNotEqual(os.getpgid(escape), server.pid, "it did escape the group")
        self.assertFalse(pid_alive(stay), "grandchild in the group survived stop()")
        self.assertFalse(pid_alive(escape), "grandchild that escaped with setsid survived stop()")

    def test_chatty_server_no_deadlock_and_log_tail(self) -> None:
        with start_server(argv=server_argv("chatty.py"), start_timeout=LONG) as server:
            size = os.path.getsize(server.log_path)
            self.assertGreaterEqual(size, 40 * 1024 * 1024)
            self.assertIn("END-OF-OUTPUT", server.log_tail())

    def test_wrong_port(self) -> None:
        error = self.expect_failure(ServerNotReady, server_argv("wrong_port.py"),
                                    health=AfterLog("listening", HttpCheck()),
                                    start_timeout=0.5)
        self.assertIn("connection refused", str(error))
        if _procinfo.HAVE_PROC:
            self.assertRegex(str(error), r"listens on port \d+ instead of \d+")

    @unittest.skipUnless(_procinfo.HAVE_PROC, "listeners are read from Linux's tables")
    def test_wrong_port_is_said_at_once_and_named_in_the_error(self) -> None:
        # Listening on another port decides nothing (an admin port may come
        # first, however long the server then works or waits): the start
        # goes on to its timeout, but a warning says what is going on once
        # it has lasted the grace, and the error names both ports.
        timeout = scaled_for_cleanup(LISTENER_GRACE) * 3
        with self.assertLogs("harness", "WARNING") as logs:
            error = self.expect_failure(ServerNotReady, server_argv("wrong_port.py"),
                                        health=AfterLog("listening", HttpCheck()),
                                        start_timeout=timeout)
        warned = [r.getMessage() for r in logs.records if "but not on its $PORT" in
                  r.getMessage()]
        self.assertEqual(len(warned), 1, logs.output)
        self.assertRegex(warned[0], r"listens on port \d+ but not on its \$PORT \d+")
        self.assertRegex(str(error), r"the server listens on port (\d+) instead of (\d+)")
        self.assertIn("fix: make the server listen on $PORT", str(error))

    def test_an_admin_port_opened_first_is_not_a_wrong_port(self) -> None:
        app = ("import socket, time\nadmin = socket.socket()\nadmin.bind(('127.0.0.1', 0))\n"
               "admin.listen(1)\ntime.sleep(0.5)\n" + OK_APP)
        with start_server(app, start_timeout=LONG) as server:
            self.assertEqual(server.get("/").status, 200)

    @unittest.skipUnless(_procinfo.HAVE_PROC, "listeners are seen through /proc")
    def test_an_admin_port_then_a_long_busy_start_is_not_a_wrong_port(self) -> None:
        # The grace counts only the time in which the server does nothing: a
        # server that works (imports, migrations, a slow machine) for longer
        # than the grace before it opens $PORT is not "on the wrong port".
        busy = scaled_for_cleanup(LISTENER_GRACE) * 2
        app = ("import socket, time\nadmin = socket.socket()\nadmin.bind(('127.0.0.1', 0))\n"
               f"admin.listen(1)\nend = time.monotonic() + {busy!r}\n"
               "while time.monotonic() < end:\n    pass\n" + OK_APP)
        with start_server(app, start_timeout=LONG) as server:
            self.assertEqual(server.get("/").status, 200)

    @unittest.skipUnless(_procinfo.HAVE_PROC, "listeners are seen through /proc")
    def test_a_check_that_passes_early_still_waits_for_the_servers_listener(self) -> None:
        # A callable or log check can pass while the server still works
        # towards its port (imports, a cache to warm): ready must still mean
        # a client can connect (listens=True, the default).
        app = ("import time\nprint('booted', flush=True)\nend = time.monotonic() + 0.3\n"
               "while time.monotonic() < end:\n    pass\n" + OK_APP)
        for health in (lambda server: True, LogCheck("booted")):
            with self.subTest(health=health), \
                    start_server(app, health=health, start_timeout=LONG) as server:
                with socket.create_connection(("127.0.0.1", server.port), timeout=LONG):
                    pass  # no retry: refused would raise

    def test_a_worker_without_a_port_is_ready_by_its_check(self) -> None:
        # Passed its check, nothing listens anywhere: after the grace, a
        # process without a port (listens=False says so up front: no wait).
        worker = ["python3", "-c", "import time; print('working', flush=True); time.sleep(60)"]
        for listens in (None, False):
            with self.subTest(listens=listens), \
                    start_server(argv=worker, health=LogCheck("working"), listens=listens,
                                 start_timeout=LONG) as server:
                self.assertTrue(server.running)

    @unittest.skipUnless(_procinfo.HAVE_PROC, "listeners are seen through /proc")
    def test_a_process_said_to_listen_that_never_does_is_told_about_listens_false(self) -> None:
        worker = ["python3", "-c", "print('working', flush=True)\nwhile True:\n    pass\n"]
        error = self.expect_failure(ServerNotReady, worker, health=LogCheck("working"),
                                    listens=True, start_timeout=1)
        self.assertRegex(str(error), r"check passed, but nothing listens on port \d+ yet")
        self.assertIn("or pass listens=False if it has no port", str(error))

    def test_stale_listener_on_port_is_not_ours(self) -> None:
        # Another process answers on the port harness expects our server on:
        # its answers must never count as "ready".
        if not _procinfo.HAVE_PROC:
            self.skipTest("listener ownership is proven through /proc")
        import http.server
        import sys
        import threading

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass
        stale = http.server.HTTPServer(("127.0.0.1", 0), H)
        thread = threading.Thread(target=stale.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(stale.server_close)
        self.addCleanup(stale.shutdown)
        port = stale.server_address[1]
        server = ServerProcess(argv=[sys.executable, "-c", "import threading; "
                                     "threading.Event().wait()"], start_timeout=LONG)
        server._address._lease_port = lambda host, rng, fixed: _NoLease(port)  # type: ignore[assignment]
        with self.assertRaises(ServerNotReady) as ctx:
            server.start()
        remove_kept(ctx.exception.log_path)
        self.assertIn(f"port answered by another process: pid {os.getpid()}", str(ctx.exception))


if __name__ == "__main__":
    unittest.main()
