"""Deliberately flaky tests that test_flakehunt.py measures with flakehunt.

Not collected by the suite's discovery (the file name does not match
test*.py); flakehunt imports it with --start-dir test/fixtures_cli.
"""
import os
import random
import sys
import time
import unittest

FAIL_BELOW = 0.3
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def draw() -> float:
    """A draw in [0, 1): fixed per flakehunt run (seeded by the run number), random otherwise."""
    run = os.environ.get("HARNESS_FLAKEHUNT_RUN")
    return random.Random(f"flaky-{run}").random() if run else random.random()


class Flaky(unittest.TestCase):
    def test_draw(self) -> None:
        self.assertGreaterEqual(draw(), FAIL_BELOW, "the draw was below 0.3")


class Steady(unittest.TestCase):
    def test_ok(self) -> None:
        self.assertTrue(True)


class TwoKinds(unittest.TestCase):
    def test_two_kinds(self) -> None:
        run = _run_number()
        if run % 3 == 1:
            raise KeyError("message")  # an error kind, like the incident's KeyError
        if run % 3 == 2:
            self.assertEqual(503, 200, f"status at 0x{id(self):x} after {time.time()}")


def _run_number() -> int:
    return int(os.environ.get("HARNESS_FLAKEHUNT_RUN", "0"))


def _hang_with_helper() -> None:
    """Start a helper in this process group, record both identities, then hang."""
    _start_helper()
    while True:
        time.sleep(60)


def _start_helper() -> None:
    """Start a helper in this process group and record both identities.

    The identity tokens (pid + start time, from this checkout's harness)
    let the test check that both died without mistaking a reused pid.
    """
    import subprocess
    sys.path.insert(0, ROOT)
    from harness._os import procinfo as _procinfo
    helper = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(60)"])
    tokens = [_procinfo.identity(os.getpid()), _procinfo.identity(helper.pid)]
    path = os.path.join(os.environ["FLAKEHUNT_MARKER_DIR"], f"run-{_run_number()}.tokens")
    with open(path + ".tmp", "w") as f:
        f.write(" ".join(str(t) for t in tokens) + "\n")
    os.rename(path + ".tmp", path)  # atomic: the test sees both tokens or nothing


class Hangs(unittest.TestCase):
    def test_hang(self) -> None:
        _hang_with_helper()


class HangsAfterTwo(unittest.TestCase):
    def test_fail_then_hang(self) -> None:
        if _run_number() <= 2:
            self.fail("quick failure before the hangs")
        _hang_with_helper()


class LeavesHelper(unittest.TestCase):
    def test_passes_but_leaves_a_process(self) -> None:
        _start_helper()


class FailsOnThird(unittest.TestCase):
    def test_third(self) -> None:
        self.assertNotEqual(_run_number(), 3, "run 3 fails")


class Empty(unittest.TestCase):
    pass
