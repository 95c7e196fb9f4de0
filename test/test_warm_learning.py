"""``target=`` servers warm for what the target imports when it runs, not only its module.

A target function often imports its framework inside (``from werkzeug.serving
import run_simple``): a fresh import in every server.  A warm target server
reports, when it stops, the installed and standard-library modules it
imported while it ran; the launcher imports them before the next server of
that target is forked.  Never the project's own modules (they may read the
server's environment when imported), and never a module whose import
changes the launcher (threads, signal handlers, the environment...): that
launcher is replaced and the module is left to the servers.
"""
from __future__ import annotations

import os
import sys
import unittest
from typing import Any, Dict

from _process_helpers import NoLeftoversMixin

from harness import LogCheck, ServerProcess
from harness._server import launch, supervisor

HANG = 30.0


def report_imports() -> None:
    """Says whether its run-time imports were there already, imports them, then waits."""
    import time
    had = {name: name in sys.modules for name in ("imaplib", "_preload_state")}
    import imaplib  # noqa: F401  (an installed, standard-library module)

    import _preload_state  # noqa: F401  (the project's own)
    print("had", sorted(name for name, there in had.items() if there), flush=True)
    while True:
        time.sleep(60)


@unittest.skipUnless(hasattr(os, "fork"), "warm launching forks")
class LearnedImportsTest(NoLeftoversMixin, unittest.TestCase):
    def start(self) -> Dict[str, Any]:
        with ServerProcess(target=report_imports, health=LogCheck("had"), listens=False,
                           start_timeout=HANG) as server:
            self.assertTrue(server.warm)
            line = [ln for ln in server.output().splitlines() if ln.startswith("had")][0]
        return {"had": line}

    def test_the_next_server_has_the_installed_modules_the_last_one_imported(self) -> None:
        if "imaplib" in sys.modules:
            self.skipTest("imaplib is imported in the runner already (nothing to learn)")
        self.start()
        second = self.start()
        self.assertIn("'imaplib'", second["had"], "the launcher did not learn imaplib")
        self.assertNotIn("_preload_state", second["had"],
                         "a project module was preloaded (it may read the server's env)")

    def test_a_module_that_changes_the_launcher_is_not_kept(self) -> None:
        key = ("json",)
        self.addCleanup(supervisor.discard, key)
        for module in ("_preload_threads", "_preload_signals"):
            with self.subTest(module=module):
                before = supervisor.zygote(key).pid
                kept = launch.preload_learned(key, [module, "imaplib"])
                self.assertNotIn(module, kept)
                self.assertIn(module, launch.unlearnable_modules())
                self.assertNotEqual(supervisor.zygote(key).pid, before,
                                    "the changed launcher was not replaced")
                self.assertEqual(launch.preload_learned(key, [module]), [],
                                 "an unlearnable module is not tried again")

if __name__ == "__main__":
    unittest.main()
