"""tools/bench/stress.py, small: parallel lifecycles in a range too tight to rest.

The benchmark itself runs for minutes; this keeps it honest in every CI
run: three workers share five ports (so ports of stopped servers, still in
TIME_WAIT, must be reused), crashing and wrong-JSON servers are among them,
and the run must end with no unexpected failure and nothing left behind.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import unittest

from _support import python_env, quiet_window

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRESS = os.path.join(ROOT, "tools", "bench", "stress.py")
HANG = 300.0  # hang-catcher only


def _load_stress():
    spec = importlib.util.spec_from_file_location("harness_stress_bench", STRESS)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


class StressToolTest(unittest.TestCase):
    def test_small_run_classifies_every_failure_and_leaves_nothing(self) -> None:
        stress = _load_stress()
        workers, per_worker = 3, 4
        # The first seed whose schedule has both kinds of expected failure, and
        # servers with and without the socket handed over.
        def covers(seed: int) -> bool:
            steps = [step for w in range(workers) for step in stress.plan(seed, w, per_worker)]
            return ({"crash", "wrong_json"} <= {kind for kind, _, _ in steps}
                    and {True, False} == {handoff for _, _, handoff in steps})
        seed = next(s for s in range(1, 1000) if covers(s))
        window = quiet_window(5, test=self)
        proc = subprocess.run(
            [sys.executable, STRESS, "--workers", str(workers),
             "--lifecycles", str(workers * per_worker), "--oversubscribe", "0",
             "--approach", "harness", "--range", f"{window[0]}-{window[-1]}",
             "--seed", str(seed), "--json"],
            cwd=ROOT, env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            universal_newlines=True, timeout=HANG)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        [summary] = json.loads(proc.stdout)
        self.assertEqual(summary["lifecycles"], workers * per_worker)
        self.assertEqual(summary["unexpected"], 0, summary["unexpected_kinds"])
        self.assertGreaterEqual(summary["must_fail"], 2)
        self.assertEqual(summary["classified"], summary["must_fail"])
        self.assertEqual(summary["ok"] + summary["must_fail"], workers * per_worker)
        self.assertTrue(0 < summary["handoff"] < workers * per_worker, summary["handoff"])
        for what in ("leftover_processes", "leftover_files", "leases_held", "fds_leaked"):
            self.assertEqual(summary[what], 0, (what, summary["leftover_details"]))

    def test_bad_arguments_are_refused_before_anything_starts(self) -> None:
        for args, message in ((["--range", "9100-9000"], "--range must be LOW-HIGH"),
                              (["--workers", "0"], "must be a positive integer"),
                              (["--oversubscribe", "-1"], "--oversubscribe must be 0 or more")):
            proc = subprocess.run([sys.executable, STRESS] + args, cwd=ROOT, env=python_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  universal_newlines=True, timeout=HANG)
            self.assertEqual(proc.returncode, 2, args)
            self.assertIn(message, proc.stderr)


if __name__ == "__main__":
    unittest.main()
