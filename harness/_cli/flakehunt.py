"""``python -m harness flakehunt``: rerun a test in fresh processes and measure its failure rate.

A flaky test is a coin with an unknown bias; "it passed 5 times" says
little.  flakehunt reruns the test ``n`` times, each in a new interpreter
(``python -m unittest TEST_ID...``, or ``python -m unittest discover`` for
the whole suite when no id is given, in its own session so a hang can be
killed with everything it started), ``jobs`` at a time, and reports the
failure rate with a 95% Wilson interval, the distinct failure kinds and
the full output of the first failure of each kind.  With zero failures
the upper end of the interval is the claim "fails less often than this".

Each run gets ``HARNESS_FLAKEHUNT_RUN`` (1, 2, ...) in its environment, so
a test can log it, or seed its randomness from it to replay one run.
"""
from __future__ import annotations

import argparse
import ast
import enum
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import IO, Any, Dict, List, Optional, Tuple

from .. import _config, _validate, _wait
from .._os import kill
from .._server import marker, protocol, supervisor
from .._server.diagnostics import signal_name
from .._validate import arg_type, parse_number

RUN_ENV = "HARNESS_FLAKEHUNT_RUN"
Z_95 = 1.959963984540054  # two-sided 95% normal quantile
# After SIGTERM, how long a run may clean up (stop its servers) before SIGKILL.
TERM_GRACE = 2.0
# How long to wait for a stack dump (SIGUSR1) of a timed-out run.
DUMP_WAIT = 1.0
# How long killed leftovers of a run may take to disappear.
GROUP_GONE_WAIT = 5.0

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Runs a test id exactly like `python -m unittest TEST_ID`, plus a stack dump
# of every thread on SIGUSR1, so a run that times out shows where it hung.
# faulthandler dumps at once, even if the test is stuck in C code, then chains
# to the Python handler, which marks the dump complete when it gets to run.
DUMP_END = b"--- flakehunt: end of the stack dump, the run is stopped now ---"
_BOOTSTRAP = (
    "import faulthandler, os, signal, sys, unittest\n"
    "signal.signal(signal.SIGUSR1, lambda *_: os.write(2, b'\\n%s\\n'))\n"
    "faulthandler.register(signal.SIGUSR1, all_threads=True, chain=True)\n"
    "unittest.main(module=None, argv=['python -m unittest'] + sys.argv[1:])\n"
) % DUMP_END.decode()


def wilson_interval(failures: int, runs: int, z: float = Z_95) -> Tuple[float, float]:
    """The Wilson score interval for a proportion ``failures / runs``.

    Unlike the textbook ``p +- z*sqrt(p(1-p)/n)`` it stays inside [0, 1]
    and is honest at 0 failures, which is the case that matters here.
    """
    if runs <= 0:
        return 0.0, 1.0
    p = failures / runs
    z2 = z * z
    denominator = 1 + z2 / runs
    centre = (p + z2 / (2 * runs)) / denominator
    half = z * math.sqrt(p * (1 - p) / runs + z2 / (4 * runs * runs)) / denominator
    low = 0.0 if failures == 0 else max(0.0, centre - half)
    high = 1.0 if failures == runs else min(1.0, centre + half)
    return low, high


# --------------------------------------------------------------------------
# Failure kinds

_HEADER = re.compile(r"^(FAIL|ERROR|UNEXPECTED SUCCESS): (.*)$", re.M)
_SEPARATOR = "=" * 70
_TMP = re.escape(tempfile.gettempdir().rstrip("/")) + r"/[^\s'\":,)]+"


def normalise(text: str) -> str:
    """Strip what differs between runs of the same failure: addresses, times, ports, temp paths."""
    text = re.sub(_TMP, "<tmp>", text)
    text = re.sub(r"0x[0-9a-fA-F]+", "0x…", text)
    text = re.sub(r"\d+\.\d{3,}", "N.N", text)  # measured values; 0.3 or 1.5 stay
    text = re.sub(r"\d{4,}", "N", text)  # pids, ports, sizes; small codes like 404 stay
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."


def _exception_line(block: str) -> str:
    """The first line of the exception a unittest FAIL/ERROR block ends with."""
    lines = block.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    if starts:
        for line in lines[starts[-1] + 1:]:
            if line.strip() and not line.startswith((" ", "\t")):
                return line
    for line in lines[2:]:  # a loader error has no traceback, just the message
        if line.strip() and not line.startswith("-" * 10):
            return line.strip()
    return "no message"


def failure_kind(output: str) -> Optional[str]:
    """``"test_x: SomeError: first line"`` for the first failure in unittest output, or None."""
    match = _HEADER.search(output)
    if match is None:
        return None
    test = match.group(2).split(" (")[0]
    rest = output[match.start():]
    end = rest.find(_SEPARATOR, len(match.group(0)))
    ran = rest.find("\nRan ")
    block = rest[:min(i for i in (end, ran, len(rest)) if i >= 0)]
    if match.group(1) == "UNEXPECTED SUCCESS":
        return f"{test}: unexpected success"
    return f"{test}: {normalise(_exception_line(block))}"


class RunOutcome(str, enum.Enum):
    """How one run ended (a ``str``: JSON and old comparisons keep working)."""
    PASS = "pass"
    FAIL = "fail"                # a test failed, errored or the run timed out
    LOAD_ERROR = "load_error"    # the test id could not be loaded
    NO_TESTS = "no_tests"        # the id names no test
    INTERRUPTED = "interrupted"  # stopped by Ctrl-C or --until-fail: not counted


class Killed(str, enum.Enum):
    """Why flakehunt itself ended a run before it finished."""
    TIMEOUT = "timeout"          # no result within --timeout: a failure (its stacks shown)
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM or --until-fail: not counted


class RunResult:
    """What one run did: its :class:`RunOutcome`, failure kind, output and time."""

    def __init__(self, index: int, outcome: str, kind: Optional[str], output: str,
                 seconds: float, returncode: Optional[int]) -> None:
        self.index, self.outcome, self.kind = index, RunOutcome(outcome), kind
        self.output, self.seconds, self.returncode = output, seconds, returncode


def classify(index: int, returncode: int, output: str, seconds: float,
             killed: Optional[Killed], timeout: float) -> RunResult:
    """Turn a finished run into a :class:`RunResult`."""
    if killed is Killed.INTERRUPTED:
        return RunResult(index, RunOutcome.INTERRUPTED, None, output, seconds, returncode)
    if killed is Killed.TIMEOUT:
        return RunResult(index, RunOutcome.FAIL, f"timeout: no result within {timeout:g}s",
                         output, seconds, returncode)
    if "unittest.loader._FailedTest" in output:
        return RunResult(index, RunOutcome.LOAD_ERROR, failure_kind(output), output, seconds,
                         returncode)
    if re.search(r"^Ran 0 tests", output, re.M) and returncode in (0, 5):
        return RunResult(index, RunOutcome.NO_TESTS, "no tests ran", output, seconds, returncode)
    if returncode == 0:
        return RunResult(index, RunOutcome.PASS, None, output, seconds, returncode)
    kind = failure_kind(output)
    if kind is None:
        if returncode < 0:
            kind = f"crashed: killed by {signal_name(-returncode)}"
        else:
            last = [line for line in output.splitlines() if line.strip()][-1:]
            kind = f"exit code {returncode}" + (f": {normalise(last[0])}" if last else "")
    return RunResult(index, RunOutcome.FAIL, kind, output, seconds, returncode)


# --------------------------------------------------------------------------
# One run


class _GuardedRun:
    """One fresh interpreter running the test, under the same guard as a server.

    The run is launched through harness's zygote, under a keeper that is its
    parent and a child subreaper: whatever the test starts (helpers, servers,
    daemons) stays in the keeper's subtree, ends with the run, and ends when
    flakehunt itself is killed (the lifeline).  The run carries the
    ``HARNESS_OWNER`` marker, so ``python -m harness reap`` sees it too.
    """

    def __init__(self, index: int, argv: List[str], env: Dict[str, str], cwd: str,
                 out_path: str) -> None:
        self.index = index
        self.out_path = out_path
        self.killed: Optional[Killed] = None
        self._stop_asked: Optional[Killed] = None
        self.started = time.monotonic()
        env = dict(env, **{marker.OWNER_ENV: marker.owner_token()})
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            self.link = supervisor.zygote(None).spawn(
                protocol.spawn("argv", warm=False, argv=argv, env=env, cwd=cwd), fd, None)
        finally:
            os.close(fd)
        try:
            self.pid = self.link.wait_started(_config.scaled(30.0))
        except supervisor.LaunchError as exc:
            self.link.close()
            raise OSError(str(exc)) from None
        self.identity = self.link.identity

    def stop(self, reason: Killed) -> None:
        """Ask for the run to be stopped (timeout or Ctrl-C); :meth:`wait` does it."""
        self._stop_asked = self._stop_asked or reason

    def _dump_and_stop(self, dump: bool) -> None:
        """Stack dump (timeouts), then SIGTERM, a grace, SIGKILL, to the whole subtree."""
        if dump and hasattr(signal, "SIGUSR1") and self.identity is not None:
            kill.signal_process(self.identity, signal.SIGUSR1)
            deadline = _wait.Deadline(_config.scaled(DUMP_WAIT))
            for interval in _wait.backoff():
                if self._dump_complete() or deadline.expired or self.link.exited(0):
                    break
                self.link.exited(deadline.cap(interval))  # an exit ends the wait at once
        try:
            self.link.stop(_config.scaled_for_cleanup(TERM_GRACE),
                           _config.scaled_for_cleanup(GROUP_GONE_WAIT))
        except supervisor.KeeperLost:
            if self.identity is not None:
                kill.stop_tree(lambda: [self.identity] if self.identity and
                               kill.is_alive(self.identity) else [],
                               grace=0.0, kill_wait=_config.scaled_for_cleanup(GROUP_GONE_WAIT))

    def _dump_complete(self) -> bool:
        try:
            with open(self.out_path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 2 * len(DUMP_END)))
                return DUMP_END in f.read()
        except OSError:
            return False

    def wait(self, timeout: float) -> Tuple[int, float]:
        """Wait for the run (stopping it at ``timeout``); return (returncode, seconds).

        Whatever the test left running is ended with the run, and everything
        is gone when this returns.
        """
        deadline = _wait.Deadline(timeout)
        seconds = 0.0
        while True:
            # An exit is reported at once; a stop asked from another thread is
            # seen within 0.1 s.
            if self.link.exited(deadline.cap(0.1)):
                seconds = time.monotonic() - self.started
                self._dump_and_stop(dump=False)  # helpers it left behind
                break
            if self._stop_asked is not None:
                self.killed = self.killed or self._stop_asked
                seconds = time.monotonic() - self.started
                self._dump_and_stop(dump=False)
                break
            if deadline.expired:
                self.killed = Killed.TIMEOUT
                seconds = time.monotonic() - self.started
                self._dump_and_stop(dump=True)
                break
        status = self.link.status
        self.link.close()
        return (status if status is not None else -signal.SIGKILL), seconds


# --------------------------------------------------------------------------
# The hunt


class Hunt:
    """Runs the test ``runs`` times, ``jobs`` at a time; results arrive on a queue."""

    def __init__(self, test_ids: List[str], runs: int, jobs: int, timeout: float, start_dir: str,
                 until_fail: bool) -> None:
        self.test_ids, self.runs, self.jobs = list(test_ids), runs, jobs
        self.timeout, self.until_fail = timeout, until_fail
        self.start_dir = os.path.abspath(start_dir)
        self.results: List[RunResult] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._next = 1
        self._stopped = False
        self._active: Dict[int, _GuardedRun] = {}
        self._threads: List[threading.Thread] = []
        self._tmp = marker.make_private_dir()
        supervisor.register_dir(self._tmp)  # removed by the zygote if flakehunt is killed
        self.started = time.monotonic()
        self.stop_reason: Optional[str] = None

    def _env(self, index: int) -> Dict[str, str]:
        env = dict(os.environ)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = self.start_dir + (os.pathsep + path if path else "")
        env["PYTHONUNBUFFERED"] = "1"  # a killed run still shows what it printed
        env[RUN_ENV] = str(index)
        return env

    def start(self) -> None:
        for number in range(min(self.jobs, self.runs)):
            thread = threading.Thread(target=self._worker, name=f"flakehunt-{number}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _worker(self) -> None:
        # No id: the whole suite, discovered in the start dir (the runs' cwd).
        argv = [sys.executable, "-c", _BOOTSTRAP] + (self.test_ids or ["discover"])
        while True:
            with self._lock:
                if self._stopped or self._next > self.runs:
                    return
                index, self._next = self._next, self._next + 1
                out_path = os.path.join(self._tmp, f"run-{index}.out")
                try:
                    run = _GuardedRun(index, argv, self._env(index), self.start_dir, out_path)
                except OSError as exc:
                    self._stopped = True
                    self.stop_reason = f"cannot start {sys.executable}: {exc}"
                    self._changed.notify_all()
                    return
                self._active[index] = run
            returncode, seconds = run.wait(self.timeout)
            with open(out_path, "rb") as f:
                output = f.read().decode(errors="replace")
            os.unlink(out_path)
            result = classify(index, returncode, output, seconds, run.killed, self.timeout)
            with self._lock:
                del self._active[index]
                self.results.append(result)
                self._changed.notify_all()

    def stop(self, reason: Optional[str]) -> None:
        """Launch nothing more; stop the runs in flight (they are not counted).

        ``reason`` is shown in the summary (``None``: a normal end).
        """
        with self._lock:
            if not self._stopped:
                self._stopped = True
                self.stop_reason = self.stop_reason or reason
            active = list(self._active.values())
        for run in active:
            run.killed = run.killed or Killed.INTERRUPTED
            run.stop(Killed.INTERRUPTED)  # each run's worker thread stops it (close() joins them)

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Block until more results than ``seen`` exist, or ``timeout``; return the count."""
        with self._lock:
            if len(self.results) == seen and not self.finished_locked():
                self._changed.wait(timeout)
            return len(self.results)

    def finished_locked(self) -> bool:
        return not self._active and (self._stopped or self._next > self.runs) and (
            self._stopped or len(self.results) >= self.runs)

    @property
    def finished(self) -> bool:
        with self._lock:
            return self.finished_locked()

    def close(self) -> None:
        for thread in self._threads:
            thread.join()
        shutil.rmtree(self._tmp, ignore_errors=True)
        supervisor.register_dir(self._tmp, add=False)


# --------------------------------------------------------------------------
# Reporting


def counted(results: List[RunResult]) -> List[RunResult]:
    """Runs that count: all but those stopped by Ctrl-C or --until-fail.

    A load error counts as a failure here: the hunt stops before counting
    when the test cannot be loaded at all, so one that is counted failed to
    load only sometimes (a flaky import).
    """
    return sorted((r for r in results if r.outcome is not RunOutcome.INTERRUPTED),
                  key=lambda r: r.index)


class Summary:
    """Counts and failure kinds of the counted runs."""

    def __init__(self, results: List[RunResult]) -> None:
        done = counted(results)
        self.runs = len(done)
        self.failed = [r for r in done if r.outcome is not RunOutcome.PASS]
        self.failures = len(self.failed)
        self.kinds: Dict[str, List[RunResult]] = {}
        for result in self.failed:
            self.kinds.setdefault(result.kind or "?", []).append(result)
        self.interval = wilson_interval(self.failures, self.runs)
        self.rate = self.failures / self.runs if self.runs else 0.0

    def to_json(self) -> Dict[str, Any]:
        return {
            "runs": self.runs, "failures": self.failures, "rate": self.rate,
            "interval95": list(self.interval),
            "kinds": [{"kind": kind, "count": len(runs), "runs": [r.index for r in runs],
                       "first_run": runs[0].index, "first_output": runs[0].output}
                      for kind, runs in sorted(self.kinds.items(), key=lambda kv: -len(kv[1]))],
        }


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """A live line on a terminal; a plain line per failure and per tenth otherwise."""

    def __init__(self, stream: Optional[IO[str]], total: int) -> None:
        self.stream = stream
        self.live = bool(stream is not None and stream.isatty())
        self.total = total
        self.step = max(1, total // 10)
        self.reported = 0  # counted runs covered by the last progress line
        self.seen = 0  # results (in arrival order) already looked at
        self.width = 0

    def update(self, results: List[RunResult], elapsed: float) -> None:
        if self.stream is None:
            return
        done_runs = counted(results)
        done = len(done_runs)
        failed = sum(1 for r in done_runs if r.outcome is not RunOutcome.PASS)
        rate = failed / done if done else 0.0
        left = (elapsed / done * (self.total - done)) if done else None
        line = (f"[{done}/{self.total}] failures {failed} ({_pct(rate)})"
                f"  elapsed {_duration(elapsed)}"
                + (f"  left ~{_duration(left)}" if left is not None else ""))
        if self.live:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            for result in results[self.seen:]:  # arrival order: runs finish out of order
                if result.outcome not in (RunOutcome.PASS, RunOutcome.INTERRUPTED):
                    self.stream.write(f"run {result.index}: FAIL {result.kind}\n")
            self.seen = len(results)
            if done // self.step > self.reported // self.step or (
                    done == self.total and self.reported < done):
                self.stream.write(line + "\n")
            self.reported = done
        self.stream.flush()

    def clear(self) -> None:
        if self.live and self.stream is not None and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def render(test_id: str, summary: Summary, hunt: Hunt) -> str:
    low, high = summary.interval
    counts = (f"{summary.failures} of {summary.runs} runs failed" if summary.runs
              else "no run finished")
    stopped = f"; stopped early: {hunt.stop_reason}" if hunt.stop_reason else ""
    lines = [f"flakehunt {test_id}: {counts} (-j {hunt.jobs}, "
             f"{_duration(time.monotonic() - hunt.started)}){stopped}"]
    if summary.runs:
        lines.append(f"failure rate {_pct(summary.rate)}, 95% interval "
                     f"{_pct(low)} to {_pct(high)} (Wilson)")
    if summary.runs and not summary.failures:
        lines.append(f"no failure: with 95% confidence it fails in fewer than "
                     f"{_pct(high)} of runs; more runs narrow that bound")
    if summary.kinds:
        lines.append("failure kinds:")
        ordered = sorted(summary.kinds.items(), key=lambda kv: -len(kv[1]))
        for kind, runs in ordered:
            lines.append(f"  {len(runs):5d}  {kind}")
        for kind, runs in ordered:
            first = runs[0]
            lines.append("")
            lines.append(f"--- first failure of kind: {kind} (run {first.index}, "
                         f"{first.seconds:.2f}s, {RUN_ENV}={first.index}) ---")
            lines.append(first.output.rstrip() or "(no output)")
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("test_ids", metavar="TEST_ID", nargs="*",
                        help="unittest ids: module, module.Class or module.Class.test_method, "
                             "or pytest node ids of unittest tests (path/test_x.py::Class::"
                             "test_method); several run together in each run; none: the whole "
                             "suite, discovered in --start-dir as by 'python -m unittest "
                             "discover'")
    parser.add_argument("-n", "--runs", type=arg_type(_validate.whole, "--runs"), default=200,
                        help="how many runs (default 200)")
    parser.add_argument("-j", "--jobs", type=arg_type(_validate.whole, "--jobs"), default=2,
                        help="runs in parallel (default 2)")
    parser.add_argument("--until-fail", action="store_true",
                        help="stop at the first failure (runs in flight are not counted)")
    parser.add_argument("--timeout",
                        type=arg_type(_validate.seconds, "--timeout", parse=parse_number),
                        default=60.0, metavar="S",
                        help="seconds before a run counts as hung: its stacks are dumped, "
                             "its process group is killed, and it counts as a failure of kind "
                             "'timeout' (default 60, times HARNESS_TIMEOUT_FACTOR)")
    parser.add_argument("--start-dir", default=".", metavar="DIR",
                        help="directory the test is imported from: the runs' working "
                             "directory, put first on PYTHONPATH (default .)")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as JSON (progress goes to stderr)")


# --------------------------------------------------------------------------
# Pytest node ids
#
# A pytest node id of a unittest test names the same test as a unittest id:
# the file's path relative to --start-dir is the module, and each "::" a
# dot.  flakehunt translates such ids, and refuses (before any run) what
# only pytest can run: test functions, plain classes, parametrized ids.
# (Running pytest itself in each run would need its own outcome parsing;
# every flakehunt result is unittest's.)


def _is_node_id(test_id: str) -> bool:
    return "::" in test_id or test_id.endswith(".py") or "/" in test_id or os.sep in test_id


def _defined(body: List[ast.stmt], name: str) -> Optional[ast.stmt]:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and node.name == name:
            return node
    return None


def _refuse_pytest_only(node_id: str, path: str, names: List[str]) -> None:
    """``ValueError`` if the source shows ``names`` in ``path`` is not a unittest test."""
    try:
        with open(path, "rb") as f:
            body: List[ast.stmt] = ast.parse(f.read(), path).body
    except (OSError, SyntaxError, ValueError):
        return  # unittest will say what is wrong with it
    advice = ("flakehunt runs tests with unittest, which runs only methods of "
              "unittest.TestCase classes; rerun it with pytest (for example with the "
              "pytest-repeat plugin: pytest --count 200 NODEID), or make it a unittest.TestCase")
    for depth, name in enumerate(names):
        found = _defined(body, name)
        if found is None:
            return  # made at import time: let unittest decide
        if not isinstance(found, ast.ClassDef):
            if depth == 0:
                raise ValueError(f"{node_id} is a pytest test function, not a unittest test: "
                                 f"{advice}")
            return
        if not found.bases:
            raise ValueError(f"{node_id}: {name} is a plain class (no unittest.TestCase base) "
                             f"that pytest collects and unittest does not: {advice}")
        body = found.body


def unittest_id(node_id: str, start_dir: str) -> str:
    """The unittest id of the pytest node id ``node_id``; ``ValueError`` saying why not."""
    path, *names = node_id.split("::")
    if any("[" in name for name in names):
        raise ValueError(f"{node_id} is a parametrized pytest test: its parameters ([...]) "
                         f"have no unittest id, and flakehunt runs unittest tests; name the "
                         f"test without them to run every parameter, or rerun it with pytest")
    if not path.endswith(".py") or not all(names):
        raise ValueError(f"{node_id} is neither a unittest id (module.Class.test_method) nor a "
                         f"pytest node id of a unittest test (path/test_x.py::Class::test_method)")
    where = [path] if os.path.isabs(path) else [os.path.abspath(path),
                                                 os.path.join(start_dir, path)]
    found = next((p for p in where if os.path.isfile(p)), None)
    if found is None:
        raise ValueError(f"{node_id}: no such file {path} (looked in {os.getcwd()} and in "
                         f"--start-dir {os.path.abspath(start_dir)}); unittest needs the file")
    relative = os.path.relpath(os.path.realpath(found), os.path.realpath(start_dir))
    if relative.startswith(os.pardir + os.sep) or relative == os.pardir:
        raise ValueError(f"{node_id}: {found} is not under --start-dir "
                         f"{os.path.abspath(start_dir)}, where unittest imports tests from; "
                         f"pass the directory its imports are relative to as --start-dir")
    parts = relative[:-3].split(os.sep)
    if not all(part.isidentifier() for part in parts):
        raise ValueError(f"{node_id}: {relative} under --start-dir is not an importable module "
                         f"name, so unittest cannot load it; pass another --start-dir")
    _refuse_pytest_only(node_id, found, names)
    return ".".join(parts + names)


def unittest_ids(test_ids: List[str], start_dir: str) -> Tuple[List[str], List[str]]:
    """``test_ids`` with pytest node ids translated, and a note for each translation."""
    ids, notes = [], []
    for test_id in test_ids:
        if _is_node_id(test_id):
            translated = unittest_id(test_id, start_dir)
            notes.append(f"flakehunt: pytest node id {test_id} is unittest id {translated}")
            ids.append(translated)
        else:
            ids.append(test_id)
    return ids, notes


class _Terminated(Exception):
    pass


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def run(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.start_dir):
        print(f"flakehunt: --start-dir {args.start_dir!r} is not a directory; pass the "
              f"directory the test module is imported from", file=sys.stderr)
        return EXIT_USAGE
    try:
        args.test_ids, notes = unittest_ids(args.test_ids, args.start_dir)
    except ValueError as exc:
        print(f"flakehunt: {exc}", file=sys.stderr)
        return EXIT_USAGE
    timeout = _config.scaled(args.timeout)
    hunt = Hunt(args.test_ids, args.runs, args.jobs, timeout, args.start_dir, args.until_fail)
    label = " ".join(args.test_ids) or f"the suite in {hunt.start_dir}"
    progress = Progress(sys.stderr if args.json else sys.stdout, args.runs)
    for note in notes:
        print(note, file=progress.stream or sys.stderr, flush=True)
    if progress.live or progress.stream is sys.stdout:
        where = "" if args.start_dir == "." or not args.test_ids else f" from {hunt.start_dir}"
        print(f"flakehunt: running {label}{where} {args.runs} times, "
              f"{args.jobs} at a time", file=progress.stream, flush=True)
    interrupted, load_error = _hunt(hunt, progress, args.until_fail)
    if load_error is not None:
        reason = ("names no test" if load_error.outcome is RunOutcome.NO_TESTS
                  else f"could not be loaded: {load_error.kind}")
        what = repr(label) if args.test_ids else label
        print(f"flakehunt: {what} {reason}. Check the id (module, module.Class "
              f"or module.Class.test_method) and --start-dir ({hunt.start_dir}).\n"
              f"Output of run {load_error.index}:\n{load_error.output.rstrip()}",
              file=sys.stderr)
        return EXIT_USAGE
    summary = Summary(hunt.results)
    if args.json:
        data = {"test_id": label, "test_ids": args.test_ids, "jobs": args.jobs,
                "timeout": timeout,
                "interrupted": interrupted is not None, "stop_reason": hunt.stop_reason,
                "seconds": time.monotonic() - hunt.started}
        data.update(summary.to_json())
        print(json.dumps(data, indent=2))
    else:
        print(render(label, summary, hunt))
    sys.stdout.flush()
    if interrupted is not None:
        return interrupted
    return EXIT_FAILED if summary.failures else EXIT_OK


def _hunt(hunt: Hunt, progress: Progress,
          until_fail: bool) -> Tuple[Optional[int], Optional[RunResult]]:
    """Run the hunt to its end (or Ctrl-C, SIGTERM, --until-fail, tests that do not load):
    the exit code of an interruption, and the run that could not load the tests."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.getsignal(signal.SIGINT)
    interrupted: Optional[int] = None
    load_error: Optional[RunResult] = None
    try:
        try:
            hunt.start()
            seen = 0
            while not hunt.finished:
                seen = hunt.wait_for_change(seen, 0.5 if progress.live else 5.0)
                results = list(hunt.results)
                progress.update(results, time.monotonic() - hunt.started)
                bad = [r for r in results
                       if r.outcome in (RunOutcome.LOAD_ERROR, RunOutcome.NO_TESTS)]
                if bad and not any(r.outcome is RunOutcome.PASS for r in results):
                    load_error = bad[0]
                    hunt.stop("the tests could not be loaded")
                elif until_fail and any(
                        r.outcome not in (RunOutcome.PASS, RunOutcome.INTERRUPTED)
                        for r in results):
                    hunt.stop("--until-fail: first failure seen")
            # The last runs may finish together, after the last update above.
            progress.update(list(hunt.results), time.monotonic() - hunt.started)
        except KeyboardInterrupt:
            interrupted = EXIT_INTERRUPTED
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
            hunt.stop("interrupted (Ctrl-C)")
        except _Terminated:
            interrupted = 128 + signal.SIGTERM
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            hunt.stop("terminated (SIGTERM)")
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        hunt.stop(None)  # a normal end: nothing is running any more
        hunt.close()
        progress.clear()
    return interrupted, load_error
