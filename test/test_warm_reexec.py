"""Servers that run themselves again: werkzeug's reloader, Django's autoreload, uvicorn --reload.

A reloader re-runs the interpreter with the arguments it was started with
(``sys.orig_argv`` on Python 3.10+, else ``sys.argv``).  A warm server was
forked from harness's launcher, whose own arguments are not the server's:
re-running them used to crash inside harness (``OSError: [Errno 9] Bad file
descriptor``).  A warm server's arguments now read as a fresh server's
would, so the re-run starts the same app as a fresh interpreter, under the
same keeper; and the launcher started without its descriptors says what
happened instead of crashing.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import unittest

from _process_helpers import OK_APP, NoLeftoversMixin
from _support import python_env

from harness import HttpCheck, ServerProcess
from harness._server import supervisor

HANG = 30.0
# Runs itself again as a reloader would, then serves in the child.
REEXEC_APP = r'''
import os, subprocess, sys
if os.environ.get("REEXECED") != "1":
    if sys.version_info >= (3, 10):
        args = [sys.executable, *sys.orig_argv[1:]]
    else:
        args = [sys.executable, os.path.abspath(sys.argv[0])] + sys.argv[1:]
    print("re-running", args, flush=True)
    sys.exit(subprocess.call(args, env=dict(os.environ, REEXECED="1")))
print("child serving", flush=True)
''' + OK_APP

WERKZEUG_APP = r'''
import os
from werkzeug.serving import run_simple
from werkzeug.wrappers import Response

def app(environ, start_response):
    return Response('{"message": "ok", "pid": %d}' % os.getpid(),
                    mimetype="application/json")(environ, start_response)

run_simple(os.environ["HOST"], int(os.environ["PORT"]), app, use_reloader=True,
           reloader_type="stat")
'''


def werkzeug_target() -> None:
    """The werkzeug dev server with its reloader, as a ``target=`` function."""
    exec(compile(WERKZEUG_APP, "werkzeug_app", "exec"), {"__name__": "__main__"})


@unittest.skipUnless(hasattr(os, "fork"), "warm launching forks")
class ReexecTest(NoLeftoversMixin, unittest.TestCase):
    def test_a_warm_server_that_runs_itself_again_serves_from_the_rerun(self) -> None:
        for warm in (True, False):
            with self.subTest(warm=warm):
                preload = ["http.server"] if warm else None
                with ServerProcess(REEXEC_APP, preload=preload, start_timeout=HANG,
                                   health=HttpCheck(json={"message": "ok"})) as server:
                    self.assertEqual(server.warm, warm)
                    pid = server.get("/").json()["pid"]
                    self.assertNotEqual(pid, server.pid, "the re-run child serves")
                    self.assertIn("child serving", server.output())
                    self.assertNotIn("Bad file descriptor", server.output())

    @unittest.skipUnless(importlib.util.find_spec("werkzeug"), "needs werkzeug")
    def test_werkzeugs_reloader_in_a_warm_server(self) -> None:
        with ServerProcess(WERKZEUG_APP, preload=["werkzeug.serving"], start_timeout=HANG,
                           health=HttpCheck(json={"message": "ok"})) as server:
            self.assertTrue(server.warm)
            self.assertNotEqual(server.get("/").json()["pid"], server.pid)
            self.assertNotIn("Traceback", server.output())

    @unittest.skipUnless(importlib.util.find_spec("werkzeug") and sys.version_info >= (3, 10),
                         "needs werkzeug; re-runs a target through sys.orig_argv (3.10+)")
    def test_werkzeugs_reloader_in_a_target_server(self) -> None:
        with ServerProcess(target=werkzeug_target, start_timeout=HANG,
                           health=HttpCheck(json={"message": "ok"})) as server:
            self.assertTrue(server.warm)
            self.assertNotEqual(server.get("/").json()["pid"], server.pid)
            self.assertNotIn("Traceback", server.output())

    def test_the_launcher_run_again_without_its_descriptors_says_why(self) -> None:
        argv = [sys.executable, "-c", supervisor.BOOT, supervisor.PACKAGE_DIR, "987", "988"]
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=HANG, env=python_env())
        self.assertNotEqual(done.returncode, 0)
        self.assertNotIn("Traceback", done.stdout)
        self.assertIn("harness's launcher", done.stdout)
        self.assertIn("sys.orig_argv", done.stdout)


if __name__ == "__main__":
    unittest.main()
