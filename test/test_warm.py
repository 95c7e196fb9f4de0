"""The warm launcher: app_code servers forked from a zygote that imported ``preload``.

Everything that holds for a fresh server holds for a warm one (the rest of
the suite runs warm too in CI's HARNESS_WARM=1 run); this module covers what
is the launcher's own: preload failures, unsafe preloads, a launcher that
dies, state that must not leak from one server to the next.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import unittest
from typing import List

from _process_helpers import OK_APP, NoLeftoversMixin, remove_kept

from harness import HttpCheck, ServerProcess, ServerStartError, start_server
from harness._server import launch, supervisor

HANG = 30.0


class _Records(logging.Handler):
    """The messages of WARNING and above, as a test sees them (assertNoLogs is 3.10+)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

STATE_APP = """
import _preload_state
_preload_state.COUNTER[0] += 1
print("counter", _preload_state.COUNTER[0], flush=True)
""" + OK_APP


@unittest.skipUnless(hasattr(os, "fork"), "warm launching forks")
class WarmLauncherTest(NoLeftoversMixin, unittest.TestCase):
    def test_preloaded_server_serves_and_stops_gracefully(self) -> None:
        with ServerProcess(OK_APP, preload=["http.server", "json"],
                           health=HttpCheck(json={"message": "ok"})) as server:
            self.assertTrue(server.warm)
            self.assertEqual(server.get("/x").json()["pid"], server.pid)
            self.assertGreater(server.memory(), 0)
        self.assertEqual(server.returncode, 143)

    def test_a_server_cannot_change_what_the_next_one_inherits(self) -> None:
        for _ in range(3):
            with start_server(STATE_APP, preload=["_preload_state"]) as server:
                self.assertIn("counter 1", server.output())

    def test_a_failing_preload_is_a_start_error_with_its_traceback(self) -> None:
        with self.assertRaises(ServerStartError) as ctx:
            start_server(OK_APP, preload=["_preload_broken"], start_timeout=HANG)
        remove_kept(ctx.exception.log_path)
        message = str(ctx.exception)
        self.assertIn("preload '_preload_broken' failed to import", message)
        self.assertIn("ImportError: preload-marker: this module cannot be imported", message)
        self.assertIn("_preload_broken.py", message)  # the traceback's frame

    def test_a_preload_that_starts_threads_falls_back_to_fresh_with_one_line(self) -> None:
        with self.assertLogs("harness", "WARNING") as logs:
            with start_server(OK_APP, preload=["_preload_threads"]) as server:
                self.assertFalse(server.warm)
                self.assertEqual(server.get("/").status, 200)
        self.assertEqual(len(logs.output), 1, logs.output)
        self.assertIn("started threads", logs.output[0])
        self.assertIn("fresh interpreter", logs.output[0])

    def test_a_syntax_error_in_app_code_is_reported_at_once(self) -> None:
        with self.assertRaises(ServerStartError) as ctx:
            start_server("def broken(:\n    pass\n", preload=[], start_timeout=HANG)
        remove_kept(ctx.exception.log_path)
        self.assertIn("SyntaxError", str(ctx.exception))
        self.assertEqual(ctx.exception.returncode, 1)

    def test_a_launcher_that_died_is_replaced_by_a_fresh_one(self) -> None:
        with start_server(OK_APP, preload=["http.server"]):
            pass
        key = ("http.server",)
        launcher = supervisor.zygote(key)
        old = launcher.pid
        os.kill(old, signal.SIGKILL)
        launcher.proc.wait(HANG)
        with self.assertLogs("harness", "WARNING") as logs:
            with start_server(OK_APP, preload=["http.server"]) as server:
                self.assertTrue(server.warm)
                self.assertEqual(server.get("/").status, 200)
        self.assertRegex("\n".join(logs.output), r"warm launcher .* is gone; .*starting a new one")
        self.assertNotEqual(supervisor.zygote(key).pid, old)

    def test_a_target_module_that_fails_in_the_launcher_is_imported_once(self) -> None:
        if launch.warm_setting() is False:
            self.skipTest("HARNESS_WARM=0: target servers start in a fresh interpreter")
        import _target_launcher_fails
        warnings = _Records()
        logger = logging.getLogger("harness")
        logger.addHandler(warnings)
        self.addCleanup(logger.removeHandler, warnings)
        with self.assertRaises(ServerStartError) as ctx:
            start_server(target=_target_launcher_fails.serve, start_timeout=HANG)
        remove_kept(ctx.exception.log_path)
        self.assertIn("importing the target's module '_target_launcher_fails' failed",
                      str(ctx.exception))
        self.assertIn("target-marker: this module refuses harness's launcher", str(ctx.exception))
        # Imported once: not again in a replacement launcher ("is gone; starting a new one").
        self.assertEqual(warnings.messages, [])

    def test_warm_switch(self) -> None:
        os.environ["HARNESS_WARM"] = "sometimes"
        self.addCleanup(os.environ.pop, "HARNESS_WARM")
        with self.assertRaisesRegex(ValueError, "HARNESS_WARM must be 0"):
            start_server(OK_APP)
        os.environ["HARNESS_WARM"] = "0"
        with start_server(OK_APP, preload=["http.server"]) as server:
            self.assertFalse(server.warm, "HARNESS_WARM=0 turns warm launching off")
        os.environ["HARNESS_WARM"] = "1"
        with start_server(OK_APP) as server:
            self.assertTrue(server.warm, "HARNESS_WARM=1 makes every app_code server warm")

    def test_preload_is_refused_for_a_program(self) -> None:
        with self.assertRaisesRegex(ValueError, "preload applies to Python servers"):
            ServerProcess(argv=[sys.executable, "-c", "pass"], preload=["json"])
        with self.assertRaisesRegex(ValueError, "module names"):
            ServerProcess(OK_APP, preload=["not a module"])


if __name__ == "__main__":
    unittest.main()
