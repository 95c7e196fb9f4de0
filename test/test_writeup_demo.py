"""``python -m harness demo``: the write-up's suites in small, and the table
comparing them with the write-up's fixed sleeps."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

from _support import python_env

from harness._cli.demo import _union, comparison, writeup_start
from harness._cli.demo_app import ServerEvent

HANG = 240  # a hang-catcher, not a timing assertion


def demo(*args: str):
    """Run the demo in a subprocess with a temp dir of its own; (code, output, leftovers)."""
    tmp = tempfile.mkdtemp(prefix="t5-demo-")
    try:
        env = python_env()
        env["TMPDIR"] = tmp
        proc = subprocess.run([sys.executable, "-m", "harness", "demo"] + list(args), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=HANG)
        return proc.returncode, proc.stdout, os.listdir(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class DemoRunTest(unittest.TestCase):
    def test_demo_passes_prints_progress_and_the_table_and_leaves_nothing(self):
        code, out, leftovers = demo()
        self.assertEqual(code, 0, out)
        self.assertEqual(leftovers, [], out)  # no temp dirs, no logs, no app files
        self.assertIn("6 of 6 tests passed", out)
        self.assertEqual(len(re.findall(r"^  \[\d/6\] ok ", out, re.M)), 6, out)
        self.assertRegex(out, r"total +\d+\.\d\d s +\d+\.\d\d s +\d+\.\dx as long")
        self.assertRegex(out, r"sleeping after each stop +0\.00 s +\d+\.00 s")
        self.assertIn("from this run's events, not by rerunning", out)
        servers = int(re.search(r"(\d+) servers started and stopped", out).group(1))
        self.assertEqual(servers, 9)
        self.assertIn(f"{2 * servers:.2f} s", out)  # 2 s after each stop

    def test_show_failure_prints_a_report_with_the_server_log(self):
        code, out, leftovers = demo("--show-failure")
        self.assertEqual(code, 0, out)  # the failure is on purpose
        self.assertEqual(leftovers, [])
        self.assertIn("fails on purpose", out)
        self.assertIn("harness: log tail of the servers of", out)
        self.assertIn("GET /no-such-route 404", out)
        self.assertIn("6 of 7 tests passed", out)

    def test_help_and_bad_usage(self):
        code, out, _ = demo("--help")
        self.assertEqual(code, 0)
        self.assertIn("usage: python -m harness demo", out)
        self.assertIn("example", out)
        code, out, _ = demo("--no-such-option")
        self.assertEqual(code, 2)
        self.assertIn("unrecognized arguments: --no-such-option", out)


class WriteupModelTest(unittest.TestCase):
    """How the write-up column is computed."""

    def test_start_is_rounded_up_to_its_polls(self):
        self.assertEqual(writeup_start(0.01, crashed=False), 1.0)  # first poll at 0.5 s, then 1
        self.assertEqual(writeup_start(0.5, crashed=False), 1.0)
        self.assertEqual(writeup_start(0.51, crashed=False), 1.5)
        self.assertEqual(writeup_start(0.04, crashed=True), 0.5)  # a crash: seen at the next poll

    def test_union_counts_overlapping_starts_once(self):
        self.assertAlmostEqual(_union([(0.0, 1.0), (0.5, 1.5), (3.0, 4.0)]), 2.5)
        self.assertEqual(_union([]), 0.0)

    def test_comparison_rows(self):
        events = [ServerEvent("a", (0.0, 0.2), (1.0, 1.1), False),
                  ServerEvent("b", (2.0, 2.1), (2.1, 2.1), True)]
        rows = {what: (ours, theirs) for what, ours, theirs, _ in comparison(events, 3.0)}
        self.assertAlmostEqual(rows["waiting for servers to be ready"][0], 0.3)
        self.assertAlmostEqual(rows["waiting for servers to be ready"][1], 1.5)
        self.assertAlmostEqual(rows["stopping servers"][0], 0.1)
        self.assertEqual(rows["sleeping after each stop"], (0.0, 4.0))
        self.assertAlmostEqual(rows["the tests' own work"][0], 2.6)
        self.assertAlmostEqual(rows["total"][1], 1.5 + 0.1 + 4.0 + 2.6)


if __name__ == "__main__":
    unittest.main()
