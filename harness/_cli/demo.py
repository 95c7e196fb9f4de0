"""``python -m harness demo``: a small suite of real servers, and what it saved.

Runs the bundled suite (:mod:`harness._cli.demo_app`: the incident write-up's
four suites in small) with a progress line, then prints how long it took
with harness beside how long the write-up's approach would have spent on
the same servers.  That column is computed from the events of this run:
each server's measured start-up and stop times, as the write-up's code
would have seen them — health polled every 0.5 s until two polls in a row
pass (a crash seen at the next poll), servers started one at a time, and a
2 s sleep after every stop.  Everything else (the tests' own work) is the
same in both columns.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import unittest
from typing import Any, List, Optional, Sequence, TextIO, Tuple

from . import demo_app

POLL_SECONDS = 0.5        # the write-up: a 0.5 s sleep between health checks
PASSES_IN_A_ROW = 2       # the write-up: "multiple health checks required"
SLEEP_AFTER_STOP = 2.0    # the write-up: "longer cleanup time (2s instead of 0.5s)"


class _Progress(unittest.TestResult):
    """One line per test: rewritten in place on a terminal, appended otherwise."""

    def __init__(self, stream: TextIO, total: int) -> None:
        super().__init__()
        self.stream = stream
        self.total = total
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.verdict = "ok"
        self.began = 0.0

    def _name(self, test: Any) -> str:
        return f"{type(test).__name__}.{getattr(test, '_testMethodName', test)}"

    def startTest(self, test: Any) -> None:
        super().startTest(test)
        self.verdict = "ok"
        self.began = time.monotonic()
        if self.tty:
            self.stream.write(f"\r\033[K  [{self.testsRun}/{self.total}] {self._name(test)} ...")
            self.stream.flush()

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self.verdict = "FAIL"

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self.verdict = "ERROR"

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.verdict = "FAIL"

    def stopTest(self, test: Any) -> None:
        super().stopTest(test)
        line = (f"  [{self.testsRun}/{self.total}] {self.verdict:<5} {self._name(test)} "
                f"({time.monotonic() - self.began:.2f} s)")
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if self.verdict != "ok" else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _union(intervals: Sequence[Tuple[float, float]]) -> float:
    """Seconds covered by at least one interval (servers may start at once)."""
    total, end = 0.0, -math.inf
    for low, high in sorted(intervals):
        if high <= end:
            continue
        total += high - max(low, end)
        end = high
    return total


def writeup_start(seconds: float, crashed: bool) -> float:
    """What the write-up's start-up wait would have taken for a server ready after ``seconds``."""
    first_seen = max(1, math.ceil(seconds / POLL_SECONDS - 1e-9)) * POLL_SECONDS
    return first_seen if crashed else first_seen + (PASSES_IN_A_ROW - 1) * POLL_SECONDS


def comparison(events: Sequence[Any], total: float) -> List[Tuple[str, float, float, str]]:
    """Rows of (what, harness seconds, write-up seconds, how the write-up spends it)."""
    started = _union([e.start for e in events])
    stopped = _union([e.stop for e in events if not e.crashed])
    rest = max(0.0, total - started - stopped)
    their_start = sum(writeup_start(e.start[1] - e.start[0], e.crashed) for e in events)
    their_stop = sum(e.stop[1] - e.stop[0] for e in events if not e.crashed)
    sleeps = SLEEP_AFTER_STOP * len(events)
    return [
        ("waiting for servers to be ready", started, their_start,
         f"health polled every {POLL_SECONDS:g} s, {PASSES_IN_A_ROW} passes in a row"),
        ("stopping servers", stopped, their_stop, "the same stops"),
        ("sleeping after each stop", 0.0, sleeps,
         f"{SLEEP_AFTER_STOP:g} s after each of {len(events)} servers"),
        ("the tests' own work", rest, rest, "the same"),
        ("total", total, their_start + their_stop + sleeps + rest, ""),
    ]


def _table(rows: Sequence[Tuple[str, float, float, str]]) -> str:
    lines = [f"  {'':<32} {'harness':>9} {'sleeps+polls':>13}",
             f"  {'':<32} {'-------':>9} {'------------':>13}"]
    for what, ours, theirs, how in rows:
        note = f"  {how}" if how else ""
        if what == "total":
            ratio = theirs / ours if ours > 0 else float("inf")
            note = f"  {ratio:.1f}x as long"
        lines.append(f"  {what:<32} {ours:>7.2f} s {theirs:>11.2f} s{note}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness demo", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a small suite of real servers (the incident write-up's suites in "
                    "small) and compare its time with the write-up's fixed sleeps.",
        epilog="example:\n  python -m harness demo\n  python -m harness demo --show-failure"
               "   # also see a failing test's report, with its server's log\n\n"
               "exit code: 0 every test passed, 1 a test failed")
    parser.add_argument("--show-failure", action="store_true",
                        help="add a test that fails on purpose, and print its report")
    return parser


def main(argv: Optional[Sequence[str]] = None, stream: Optional[TextIO] = None) -> int:
    options = build_parser().parse_args(list(argv) if argv is not None else None)
    out = stream if stream is not None else sys.stdout
    suite = demo_app.load_suite(show_failure=options.show_failure)
    total_tests = suite.countTestCases()
    out.write(f"harness demo: {total_tests} tests against real server processes "
              f"(stdlib HTTP apps started from app_code), Python {sys.version.split()[0]}\n")
    out.flush()

    recorder = demo_app.Recorder()
    demo_app.RECORDER = recorder
    result = _Progress(out, total_tests)
    began = time.monotonic()
    try:
        suite.run(result)
        suite._tearDownPreviousClass(None, result)  # type: ignore[attr-defined]  # class cleanups
    finally:
        demo_app.RECORDER = None
        result.finish()
    total = time.monotonic() - began

    on_purpose = [(t, text) for t, text in result.failures + result.errors
                  if isinstance(t, demo_app.ShowFailure)]
    real = [(t, text) for t, text in result.failures + result.errors
            if not isinstance(t, demo_app.ShowFailure)]
    for test, text in on_purpose:
        out.write(f"\nThe report of a failing test ({test.id()} fails on purpose; note the "
                  f"server log at its end):\n\n{text}\n")
    for failed, text in real:
        out.write(f"\nFAILED: {failed.id()}\n{text}\n")

    passed = result.testsRun - len(result.failures) - len(result.errors) - len(result.skipped)
    out.write(f"\n{passed} of {result.testsRun} tests passed, {len(recorder.events)} servers "
              f"started and stopped, in {total:.2f} s.\n\n")
    out.write(_table(comparison(recorder.events, total)) + "\n\n")
    out.write(
        "sleeps+polls is the write-up's approach: a health check every "
        f"{POLL_SECONDS:g} s and {SLEEP_AFTER_STOP:g} s slept\n"
        "after each stop.  It is computed from this run's events, not by rerunning.\n"
        "Each server's measured start-up time is rounded up to the write-up's next\n"
        f"{POLL_SECONDS:g} s health poll, plus {PASSES_IN_A_ROW - 1} more poll(s) for its "
        "passes in a row (a crash is seen\n"
        f"at the next poll); servers start one at a time; and {SLEEP_AFTER_STOP:g} s are "
        "slept after each stop.\n")
    out.flush()
    return 1 if real else 0
