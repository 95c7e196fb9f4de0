"""The mixin end to end, as users run it: ``python -m unittest``, pytest and
``pytest -n 2`` (pytest-xdist) on a generated test module, in a subprocess.

The generated module checks itself from the inside: later tests assert that
the servers of earlier ones (a failed test's, a test whose setUp errored, a
class's shared server) no longer exist, by pid and start time, while the
runner is still running, so the interpreter's exit cannot be what stopped
them.  This test then checks each test's verdict and that the failing
tests' reports carry their servers' log lines.
"""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import unittest
from typing import Dict, List, Optional, Tuple

from _support import python_env
from test_testcase import APP

HAVE_PYTEST = importlib.util.find_spec("pytest") is not None
HAVE_XDIST = HAVE_PYTEST and importlib.util.find_spec("xdist") is not None
HANG = 240  # seconds: a hang-catcher, not a timing assertion

MODULE = '''
import unittest
from harness._os import procinfo as _procinfo
from harness.testcase import ServerTestCase

APP = {app!r}
SEEN = {{}}


def identity(server):
    token = _procinfo.identity(server.pid)
    assert token is not None
    return token


class A_Failing(ServerTestCase):
    def test_1_fails(self):
        server = self.start_server(APP)
        SEEN["failing"] = identity(server)
        server.get("/MARK-{tag}-failing")
        self.assertEqual(server.get("/health").json()["message"], "not ready")

    def test_2_failed_tests_server_is_gone(self):
        self.assertFalse(_procinfo.is_alive(SEEN["failing"]))


class B_SetUpError(ServerTestCase):
    def setUp(self):
        super().setUp()
        server = self.start_server(APP)
        SEEN["setup"] = identity(server)
        server.get("/MARK-{tag}-setup")
        raise RuntimeError("setUp broke after starting a server")

    def test_never_runs(self):
        pass


class C_Shared(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = cls.start_class_server(APP)
        SEEN["class"] = identity(cls.server)
        SEEN["class_pids"] = []

    def test_1(self):
        SEEN["class_pids"].append(self.server.pid)
        self.assertResponse(self.server.get("/health"), json={{"message": str}})

    def test_2(self):
        SEEN["class_pids"].append(self.server.pid)


class D_Checks(unittest.TestCase):
    def test_setup_errors_server_is_gone(self):
        self.assertFalse(_procinfo.is_alive(SEEN["setup"]))

    def test_class_server_was_shared_and_is_gone(self):
        self.assertEqual(len(SEEN["class_pids"]), 2)
        self.assertEqual(len(set(SEEN["class_pids"])), 1)
        self.assertFalse(_procinfo.is_alive(SEEN["class"]))
'''

EXPECTED = {
    "A_Failing.test_1_fails": "failed",
    "A_Failing.test_2_failed_tests_server_is_gone": "passed",
    "B_SetUpError.test_never_runs": "failed",
    "C_Shared.test_1": "passed",
    "C_Shared.test_2": "passed",
    "D_Checks.test_setup_errors_server_is_gone": "passed",
    "D_Checks.test_class_server_was_shared_and_is_gone": "passed",
}


def child_env() -> Dict[str, str]:
    env = python_env()
    for name in list(env):
        if name.startswith(("PYTEST_", "PYTHONWARNINGS")):
            del env[name]  # the outer pytest's settings are not the child's
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(args: List[str], cwd: str, extra_env: Optional[Dict[str, str]] = None) -> Tuple[int, str]:
    """``python ARGS`` in ``cwd``: its exit code and output (stdout and stderr).

    The output goes to a file, not a pipe: a process the child left behind
    cannot keep this waiting for the pipe's end.  At ``HANG`` the child's
    whole process group is killed and the test fails with what it printed.
    """
    env = child_env()
    env.update(extra_env or {})
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable] + args, cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, universal_newlines=True,
                                start_new_session=True)
        try:
            proc.wait(HANG)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            out.seek(0)
            raise AssertionError(f"{args} did not end within {HANG} s; its output:\n"
                                 f"{out.read()}") from None
        out.seek(0)
        return proc.returncode, out.read()


def run_pytest(args: List[str], cwd: str,
               extra_env: Optional[Dict[str, str]] = None) -> Tuple[int, str]:
    """``python -m pytest ARGS`` in ``cwd``, with this checkout's plugin.

    Entry points are not loaded: an installed harness (or a stale
    ``harness.egg-info`` on the path) registers the plugin module under its
    entry point's name, and pytest refuses a module registered under two
    names (``-p harness.pytest_plugin`` and ``harness``).  The plugins a run
    needs are named instead: harness's, and xdist's for ``-n``.
    """
    plugins = ["-p", "harness.pytest_plugin", "-p", "no:cacheprovider"]
    if "-n" in args:
        plugins += ["-p", "xdist.plugin"]
    env = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.update(extra_env or {})
    return run(["-m", "pytest"] + plugins + list(args), cwd, extra_env=env)


def without_short_summary(output: str) -> str:
    """pytest's output up to its short test summary.

    That summary repeats each failure's message: cut to the terminal's width
    normally, whole when ``CI`` is set (as on CI machines), so a count of
    what a failure report shows must not include it.
    """
    return output.split("short test summary info", 1)[0]


def unittest_verdicts(output: str) -> Dict[str, str]:
    """``test_x (mod.Class) ... ok`` (3.8-3.10) or ``(mod.Class.test_x)`` (3.11+)."""
    verdicts = {}
    for name, where, word in re.findall(r"^(\w+) \(([\w.]+)\) \.\.\. (ok|FAIL|ERROR)$",
                                        output, re.M):
        parts = where.split(".")
        cls = parts[-2] if parts[-1] == name else parts[-1]
        verdicts[f"{cls}.{name}"] = "passed" if word == "ok" else "failed"
    return verdicts


def pytest_verdicts(output: str) -> Dict[str, str]:
    """From ``-rA``: ``PASSED file.py::Class::test`` / ``FAILED file.py::Class::test - ...``."""
    verdicts = {}
    for word, node in re.findall(r"^(PASSED|FAILED|ERROR) (\S+)", output, re.M):
        parts = node.split("::")
        verdicts[f"{parts[-2]}.{parts[-1]}"] = "passed" if word == "PASSED" else "failed"
    return verdicts


class RunnersTest(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="t5-runners-")
        self.addCleanup(_rmtree, self.dir)
        with open(os.path.join(self.dir, "pytest.ini"), "w") as f:
            f.write("[pytest]\n")  # pins pytest's rootdir here

    def write_module(self, name: str, tag: str) -> None:
        with open(os.path.join(self.dir, name + ".py"), "w") as f:
            f.write(MODULE.format(app=APP, tag=tag))

    def check_reports(self, output: str, tag: str) -> None:
        self.assertIn(f"/MARK-{tag}-failing", output)
        self.assertIn(f"/MARK-{tag}-setup", output)
        self.assertIn("harness: log tail of the servers of", output)
        self.assertIn("app listening on port", output)

    def test_python_m_unittest(self):
        self.write_module("gen_unittest", "ut")
        code, output = run(["-m", "unittest", "-v", "gen_unittest"], self.dir)
        self.assertEqual(code, 1, output)
        self.assertEqual(unittest_verdicts(output), EXPECTED, output)
        self.assertIn("FAILED (failures=1, errors=1)", output)
        self.check_reports(output, "ut")

    @unittest.skipUnless(HAVE_PYTEST, "pytest is not installed")
    def test_pytest(self):
        self.write_module("test_gen_pytest", "pt")
        code, output = run_pytest(["-rA", "test_gen_pytest.py"], self.dir)
        self.assertEqual(code, 1, output)
        self.assertEqual(pytest_verdicts(output), EXPECTED, output)
        self.check_reports(output, "pt")

    @unittest.skipUnless(HAVE_XDIST, "pytest-xdist is not installed")
    def test_pytest_xdist_two_workers(self):
        # Two modules, one per worker (--dist loadfile keeps a module's
        # self-checks in the process that ran the tests they check).
        self.write_module("test_gen_one", "x1")
        self.write_module("test_gen_two", "x2")
        code, output = run_pytest(["-n", "2", "--dist", "loadfile", "-rA", "test_gen_one.py",
                                   "test_gen_two.py"], self.dir)
        self.assertEqual(code, 1, output)
        self.assertIn("2 workers", output)
        self.assertEqual(len(re.findall(r"^PASSED ", output, re.M)), 10, output)
        self.assertEqual(len(re.findall(r"^FAILED ", output, re.M)), 4, output)
        self.assertEqual(pytest_verdicts(output), EXPECTED, output)
        self.check_reports(output, "x1")
        self.check_reports(output, "x2")


def _rmtree(path: str) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
