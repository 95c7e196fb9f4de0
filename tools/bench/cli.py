"""How fast the command line is: flakehunt throughput and the latency of port/who/reap.

Table 1: runs per second of a tiny passing test, rerun in fresh interpreters:
a plain sequential loop of ``python -m unittest TEST_ID`` (what people
write in a shell) beside ``python -m harness flakehunt`` at -j 1, 2 and 4.
Medians of --repeats rounds (methods interleaved); "x" is the ratio to the
plain loop.  flakehunt's own cost is the difference at -j 1.

Table 2: wall time of one ``python -m harness port / who / reap --dry-run``
(median of --repeats), interpreter start included.

    python tools/bench/cli.py [--runs 40] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "test", "fixtures_cli")
TEST_ID = "flaky_fixture.Steady.test_ok"


def env() -> Dict[str, str]:
    result = dict(os.environ)
    result["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, result.get("PYTHONPATH")]))
    return result


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def plain_loop(runs: int) -> None:
    for _ in range(runs):
        subprocess.run([sys.executable, "-m", "unittest", TEST_ID], cwd=FIXTURES,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def flakehunt(runs: int, jobs: int) -> None:
    subprocess.run([sys.executable, "-m", "harness", "flakehunt", TEST_ID, "-n", str(runs),
                    "-j", str(jobs), "--start-dir", FIXTURES], cwd=ROOT, env=env(),
                   stdout=subprocess.DEVNULL, check=True)


def command(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "harness"] + list(args), cwd=ROOT, env=env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    methods: Dict[str, Callable[[], None]] = {
        "plain loop (python -m unittest)": lambda: plain_loop(args.runs),
        "flakehunt -j 1": lambda: flakehunt(args.runs, 1),
        "flakehunt -j 2": lambda: flakehunt(args.runs, 2),
        "flakehunt -j 4": lambda: flakehunt(args.runs, 4),
    }
    times: Dict[str, List[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, action in methods.items():
            times[name].append(timed(action))
    base = args.runs / statistics.median(times["plain loop (python -m unittest)"])
    print(f"{args.runs} runs of {TEST_ID}, median of {args.repeats}, {os.cpu_count()} cores, "
          f"Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}")
    print(f"{'method':34} {'runs/s':>8} {'x':>6}")
    for name in methods:
        rate = args.runs / statistics.median(times[name])
        print(f"{name:34} {rate:8.1f} {rate / base:6.2f}")

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = str(held.getsockname()[1])
        commands = {
            "port": ("port",),
            "who PORT (held)": ("who", port),
            "reap --dry-run": ("reap", "--dry-run"),
            "python -c pass (start-up alone)": None,
        }
        print()
        print(f"{'command':34} {'ms':>8}")
        for name, argv in commands.items():
            if argv is None:
                samples = [timed(lambda: subprocess.run([sys.executable, "-c", "pass"]))
                           for _ in range(args.repeats)]
            else:
                samples = [timed(lambda argv=argv: command(*argv)) for _ in range(args.repeats)]
            print(f"{name:34} {1000 * statistics.median(samples):8.0f}")


if __name__ == "__main__":
    main()
