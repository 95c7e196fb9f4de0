"""rss/uss of a process tree, and measure_leak verdicts that noise cannot cross."""
from __future__ import annotations

import os
import random
import signal
import time
import unittest
from unittest import mock

from _http_servers import spawn_script
from _support import spawn_python

from harness import memory
from harness.errors import HarnessError
from harness.http import request
from harness.memory import LeakReport, measure_leak, rss, uss

KIB = 1024
MIB = 1024 * KIB
NO_SUCH_PID = 2 ** 31 - 1  # above any pid_max: never a live process
CAN_READ = memory.HAVE_PSUTIL or memory.HAVE_PROC

# A parent that starts a child holding 32 MiB of touched memory, then waits for stdin EOF.
TREE = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c",
    "import sys; data = b'x' * (32 << 20); print('ready', flush=True); sys.stdin.read()"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True)
child.stdout.readline()
print("ready", flush=True)
sys.stdin.read()
child.stdin.close()
child.wait()
"""


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat[stat.rfind(")") + 2:][:1]


def _quiet_tree(test: unittest.TestCase):
    proc = spawn_python(TREE)

    def stop() -> None:
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()

    test.addCleanup(stop)
    test.assertEqual(proc.stdout.readline().strip(), "ready")
    return proc


class ReadingTest(unittest.TestCase):

    @unittest.skipUnless(CAN_READ, "needs psutil or /proc")
    def test_rss_and_uss_of_this_process(self):
        me = os.getpid()
        self.assertGreater(rss(me), 1 * MIB)
        self.assertGreater(uss(me, children=False), 1 * MIB)
        self.assertLessEqual(uss(me, children=False), rss(me, children=False) + 64 * KIB)

    @unittest.skipUnless(CAN_READ, "needs psutil or /proc")
    def test_children_are_included(self):
        tree = _quiet_tree(self)
        alone = rss(tree.pid, children=False)
        total = rss(tree.pid)
        self.assertGreaterEqual(total - alone, 32 * MIB)
        self.assertGreaterEqual(uss(tree.pid) - uss(tree.pid, children=False), 32 * MIB)

    @unittest.skipUnless(memory.HAVE_PSUTIL and memory.HAVE_PROC, "needs psutil and /proc")
    def test_proc_fallback_agrees_with_psutil(self):
        tree = _quiet_tree(self)
        # Stopped, our child cannot touch a page between the two readings.
        os.kill(tree.pid, signal.SIGSTOP)
        self.addCleanup(os.kill, tree.pid, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while _state(tree.pid) != "T":
            self.assertLess(time.monotonic(), deadline, "the child never stopped")
            time.sleep(0.001)
        with mock.patch.object(memory, "HAVE_PSUTIL", False):
            by_proc = (rss(tree.pid, children=False), uss(tree.pid, children=False))
        self.assertEqual(by_proc, (rss(tree.pid, children=False), uss(tree.pid, children=False)))

    @unittest.skipUnless(CAN_READ, "needs psutil or /proc")
    def test_gone_process(self):
        with self.assertRaises(ProcessLookupError) as caught:
            rss(NO_SUCH_PID)
        self.assertIn(str(NO_SUCH_PID), str(caught.exception))

    def test_without_psutil_or_proc_the_error_says_what_is_needed(self):
        with mock.patch.object(memory, "HAVE_PSUTIL", False), \
                mock.patch.object(memory, "HAVE_PROC", False):
            with self.assertRaises(HarnessError) as caught:
                rss(os.getpid(), children=False)
        self.assertIn("pip install psutil", str(caught.exception))

    def test_bad_arguments(self):
        for args, error, name in [(("12",), TypeError, "pid"), ((True,), TypeError, "pid"),
                                  ((0,), ValueError, "pid"),
                                  ((1, True, "vms"), ValueError, "metric")]:
            with self.subTest(args=args):
                with self.assertRaises(error) as caught:
                    memory.memory(*args)
                self.assertIn(name, str(caught.exception))


def _line(slope: float, n: int = 10, start: int = 50 * MIB):
    return [int(start + slope * i) for i in range(n)]


class VerdictTest(unittest.TestCase):
    """The verdict on synthetic samples: exact, so no luck is involved."""

    T = memory.DEFAULT_THRESHOLD

    def judge(self, samples, threshold=None):
        slope, stderr = memory._fit(samples)
        return memory._verdict(samples, slope, stderr, threshold or self.T)

    def test_fit_is_exact_on_a_line(self):
        slope, stderr = memory._fit(_line(200 * KIB))
        self.assertAlmostEqual(slope, 200 * KIB, delta=1)
        self.assertLess(stderr, 1)

    def test_a_steady_leak_with_noise_is_a_leak(self):
        rng = random.Random(4)
        samples = [s + rng.randint(-40 * KIB, 40 * KIB) for s in _line(200 * KIB)]
        leaking, reason = self.judge(samples)
        self.assertTrue(leaking, reason)

    def test_flat_and_shrinking_are_not(self):
        self.assertFalse(self.judge([50 * MIB] * 10)[0])
        self.assertFalse(self.judge(_line(-300 * KIB))[0])

    def test_a_single_step_is_not_a_leak_however_large(self):
        samples = [50 * MIB] * 5 + [80 * MIB] * 5
        leaking, reason = self.judge(samples)
        self.assertFalse(leaking)
        self.assertIn("not sustained", reason)

    def test_growth_below_the_threshold_is_not_a_leak(self):
        leaking, reason = self.judge(_line(40 * KIB))
        self.assertFalse(leaking)
        self.assertIn("not above the threshold", reason)
        self.assertTrue(self.judge(_line(40 * KIB), threshold=16 * KIB)[0])

    def test_noise_within_six_thresholds_can_never_be_a_leak(self):
        # The largest slope samples confined to a band of width B can have over
        # n rounds is B * sum(x - mean for x above the mean) / sum((x - mean)^2):
        # 0.15 B for 10 rounds.  So noise narrower than 6.6 thresholds cannot
        # even pass the first test.  Check the bound on the worst case and on
        # many random sequences.
        band = 6 * self.T
        worst = [0] * 5 + [band] * 5
        self.assertLess(memory._fit(worst)[0], self.T)
        rng = random.Random(1)
        for _ in range(2000):
            samples = [50 * MIB + rng.randint(0, band) for _ in range(10)]
            self.assertFalse(self.judge(samples)[0], samples)

    def test_a_noisy_slope_is_not_significant(self):
        samples = [0, 3 * MIB, 0, 3 * MIB, 0, 3 * MIB, 0, 3 * MIB, 0, 3 * MIB + 1 * MIB]
        leaking, reason = self.judge(samples)
        self.assertFalse(leaking)

    def test_report_prints_a_table(self):
        samples = _line(200 * KIB, n=4)
        slope, stderr = memory._fit(samples)
        leaking, reason = memory._verdict(samples, slope, stderr, self.T)
        report = LeakReport(pid=42, metric="uss", threshold=self.T, samples=samples,
                            warmup_samples=[49 * MIB], slope=slope, stderr=stderr,
                            leaking=leaking, reason=reason)
        text = str(report)
        lines = text.splitlines()
        self.assertIn("pid 42 (USS), 4 rounds after 1 warm-up", lines[0])
        self.assertEqual(lines[1].split(), ["round", "USS", "KiB", "change", "KiB"])
        self.assertEqual(lines[2].split()[0], "w1")
        self.assertEqual(lines[4].split(), ["2", "51,400.0", "+200.0"])
        self.assertIn("slope +200.0 KiB/round", text)
        self.assertTrue(lines[-1].startswith("verdict: LEAKING"))
        self.assertEqual(report.growth, 600 * KIB)
        self.assertEqual(report.rounds, 4)


@unittest.skipUnless(CAN_READ, "needs psutil or /proc")
class MeasureLeakTest(unittest.TestCase):

    def server(self, mode: str):
        proc, url = spawn_script(self, "mem_server.py", mode)

        def workload(requests: int = 1):
            def run() -> None:
                for _ in range(requests):
                    request("GET", url + "/work", expect_status=200)
            return run

        return proc, workload

    def test_a_server_leaking_200_kib_per_round_is_leaking(self):
        proc, workload = self.server("leak")
        report = measure_leak(proc, workload(1), rounds=8, warmup=2)
        self.assertTrue(report.leaking, str(report))
        self.assertEqual(report.metric, "uss" if memory.uss_available(proc.pid) else "rss")
        self.assertTrue(150 * KIB < report.slope < 300 * KIB, str(report))
        self.assertEqual((len(report.samples), len(report.warmup_samples)), (8, 2))
        self.assertIn("verdict: LEAKING", str(report))
        # A plain int pid works the same.
        self.assertTrue(measure_leak(proc.pid, workload(1), rounds=4, warmup=0).leaking)

    def test_a_steady_server_is_not_leaking_in_repeated_runs(self):
        proc, workload = self.server("steady")
        for metric in ("auto", "auto", "rss"):
            report = measure_leak(proc, workload(20), rounds=8, warmup=3, metric=metric)
            self.assertFalse(report.leaking, str(report))
            self.assertIn("verdict: not leaking", str(report))

    def test_a_server_that_exits_mid_measurement(self):
        proc, workload = self.server("steady")
        calls = []

        def kill_on_third() -> None:
            calls.append(1)
            if len(calls) == 3:
                proc.kill()
                proc.wait(30)

        with self.assertRaises(HarnessError) as caught:
            measure_leak(proc, kill_on_third, rounds=5, warmup=1)
        self.assertIn("exited during round 3", str(caught.exception))

    def test_bad_arguments_name_the_argument(self):
        me = os.getpid()
        cases = [
            ((object(), lambda: None), {}, ValueError, "server"),
            ((me, "workload"), {}, TypeError, "workload"),
            ((me, lambda: None), {"rounds": 2}, ValueError, "rounds"),
            ((me, lambda: None), {"rounds": 5.0}, TypeError, "rounds"),
            ((me, lambda: None), {"warmup": -1}, ValueError, "warmup"),
            ((me, lambda: None), {"threshold": 0}, ValueError, "threshold"),
            ((me, lambda: None), {"threshold": "1k"}, TypeError, "threshold"),
            ((me, lambda: None), {"metric": "pss"}, ValueError, "metric"),
            ((NO_SUCH_PID, lambda: None), {"metric": "rss"}, ProcessLookupError, "pid"),
        ]
        for args, kwargs, error, name in cases:
            with self.subTest(args=args, kwargs=kwargs):
                with self.assertRaises(error) as caught:
                    measure_leak(*args, **kwargs)
                self.assertIn(name, str(caught.exception))


if __name__ == "__main__":
    unittest.main()
