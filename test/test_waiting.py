"""Waiting mid-test: ``server.wait_for_log`` and ``harness.wait_until``; and readiness
with handoff that means the server runs, not that harness listens."""
from __future__ import annotations

import os
import re
import sys
import tempfile
import time
import unittest

from _process_helpers import OK_APP, NoLeftoversMixin, remove_kept

from harness import (
    HarnessError,
    ServerStartError,
    TcpCheck,
    WaitTimeout,
    start_server,
    wait_until,
)
from harness._os import proc

HANG = 30.0
# Prints "reload N" each time the file $TRIGGER appears (then removes it).
RELOADER = r'''
import os, threading, time
trigger = os.environ["TRIGGER"]
def watch():
    n = 0
    while True:
        if os.path.exists(trigger):
            os.unlink(trigger)
            n += 1
            print(f"reload {n} done", flush=True)
        time.sleep(0.005)
threading.Thread(target=watch, daemon=True).start()
''' + OK_APP


class WaitForLogTest(NoLeftoversMixin, unittest.TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.trigger = tempfile.mktemp(prefix="reload-trigger-")
        self.addCleanup(lambda: os.path.exists(self.trigger) and os.unlink(self.trigger))

    def test_each_wait_reads_only_what_is_new(self) -> None:
        with start_server(RELOADER, env={"TRIGGER": self.trigger}) as server:
            for n in (1, 2, 3):
                open(self.trigger, "w").close()
                match = server.wait_for_log(r"reload (\d+) done", timeout=HANG)
                self.assertEqual(match.group(1), str(n), "an old line matched again")

    def test_literal_text_is_found_as_it_is(self) -> None:
        # "(1)" and "?" would be regex syntax; literal=True finds the text itself.
        app = "print('GET /a?b=(1) [ok]', flush=True)\n" + OK_APP
        with start_server(app) as server:
            match = server.wait_for_log("GET /a?b=(1) [ok]", timeout=HANG, literal=True)
            self.assertEqual(match.group(0), "GET /a?b=(1) [ok]")
            with self.assertRaisesRegex(TypeError, "literal=True"):
                server.wait_for_log(re.compile("x"), literal=True)

    def test_output_since_a_mark_is_what_came_after_it(self) -> None:
        with start_server(RELOADER, env={"TRIGGER": self.trigger}) as server:
            open(self.trigger, "w").close()
            server.wait_for_log("reload 1 done", timeout=HANG)
            mark = server.log_mark()
            self.assertEqual(server.output(since=mark), "")
            open(self.trigger, "w").close()
            server.wait_for_log("reload 2 done", timeout=HANG)
            self.assertEqual(server.output(since=mark), "reload 2 done\n")
            self.assertIn("reload 1 done", server.output())
        self.assertEqual(server.output(since=mark), "reload 2 done\n", "after stop() too")
        self.assertEqual(server.output(since=server.log_mark()), "")
        with self.assertRaisesRegex(ValueError, "since"):
            server.output(since=-1)

    def test_timeout_says_what_and_shows_the_output(self) -> None:
        with start_server(RELOADER, env={"TRIGGER": self.trigger}) as server:
            started = time.monotonic()
            with self.assertRaises(WaitTimeout) as ctx:
                server.wait_for_log("never printed", timeout=0.2)
            self.assertLess(time.monotonic() - started, HANG)
        self.assertIn("'never printed' did not appear", str(ctx.exception))
        self.assertIn("within 0.2 s", str(ctx.exception))
        self.assertGreater(ctx.exception.attempts, 1)

    def test_a_server_that_exits_while_waited_on_is_reported_at_once(self) -> None:
        # It exits when told to (told after its start returned, however late that is).
        app = ("import os, sys, time\nprint('about to exit', flush=True)\n"
               "while not os.path.exists(os.environ['TRIGGER']):\n    time.sleep(0.005)\n"
               "os._exit(4)\n")
        server = start_server(app, health=lambda s: "about" in s.output(), listens=False,
                              env={"TRIGGER": self.trigger})
        started = time.monotonic()
        open(self.trigger, "w").close()  # it exits within ms, while it is waited on
        with self.assertRaisesRegex(HarnessError, "exited with code 4 while waiting"):
            server.wait_for_log("never", timeout=HANG)
        self.assertLess(time.monotonic() - started, HANG / 2)
        with self.assertLogs("harness", "WARNING"):
            server.stop()
        remove_kept(server.log_path)

    def test_bad_pattern(self) -> None:
        with start_server(OK_APP) as server:
            with self.assertRaisesRegex(ValueError, "not a valid regex"):
                server.wait_for_log("(")
            with self.assertRaisesRegex(TypeError, "pattern"):
                server.wait_for_log(b"bytes")  # type: ignore[arg-type]


class WaitUntilTest(unittest.TestCase):
    def test_returns_the_truthy_value(self) -> None:
        end = time.monotonic() + 0.05
        self.assertEqual(wait_until(lambda: time.monotonic() > end and "done", timeout=HANG),
                         "done")

    def test_timeout_names_the_condition_and_what_it_last_saw(self) -> None:
        with self.assertRaises(WaitTimeout) as ctx:
            wait_until(lambda: {}["job"], timeout=0.05, what="the job to finish")
        message = str(ctx.exception)
        self.assertIn("the job to finish did not come true within 0.05 s", message)
        self.assertIn("KeyError", message)
        self.assertIsInstance(ctx.exception.last, KeyError)

    def test_arguments(self) -> None:
        with self.assertRaisesRegex(TypeError, "predicate"):
            wait_until("yes")  # type: ignore[arg-type]
        with self.assertRaisesRegex(ValueError, "timeout"):
            wait_until(lambda: True, timeout=-1)


@unittest.skipUnless(proc.HAVE_PROC, "the accept queue is read from Linux's tables")
class HandoffReadinessTest(NoLeftoversMixin, unittest.TestCase):
    def test_tcp_check_with_handoff_reports_a_crash_not_ready(self) -> None:
        # harness holds the listening socket: a connect succeeds before the server runs.
        crash = [sys.executable, "-c", "import time, sys; time.sleep(0.2); sys.exit(5)"]
        with self.assertRaises(ServerStartError) as ctx:
            start_server(argv=crash, handoff=True, health=TcpCheck(), start_timeout=HANG)
        remove_kept(ctx.exception.log_path)
        self.assertEqual(ctx.exception.returncode, 5)
        # What the probes saw: the connection waited in the queue, then the socket closed.
        self.assertRegex(str(ctx.exception), r"connection queued, not accepted|"
                                             r"handed-off socket closed")
        self.assertNotIn("connection accepted", str(ctx.exception))

    def test_tcp_check_with_handoff_passes_once_the_server_accepts(self) -> None:
        with start_server(OK_APP, handoff=True, health=TcpCheck()) as server:
            self.assertEqual(server.get("/").status, 200)


if __name__ == "__main__":
    unittest.main()
