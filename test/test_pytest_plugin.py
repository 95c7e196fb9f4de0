"""The pytest plugin: ``harness_server`` (a factory), ``free_port`` and
``harness_server_defaults``, run by a real pytest in a subprocess on a
generated test file; and the packaging facts (entry point, pytest imported
only by the plugin)."""
from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import tempfile
import unittest

from _support import ROOT, python_env
from test_testcase import APP, ENV_APP, reserve_window
from test_testcase_runners import HAVE_PYTEST, HAVE_XDIST, run, run_pytest, without_short_summary

TESTS = '''
import pytest
from harness._os import procinfo as _procinfo
from harness.ports import held_ports

APP = {app!r}
SEEN = {{}}


def test_1_failing_test_reports_the_log_tail(harness_server):
    server = harness_server(APP)
    SEEN["failing"] = _procinfo.identity(server.pid)
    server.get("/MARK-plugin-failing")
    assert server.get("/health").json()["message"] == "not ready"


def test_2_its_server_is_gone():
    assert SEEN["failing"] is not None
    assert not _procinfo.is_alive(SEEN["failing"])


def test_3_harness_port_is_leased_and_taken_over(harness_port, harness_server):
    low, high = {window}
    assert low <= harness_port <= high
    assert harness_port in held_ports()
    server = harness_server(APP, port=harness_port)
    assert server.port == harness_port
    assert server.get("/health").json()["message"] == "ready"
    SEEN["port"] = harness_port


def test_4_lease_ended_with_the_test():
    assert SEEN["port"] not in held_ports()


def test_5_defaults_from_conftest(harness_server):
    server = harness_server(APP)
    low, high = {window}
    assert low <= server.port <= high
    assert server.name == "test_5_defaults_from_conftest"
    assert server.ready_successes == 1
    named = harness_server(APP, name="second")
    assert named.name == "second" and named.pid != server.pid
'''

CRASH_TESTS = '''
import pytest
from harness.errors import ServerStartError

# The marker is built at run time: the traceback's source lines must not contain it.
CRASH = "import sys\\nprint('crash-marker-' + '{{}}')\\nsys.exit(3)\\n"


def test_expects_the_crash(harness_server):
    with pytest.raises(ServerStartError):
        harness_server(CRASH.format("expected"))


def test_does_not_expect_it(harness_server):
    harness_server(CRASH.format("unexpected"))
'''

REQUEST_TESTS = '''
APP = {app!r}


def test_wrong_status(harness_server):
    harness_server(APP).get("/MARK-request-failing", expect_status=201)
'''

COLOUR_TESTS = '''
from harness import LogCheck

# Flask's and uvicorn's loggers colour their lines on a terminal, and some
# always do: the report is read in a CI log, where codes are noise.
COLOURED = ("import time\\n"
            "print('\\\\x1b[31m\\\\x1b[1mWARNING\\\\x1b[0m colour-' + 'marker', flush=True)\\n"
            "time.sleep(60)\\n")


def test_fails(harness_server):
    harness_server(COLOURED, health=LogCheck("WARNING"))
    assert False
'''

TRACEBACK_TESTS = '''
from harness.testcase import ServerTestCase

CRASH = "import sys\\nprint('crash-marker-' + 'tb')\\nsys.exit(3)\\n"


def test_start_failure(harness_server):
    harness_server(CRASH)  # USER-LINE-1


def test_bad_argument(harness_server):
    harness_server(CRASH, port=70000)  # USER-LINE-2


class TestMixin(ServerTestCase):
    def test_mixin_start_failure(self):
        self.start_server(CRASH)  # USER-LINE-3
'''

ALIAS_TESTS = '''
from harness.ports import held_ports

APP = {app!r}


def test_the_old_name(free_port, harness_server):
    assert free_port in held_ports()
    assert harness_server(APP, port=free_port).port == free_port
'''

ENV_TESTS = '''
APP = {env_app!r}


def test_env_merges(harness_server):
    server = harness_server(APP, env={{"T5_MODE": "call", "T5_EXTRA": "1", "T5_GONE": None}})
    assert "env: [('T5_DB', 'postgres://db'), ('T5_EXTRA', '1'), ('T5_MODE', 'call')]" \\
        in server.output(), server.output()
'''

ENV_CONFTEST = '''
import pytest


@pytest.fixture
def harness_server_defaults():
    return {{"env": {{"T5_DB": "postgres://db", "T5_MODE": "default", "T5_GONE": "x"}},
             "ready_successes": 1}}
'''

CONFTEST = '''
import pytest


@pytest.fixture
def harness_server_defaults():
    return {{"port_range": {window}, "ready_successes": 1}}
'''

EXPECTED = {
    "test_plugin.test_1_failing_test_reports_the_log_tail": "failed",
    "test_plugin.test_2_its_server_is_gone": "passed",
    "test_plugin.test_3_harness_port_is_leased_and_taken_over": "passed",
    "test_plugin.test_4_lease_ended_with_the_test": "passed",
    "test_plugin.test_5_defaults_from_conftest": "passed",
}


@unittest.skipUnless(HAVE_PYTEST, "pytest is not installed")
class PluginTest(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="t5-plugin-")
        self.addCleanup(_rmtree, self.dir)
        with open(os.path.join(self.dir, "pytest.ini"), "w") as f:
            f.write("[pytest]\n")
        window = reserve_window(self, 8)
        self.window = (window[0], window[-1])
        self.tmp = tempfile.mkdtemp(prefix="t5-plugin-tmp-")  # the child's TMPDIR
        self.addCleanup(_rmtree, self.tmp)

    def write(self, name: str, text: str) -> None:
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(text.format(app=APP, env_app=ENV_APP, window=self.window))

    def pytest(self, *args: str):
        return run_pytest(["-rA"] + list(args), self.dir, extra_env={"TMPDIR": self.tmp})

    def test_fixtures(self):
        self.write("test_plugin.py", TESTS)
        self.write("conftest.py", CONFTEST)
        code, output = self.pytest("test_plugin.py")
        self.assertEqual(code, 1, output)
        verdicts = {k.replace("test_plugin.py.", "test_plugin."): v
                    for k, v in _function_verdicts(output).items()}
        self.assertEqual(verdicts, EXPECTED, output)
        # The failure report has a section with the server's log tail.
        self.assertRegex(output, r"-+ harness: log tail of the servers \(last \d+ lines each\) -+")
        self.assertIn("/MARK-plugin-failing", output)
        self.assertIn("--- test server 'test_1_failing_test_reports_the_log_tail'", output)

    @unittest.skipUnless(HAVE_XDIST, "pytest-xdist is not installed")
    def test_fixtures_under_xdist(self):
        self.write("test_plugin.py", TESTS.replace("def test_2", "@pytest.mark.skip\ndef test_2")
                   .replace("def test_4", "@pytest.mark.skip\ndef test_4"))
        self.write("conftest.py", CONFTEST)
        code, output = self.pytest("-n", "2", "test_plugin.py")
        self.assertEqual(code, 1, output)
        self.assertIn("1 failed, 2 passed, 2 skipped", output)
        self.assertIn("/MARK-plugin-failing", output)

    def test_logs_of_failed_starts_are_kept_only_for_failing_tests(self):
        self.write("test_crash.py", CRASH_TESTS)
        tmp = tempfile.mkdtemp(prefix="t5-plugin-tmp-")
        self.addCleanup(_rmtree, tmp)
        code, output = run_pytest(["-rA", "test_crash.py"], self.dir, extra_env={"TMPDIR": tmp})
        self.assertEqual(code, 1, output)
        self.assertIn("1 failed, 1 passed", output)
        self.assertEqual(os.listdir(tmp), [f"harness-logs-{os.getuid()}"], output)
        folder = os.path.join(tmp, f"harness-logs-{os.getuid()}")
        left = os.listdir(folder)
        self.assertEqual(len(left), 1, (left, output))  # the failing test's log only
        with open(os.path.join(folder, left[0])) as f:
            self.assertIn("crash-marker-unexpected", f.read())
        self.assertIn(os.path.join(folder, left[0]), output)  # its path is shown

    def test_env_of_a_call_merges_onto_the_defaults_env(self):
        self.write("test_env.py", ENV_TESTS)
        self.write("conftest.py", ENV_CONFTEST)
        code, output = self.pytest("test_env.py")
        self.assertEqual(code, 0, output)
        self.assertIn("1 passed", output)

    def test_a_start_failure_shows_the_log_once(self):
        # The ServerStartError carries the log's tail; the report's server
        # section must not repeat it.
        self.write("test_crash.py", CRASH_TESTS)
        code, output = self.pytest("test_crash.py::test_does_not_expect_it")
        self.assertEqual(code, 1, output)
        self.assertIn("ServerStartError", output)
        self.assertEqual(without_short_summary(output).count("crash-marker-unexpected"), 1,
                         output)
        self.assertNotIn("harness: log tail of the servers", output)

    def test_a_failed_request_shows_the_log_once(self):
        # The ResponseInvalid carries the server's log tail (any runner shows
        # it); the report's server section must not repeat it while the
        # server's state is still what the error says.
        self.write("test_request.py", REQUEST_TESTS)
        code, output = self.pytest("test_request.py")
        self.assertEqual(code, 1, output)
        self.assertIn("ResponseInvalid", output)
        self.assertEqual(without_short_summary(output).count("served /MARK-request-failing"), 1,
                         output)
        self.assertNotIn("harness: log tail of the servers", output)

    def test_the_log_tail_has_no_colour_codes(self):
        self.write("test_colour.py", COLOUR_TESTS)
        code, output = self.pytest("test_colour.py")
        self.assertEqual(code, 1, output)
        self.assertIn("harness: log tail of the servers", output)
        self.assertIn("    WARNING colour-marker", output)
        self.assertNotIn("\x1b", output)

    def test_a_start_failure_points_at_the_users_line(self):
        # pytest printed 70 lines of harness's source under a failed start.
        self.write("test_tb.py", TRACEBACK_TESTS)
        code, output = self.pytest("test_tb.py")
        self.assertEqual(code, 1, output)
        self.assertIn("3 failed", output)
        for source in ("process.py", "pytest_plugin.py", "_runner.py", "_validate.py",
                       "testcase.py", "def start(self)"):
            self.assertNotIn(source, output)
        lines = output.splitlines()
        for number, error in (("1", "ServerStartError"), ("2", "ValueError"),
                              ("3", "ServerStartError")):
            user_line = next(index for index, line in enumerate(lines)
                             if line.startswith(">") and f"USER-LINE-{number}" in line)
            where = next(line for line in lines[user_line:] if line.startswith("test_tb.py:"))
            self.assertRegex(where, rf"^test_tb\.py:\d+: {error}$", output)
        self.assertIn("ValueError: port must be in 1..65535, got 70000", output)

    def test_free_port_is_a_deprecated_alias_of_harness_port(self):
        self.write("test_alias.py", ALIAS_TESTS)
        code, output = self.pytest("test_alias.py")
        self.assertEqual(code, 0, output)
        self.assertIn("1 passed, 1 warning", output)
        self.assertRegex(output, r"test_alias\.py:\d+: DeprecationWarning: the free_port fixture "
                                 r"is deprecated; use harness_port")
        code, output = self.pytest("-W", "error::DeprecationWarning", "test_alias.py")
        self.assertEqual(code, 1, output)
        self.assertIn("1 error", output)

    def test_bad_defaults_are_named(self):
        self.write("test_plugin.py", "def test_it(harness_server):\n    harness_server('x=1')\n")
        self.write("conftest.py", "import pytest\n\n@pytest.fixture\ndef harness_server_defaults():"
                                  "\n    return {{'prot': 1}}\n")
        code, output = self.pytest("test_plugin.py")
        self.assertEqual(code, 1, output)
        self.assertIn("harness_server_defaults: 'prot' is not a ServerProcess argument", output)


def _function_verdicts(output: str):
    verdicts = {}
    for word, node in re.findall(r"^(PASSED|FAILED|ERROR) (\S+)", output, re.M):
        module, _, name = node.partition("::")
        verdicts[f"{module[:-3]}.{name}"] = "passed" if word == "PASSED" else "failed"
    return verdicts


# Runs pytest as if this checkout were installed: installed distributions
# whose pytest11 entry point loads harness's plugin are hidden, and one
# made from setup.cfg (in SITE) takes their place.
INSTALLED_DRIVER = '''
import importlib.metadata
import sys

SITE = sys.argv[1]
sys.path.insert(0, SITE)
_distributions = importlib.metadata.distributions


def distributions(**kwargs):
    for dist in _distributions(**kwargs):
        loads_harness = any(ep.group == "pytest11" and ep.value.startswith("harness.")
                            for ep in dist.entry_points)
        if dist.metadata["Name"] == "harness-from-this-checkout" or not loads_harness:
            yield dist


importlib.metadata.distributions = distributions
import pytest  # noqa: E402

sys.exit(pytest.main(sys.argv[2:]))
'''


class PackagingTest(unittest.TestCase):
    def entry_points(self) -> configparser.SectionProxy:
        config = configparser.ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        return config["options.entry_points"]

    def test_entry_point_is_named_harness(self):
        lines = [line.strip() for line in self.entry_points()["pytest11"].strip().splitlines()]
        self.assertEqual(lines, ["harness = harness.pytest_plugin"])

    @unittest.skipUnless(HAVE_PYTEST, "pytest is not installed")
    def test_the_installed_plugin_is_disabled_by_p_no_harness(self):
        work = tempfile.mkdtemp(prefix="t5-plugin-ep-")
        self.addCleanup(_rmtree, work)
        info = os.path.join(work, "site", "harness_from_this_checkout-0.dist-info")
        os.makedirs(info)
        with open(os.path.join(info, "METADATA"), "w") as f:
            f.write("Metadata-Version: 2.1\nName: harness-from-this-checkout\nVersion: 0\n")
        with open(os.path.join(info, "entry_points.txt"), "w") as f:
            f.write("[pytest11]\n" + self.entry_points()["pytest11"].strip() + "\n")
        with open(os.path.join(work, "driver.py"), "w") as f:
            f.write(INSTALLED_DRIVER)
        with open(os.path.join(work, "pytest.ini"), "w") as f:
            f.write("[pytest]\n")
        with open(os.path.join(work, "test_ep.py"), "w") as f:
            f.write("def test_it(harness_port):\n    assert harness_port > 0\n")
        command = ["driver.py", os.path.join(work, "site"), "-p", "no:cacheprovider", "-rA"]
        code, output = run(command + ["test_ep.py"], work)
        self.assertEqual(code, 0, output)  # loaded through the entry point
        self.assertIn("1 passed", output)
        code, output = run(command + ["-p", "no:harness", "test_ep.py"], work)
        self.assertEqual(code, 1, output)
        self.assertIn("fixture 'harness_port' not found", output)

    def test_only_the_plugin_imports_pytest(self):
        code = ("import sys, harness, harness.testcase, harness.http, harness.memory, "
                "harness.process\nprint('pytest' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], env=python_env(),
                             stdout=subprocess.PIPE, universal_newlines=True, timeout=60)
        self.assertEqual(out.stdout.strip(), "False")


def _rmtree(path: str) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
