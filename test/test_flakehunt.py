"""``python -m harness flakehunt``: rates, intervals, failure kinds, hangs, Ctrl-C, bad input.

The deliberately flaky fixture fails when a draw is below 0.3.  A 95%
interval from a truly random draw misses the true rate 5% of the time,
which would make *this* test flaky.  So the fixture seeds its draw from the
run number flakehunt gives every run (``HARNESS_FLAKEHUNT_RUN``): the
sequence of outcomes is fixed, the test computes the exact number of
failures to expect from the same seeds, and checks that flakehunt counts
exactly that many, computes the Wilson interval right from the counts, and
that this interval (for this fixed sequence: 22 of 60) contains 0.3.
"""
from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest
from typing import List, Optional, Tuple

from _support import ROOT, python_env, python_m

from harness import _config, _wait
from harness._cli.flakehunt import (
    DUMP_END,
    Progress,
    RunResult,
    failure_kind,
    normalise,
    wilson_interval,
)
from harness._os import procinfo as _procinfo
from harness._os.identity import ProcessId

FIXTURES = os.path.join(ROOT, "test", "fixtures_cli")
HANG = 120  # generous hang-catcher for a whole flakehunt command


def expected_failures(runs: int) -> int:
    """The fixture's failures for runs 1..runs, from the same seeds it uses."""
    return sum(random.Random(f"flaky-{i}").random() < 0.3 for i in range(1, runs + 1))


def wilson(k: int, n: int, z: float = 1.959963984540054) -> Tuple[float, float]:
    """The Wilson score interval written out independently of harness's code."""
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)


def flakehunt_cmd(*args: str) -> List[str]:
    """``python -m harness flakehunt``, interruptible by SIGINT even when this
    runner was started with SIGINT ignored (see ``_support.DEFAULT_SIGINT``)."""
    return python_m("harness", "flakehunt", "--start-dir", FIXTURES, *args)


def flakehunt(*args: str, env: Optional[dict] = None) -> Tuple[int, str, str]:
    proc = subprocess.run(flakehunt_cmd(*args), cwd=ROOT, env=env or python_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=HANG)
    return proc.returncode, proc.stdout, proc.stderr


def harness_dirs_of(pid: int) -> List[str]:
    """harness-* temp dirs whose owner file names ``pid``."""
    found = []
    base = tempfile.gettempdir()
    for name in os.listdir(base):
        if name.startswith("harness-"):
            try:
                with open(os.path.join(base, name, "owner")) as f:
                    owner = ProcessId.parse(f.read())
                    if owner is not None and owner.pid == pid:
                        found.append(name)
            except OSError:
                continue
    return found


class WilsonTest(unittest.TestCase):
    def test_matches_the_formula_and_known_values(self) -> None:
        for k, n in ((0, 10), (5, 10), (22, 60), (200, 200), (1, 1000)):
            low, high = wilson_interval(k, n)
            ref_low, ref_high = wilson(k, n)
            self.assertAlmostEqual(low, max(0.0, ref_low), places=12)
            self.assertAlmostEqual(high, min(1.0, ref_high), places=12)
        # Published values (Newcombe 1998): 0 of 10 -> 0 to 0.2775; 5 of 10 -> 0.2366 to 0.7634.
        self.assertEqual([round(x, 4) for x in wilson_interval(0, 10)], [0.0, 0.2775])
        self.assertEqual([round(x, 4) for x in wilson_interval(5, 10)], [0.2366, 0.7634])
        self.assertEqual(wilson_interval(0, 0), (0.0, 1.0))


class FailureKindTest(unittest.TestCase):
    def test_exception_line_of_the_first_failure(self) -> None:
        output = (
            "F\n" + "=" * 70 + "\nFAIL: test_a (mod.C.test_a)\n" + "-" * 70 + "\n"
            "Traceback (most recent call last):\n  File \"x.py\", line 3, in test_a\n"
            "    self.assertEqual(a, b)\n    ^^^^^^^^^\n"
            "AssertionError: 'foo\\nbar' != 'foo\\nbaz'\n  foo\n- bar\n+ baz\n\n" + "=" * 70 +
            "\nERROR: test_b (mod.C.test_b)\n" + "-" * 70 + "\nKeyError: 'x'\n\n" + "-" * 70 +
            "\nRan 2 tests in 0.001s\n\nFAILED (failures=1, errors=1)\n")
        self.assertEqual(failure_kind(output),
                         "test_a: AssertionError: 'foo\\nbar' != 'foo\\nbaz'")

    def test_chained_exception_reports_the_last(self) -> None:
        output = (
            "=" * 70 + "\nERROR: test_c (m.C.test_c)\n" + "-" * 70 + "\n"
            "Traceback (most recent call last):\n  File \"m.py\", line 1\nKeyError: 'message'\n\n"
            "During handling of the above exception, another exception occurred:\n\n"
            "Traceback (most recent call last):\n  File \"m.py\", line 2\n"
            "RuntimeError: no message in the reply\n\n" + "-" * 70 + "\nRan 1 test\n")
        self.assertEqual(failure_kind(output), "test_c: RuntimeError: no message in the reply")

    def test_normalise_drops_what_varies_between_runs(self) -> None:
        tmp = tempfile.gettempdir()
        a = normalise(f"ConnectionRefusedError at 0x7f3a2c in {tmp}/harness-ab12/x.log "
                      f"after 0.51234s on port 43121, status 404")
        b = normalise(f"ConnectionRefusedError at 0x7f99ff in {tmp}/harness-zz99/x.log "
                      f"after 1.00017s on port 10007, status 404")
        self.assertEqual(a, b)
        self.assertIn("status 404", a)  # small numbers (status codes) stay
        self.assertNotEqual(normalise("status 404"), normalise("status 500"))
        self.assertIsNone(failure_kind("...\nRan 3 tests\n\nOK\n"))


class ProgressTest(unittest.TestCase):
    def test_plain_lines_name_each_failure_once_when_runs_finish_out_of_order(self) -> None:
        stream = io.StringIO()
        progress = Progress(stream, total=3)
        self.assertFalse(progress.live)
        second = RunResult(2, "fail", "test_x: KeyError: 'a'", "", 0.1, 1)
        first = RunResult(1, "fail", "test_x: KeyError: 'b'", "", 0.1, 1)
        third = RunResult(3, "pass", None, "", 0.1, 0)
        progress.update([second], 1.0)
        progress.update([second, first], 2.0)
        progress.update([second, first, third], 3.0)
        lines = stream.getvalue().splitlines()
        self.assertEqual([line for line in lines if line.startswith("run ")],
                         ["run 2: FAIL test_x: KeyError: 'a'", "run 1: FAIL test_x: KeyError: 'b'"])
        self.assertEqual(lines[-1], "[3/3] failures 2 (66.7%)  elapsed 3s  left ~0s")


class FlakehuntRunTest(unittest.TestCase):
    def test_flaky_rate_interval_contains_the_true_rate(self) -> None:
        runs = 60
        expected = expected_failures(runs)
        code, out, err = flakehunt("flaky_fixture.Flaky.test_draw", "-n", str(runs), "-j", "2",
                                   "--json")
        self.assertEqual(code, 1, err)
        data = json.loads(out)
        self.assertEqual((data["runs"], data["failures"]), (runs, expected))
        low, high = data["interval95"]
        ref_low, ref_high = wilson(expected, runs)
        self.assertAlmostEqual(low, ref_low, places=9)
        self.assertAlmostEqual(high, ref_high, places=9)
        self.assertLess(low, 0.3)
        self.assertGreater(high, 0.3)
        self.assertEqual(len(data["kinds"]), 1, data["kinds"])
        kind = data["kinds"][0]
        self.assertEqual(kind["count"], expected)
        self.assertEqual(kind["runs"], [i for i in range(1, runs + 1)
                                        if random.Random(f"flaky-{i}").random() < 0.3])
        self.assertTrue(kind["kind"].startswith("test_draw: AssertionError: "), kind["kind"])
        self.assertIn("Traceback (most recent call last)", kind["first_output"])
        self.assertIn("the draw was below 0.3", kind["first_output"])

    def test_text_summary_kinds_and_first_failure_output(self) -> None:
        code, out, err = flakehunt("flaky_fixture.TwoKinds", "-n", "6", "-j", "2")
        self.assertEqual(code, 1, err)
        self.assertIn("flakehunt flaky_fixture.TwoKinds: 4 of 6 runs failed", out)
        low, high = wilson(4, 6)
        self.assertIn(f"failure rate 66.7%, 95% interval {100 * low:.1f}% to "
                      f"{100 * high:.1f}% (Wilson)", out)
        # Runs 1 and 4 raise KeyError; runs 2 and 5 fail an assertion whose
        # message differs by an address and a time: one kind each.
        self.assertIn("      2  test_two_kinds: KeyError: 'message'\n", out)
        self.assertRegex(out, r"\n      2  test_two_kinds: AssertionError: 503 != 200 : status at "
                              r"0x… after N\.N\n")
        self.assertIn("--- first failure of kind: test_two_kinds: KeyError: 'message' (run 1,", out)
        self.assertIn("HARNESS_FLAKEHUNT_RUN=2) ---", out)
        self.assertIn("raise KeyError(\"message\")", out)  # the full output, traceback and all
        # Not a terminal: plain progress lines, one per failure.
        self.assertIn("run 1: FAIL test_two_kinds: KeyError: 'message'\n", out)
        self.assertIn("[6/6] failures 4 (66.7%)", out)
        self.assertNotIn("\r", out)

    def test_steady_test_exits_0_with_an_upper_bound(self) -> None:
        code, out, err = flakehunt("flaky_fixture.Steady.test_ok", "-n", "5", "-j", "2")
        self.assertEqual(code, 0, out + err)
        self.assertIn("0 of 5 runs failed", out)
        self.assertIn(f"fails in fewer than {100 * wilson(0, 5)[1]:.1f}% of runs", out)
        self.assertNotIn("failure kinds", out)

    def test_without_an_id_the_whole_suite_runs_in_each_run(self) -> None:
        # Written at run time: a test*.py fixture would be collected by pytest.
        suite = tempfile.mkdtemp(prefix="flakehunt-suite-")
        self.addCleanup(shutil.rmtree, suite)
        files = {
            "test_first.py": "import unittest\n"
                             "class First(unittest.TestCase):\n"
                             "    def test_ok(self):\n"
                             "        pass\n",
            "test_second.py": "import os, unittest\n"
                              "class Second(unittest.TestCase):\n"
                              "    def test_every_third_run(self):\n"
                              "        run = int(os.environ['HARNESS_FLAKEHUNT_RUN'])\n"
                              "        self.assertNotEqual(run % 3, 0, 'third run')\n",
        }
        for name, text in files.items():
            with open(os.path.join(suite, name), "w") as f:
                f.write(text)
        command = [sys.executable, "-m", "harness", "flakehunt", "--start-dir", suite]
        proc = subprocess.run(command + ["-n", "6", "-j", "2"], cwd=ROOT, env=python_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=HANG)
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        self.assertIn(f"flakehunt the suite in {suite}: 2 of 6 runs failed", proc.stdout)
        self.assertIn("      2  test_every_third_run: AssertionError: 0 == 0 : third run\n",
                      proc.stdout)
        self.assertIn("Ran 2 tests", proc.stdout)  # both modules, in every run
        # Several ids run together in each run.
        proc = subprocess.run(command + ["test_first", "test_second.Second", "-n", "2", "--json"],
                              cwd=ROOT, env=python_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=HANG)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        data = json.loads(proc.stdout)
        self.assertEqual(data["test_ids"], ["test_first", "test_second.Second"])
        self.assertEqual((data["runs"], data["failures"]), (2, 0))

    def test_until_fail_stops_at_the_first_failure(self) -> None:
        code, out, err = flakehunt("flaky_fixture.FailsOnThird", "-n", "50", "-j", "1",
                                   "--until-fail", "--json")
        self.assertEqual(code, 1, err)
        data = json.loads(out)
        self.assertEqual((data["runs"], data["failures"]), (3, 1))
        self.assertEqual(data["kinds"][0]["runs"], [3])
        self.assertIn("--until-fail", data["stop_reason"])

    def test_live_progress_line_on_a_terminal(self) -> None:
        try:
            import pty
        except ImportError:  # pragma: no cover
            self.skipTest("no pty")
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen(flakehunt_cmd("flaky_fixture.Steady", "-n", "3", "-j", "1"),
                                    cwd=ROOT, env=python_env(), stdout=slave,
                                    stderr=subprocess.STDOUT)
            os.close(slave)
            slave = -1
            chunks = []
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the other side is closed
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            self.assertEqual(proc.wait(HANG), 0)
        finally:
            os.close(master)
            if slave >= 0:
                os.close(slave)
        text = b"".join(chunks).decode()
        self.assertIn("\r[3/3] failures 0 (0.0%)", text)
        self.assertNotIn("\n[3/3]", text)  # a live line, not plain lines
        self.assertIn("0 of 3 runs failed", text)


class FlakehuntHangTest(unittest.TestCase):
    def setUp(self) -> None:
        self.markers = tempfile.mkdtemp(prefix="flakehunt-test-")
        self.addCleanup(shutil.rmtree, self.markers, True)
        self.env = python_env()
        self.env["FLAKEHUNT_MARKER_DIR"] = self.markers

    def tokens(self) -> List[str]:
        found = []
        for name in sorted(os.listdir(self.markers)):
            if name.endswith(".tokens"):
                with open(os.path.join(self.markers, name)) as f:
                    found.extend(f.read().split())
        return found

    def wait_for_tokens(self, count: int, proc: subprocess.Popen) -> None:
        """Until ``count`` helper tokens are written (the runs reached their hang), or
        flakehunt ended, or the hang-catcher."""
        deadline = _wait.Deadline(HANG)
        for pause in _wait.backoff(cap=0.1):
            if len(self.tokens()) >= count or deadline.expired or proc.poll() is not None:
                return
            _wait_for(pause)

    def assert_all_gone(self, tokens: List[str]) -> None:
        for token in tokens:
            self.assertFalse(_procinfo.is_alive(token), f"{token} survived flakehunt")

    def test_hanging_runs_are_killed_with_their_group_and_count_as_timeout(self) -> None:
        proc = subprocess.Popen(flakehunt_cmd("flaky_fixture.Hangs", "-n", "2", "-j", "2",
                                              "--timeout", "3", "--json"),
                                cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True)
        out, err = proc.communicate(timeout=HANG)
        self.assertEqual(proc.returncode, 1, err)
        data = json.loads(out)
        self.assertEqual((data["runs"], data["failures"]), (2, 2))
        self.assertEqual([(k["kind"], k["count"]) for k in data["kinds"]],
                         [(f"timeout: no result within {_config.scaled(3):g}s", 2)])
        # The stack dump taken before the kill shows where the test hung.
        output = data["kinds"][0]["first_output"]
        self.assertIn("in test_hang", output)
        # The dump was complete before the run was stopped.
        self.assertIn(DUMP_END.decode(), output)
        self.assertLess(output.index("in test_hang"), output.index(DUMP_END.decode()))
        tokens = self.tokens()
        self.assertEqual(len(tokens), 4, "both runs should have reached the hang before the "
                                         "timeout (on a slow machine set HARNESS_TIMEOUT_FACTOR)")
        self.assert_all_gone(tokens)
        self.assertEqual(harness_dirs_of(proc.pid), [])

    def test_hung_runs_and_their_helpers_die_with_a_sigkilled_flakehunt(self) -> None:
        proc = subprocess.Popen(flakehunt_cmd("flaky_fixture.Hangs", "-n", "2", "-j", "2",
                                              "--timeout", "600"),
                                cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            self.wait_for_tokens(4, proc)
            tokens = self.tokens()
            self.assertEqual(len(tokens), 4, "both runs should have reached their hang")
            proc.kill()  # no handler, no cleanup code of flakehunt's runs
            proc.wait(HANG)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        deadline = _wait.Deadline(HANG)
        for pause in _wait.backoff(cap=0.1):
            if (not any(_procinfo.is_alive(t) for t in tokens) and not harness_dirs_of(proc.pid)
                    or deadline.expired):
                break
            _wait_for(pause)
        self.assert_all_gone(tokens)
        self.assertEqual(harness_dirs_of(proc.pid), [], "flakehunt's temp dir survived it")

    def test_processes_a_passing_run_leaves_in_its_group_are_ended(self) -> None:
        code, out, err = flakehunt("flaky_fixture.LeavesHelper", "-n", "2", "-j", "2",
                                   env=self.env)
        self.assertEqual(code, 0, out + err)
        self.assertIn("0 of 2 runs failed", out)
        tokens = self.tokens()
        self.assertEqual(len(tokens), 4)
        self.assert_all_gone(tokens)

    def test_without_waitid_hangs_are_still_killed_with_their_group(self) -> None:
        """The portable path (macOS has no os.waitid): poll, reap, then end the group."""
        code = ("import os, sys\ndel os.waitid\nfrom harness._cli import main\n"
                "sys.exit(main(sys.argv[1:]))\n")
        proc = subprocess.run([sys.executable, "-c", code, "flakehunt", "flaky_fixture.Hangs",
                               "-n", "1", "-j", "1", "--timeout", "3", "--json",
                               "--start-dir", FIXTURES],
                              cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=HANG)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        data = json.loads(proc.stdout)
        self.assertEqual([(k["kind"], k["count"]) for k in data["kinds"]],
                         [(f"timeout: no result within {_config.scaled(3):g}s", 1)])
        tokens = self.tokens()
        self.assertEqual(len(tokens), 2, "the run should have reached the hang before the timeout "
                         "(on a slow machine set HARNESS_TIMEOUT_FACTOR)")
        self.assert_all_gone(tokens)

    def test_ctrl_c_stops_cleanly_and_prints_the_summary_so_far(self) -> None:
        proc = subprocess.Popen(flakehunt_cmd("flaky_fixture.HangsAfterTwo", "-n", "10", "-j",
                                              "2", "--timeout", "600"),
                                cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True)
        try:
            # Runs 1 and 2 fail at once; runs 3 and 4 hang: wait until both hang.
            self.wait_for_tokens(4, proc)
            self.assertEqual(len(self.tokens()), 4, "runs 3 and 4 never reached their hang")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=HANG)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertEqual(proc.returncode, 130, out + err)
        self.assertIn("flakehunt flaky_fixture.HangsAfterTwo: 2 of 2 runs failed", out)
        self.assertIn("stopped early: interrupted (Ctrl-C)", out)
        self.assertIn("      2  test_fail_then_hang: AssertionError: quick failure before the "
                      "hangs", out)
        self.assertNotIn("Traceback", err)
        self.assert_all_gone(self.tokens())
        self.assertEqual(harness_dirs_of(proc.pid), [])


def _wait_for(seconds: float) -> None:
    """Pause a test's polling loop (select on nothing: no busy wait)."""
    import select
    select.select([], [], [], seconds)


class FlakehuntUsageTest(unittest.TestCase):
    def test_unloadable_test_id_is_a_usage_error(self) -> None:
        code, out, err = flakehunt("no_such_module.Test", "-n", "50")
        self.assertEqual(code, 2)
        self.assertIn("'no_such_module.Test' could not be loaded", err)
        self.assertIn("No module named 'no_such_module'", err)
        self.assertIn("--start-dir", err)
        code, out, err = flakehunt("flaky_fixture.Flaky.test_nope", "-n", "50")
        self.assertEqual(code, 2)
        self.assertIn("test_nope", err)

    def test_test_id_without_tests_is_a_usage_error(self) -> None:
        code, out, err = flakehunt("flaky_fixture.Empty", "-n", "50")
        self.assertEqual(code, 2, out + err)
        self.assertIn("'flaky_fixture.Empty' names no test", err)

    def test_bad_arguments_exit_2_with_usage(self) -> None:
        cases = [
            (["flaky_fixture.Steady", "-n", "0"], "must be >= 1, got 0"),
            (["flaky_fixture.Steady", "-j", "two"], "must be a whole number"),
            (["flaky_fixture.Steady", "--timeout", "-1"], "positive number of seconds"),
            (["flaky_fixture.Steady", "--timeout", "nan"], "positive number of seconds"),
        ]
        for args, message in cases:
            code, out, err = flakehunt(*args)
            self.assertEqual(code, 2, args)
            self.assertIn("usage:", err)
            self.assertIn(message, err)
        proc = subprocess.run([sys.executable, "-m", "harness", "flakehunt", "x",
                               "--start-dir", os.path.join(FIXTURES, "missing")],
                              cwd=ROOT, env=python_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=HANG)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("is not a directory", proc.stderr)


class NodeIdTest(unittest.TestCase):
    """pytest node ids of unittest tests run as the unittest ids they name;
    tests only pytest can run are refused, saying why and what to do."""

    def test_a_node_id_of_a_unittest_test_runs_as_its_unittest_id(self) -> None:
        # Relative to the working directory (as pytest prints them) ...
        node = "test/fixtures_cli/flaky_fixture.py::Steady::test_ok"
        code, out, err = flakehunt(node, "-n", "3")
        self.assertEqual(code, 0, out + err)
        self.assertIn(f"pytest node id {node} is unittest id flaky_fixture.Steady.test_ok", out)
        self.assertIn("0 of 3 runs failed", out)
        # ... or to --start-dir, a class or a whole module, and several at once.
        code, out, err = flakehunt("flaky_fixture.py::Steady", "flaky_fixture.py::FailsOnThird",
                                   "-n", "3", "--json")
        self.assertEqual(code, 1, out + err)
        data = json.loads(out)
        self.assertEqual(data["test_ids"], ["flaky_fixture.Steady", "flaky_fixture.FailsOnThird"])
        self.assertEqual((data["runs"], data["failures"]), (3, 1))

    def test_what_only_pytest_can_run_is_refused_with_the_reason(self) -> None:
        suite = tempfile.mkdtemp(prefix="flakehunt-nodeids-")
        self.addCleanup(shutil.rmtree, suite)
        with open(os.path.join(suite, "test_mixed.py"), "w") as f:
            f.write("import unittest\n"
                    "def test_function():\n    pass\n"
                    "class TestPlain:\n    def test_method(self):\n        pass\n"
                    "class Case(unittest.TestCase):\n    def test_case(self):\n        pass\n")
        elsewhere = os.path.join(FIXTURES, "flaky_fixture.py")
        mixed = os.path.join(suite, "test_mixed.py")
        cases = [
            (f"{mixed}::test_function", "is a pytest test function"),
            (f"{mixed}::TestPlain::test_method", "a plain class"),
            (f"{mixed}::Case::test_case[1]", "parametrized"),
            (f"{elsewhere}::Steady", "is not under --start-dir"),
            (f"{suite}/test_missing.py::Case", "no such file"),
        ]
        for node, reason in cases:
            with self.subTest(node=node):
                proc = subprocess.run(
                    [sys.executable, "-m", "harness", "flakehunt", "--start-dir", suite, node,
                     "-n", "5"], cwd=ROOT, env=python_env(), stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, universal_newlines=True, timeout=HANG)
                self.assertEqual(proc.returncode, 2, proc.stdout + proc.stderr)
                self.assertIn(node, proc.stderr)
                self.assertIn(reason, proc.stderr)
                self.assertIn("unittest", proc.stderr)
                self.assertNotIn("Ran ", proc.stdout + proc.stderr)  # refused before any run
        proc = subprocess.run(
            [sys.executable, "-m", "harness", "flakehunt", "--start-dir", suite,
             f"{mixed}::Case::test_case", "-n", "2"], cwd=ROOT, env=python_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=HANG)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn("0 of 2 runs failed", proc.stdout)


if __name__ == "__main__":
    unittest.main()
