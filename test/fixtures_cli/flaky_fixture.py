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
        run = int(os.environ.get("HARNESS_FLAKEHUNT_RUN", "0"))
        if run % 3 == 1:
            raise KeyError("message")  # an error kind, like the incident's KeyError
        if run % 3 == 2:
            self.assertEqual(200 + run % 2, 200, f"status at 0x{id(self):x} after {time.time()}")


class Hangs(unittest.TestCase):
    def test_hang(self) -> None:
        """Starts a helper in its own process group, records pids, then hangs."""
        import subprocess
        marker_dir = os.environ["FLAKEHUNT_MARKER_DIR"]
        run = os.environ.get("HARNESS_FLAKEHUNT_RUN", "0")
        helper = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(60)"])
        path = os.path.join(marker_dir, f"run-{run}.pids")
        with open(path + ".tmp", "w") as f:
            f.write(f"{os.getpid()} {helper.pid}\n")
        os.rename(path + ".tmp", path)  # atomic: the test sees both pids or nothing
        while True:
            time.sleep(60)


class Empty(unittest.TestCase):
    pass
