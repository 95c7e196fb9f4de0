"""Memory of a server's process tree, and leak verdicts that noise cannot fool.

A before/after difference of one RSS reading cannot tell a leak from the
allocator's steps, so :func:`measure_leak` runs the workload in rounds,
samples memory after each, fits a least-squares line and calls the server
leaking only when

* the slope is above a threshold the caller sets (bytes per round),
* the slope is statistically significant (its 95 % confidence interval is
  above zero), and
* the growth is sustained: memory grew by more than half the threshold in
  more than half of the rounds, so a single allocator step (an arena, a
  cache filling once) is not a leak however large it is.

Noise cannot cross that verdict: samples confined to a band of B bytes have
a slope of at most 0.15 B per round over 10 rounds, so a steady server whose
memory wanders within 6 thresholds (384 KiB by default) is never leaking,
whatever the order of its samples.

USS (memory unique to the process, psutil's ``memory_full_info().uss`` or
``/proc/<pid>/smaps_rollup``) is preferred to RSS, as psutil's own leak tests
do: RSS moves when shared pages are touched or dropped.
"""
from __future__ import annotations

import dataclasses
import math
import os
import statistics
import sys
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from . import _validate
from ._manual import see
from ._os import procinfo
from ._os.procinfo import HAVE_PROC, HAVE_PSUTIL, psutil
from ._wait import Deadline, backoff, pause
from .errors import HarnessError, MemoryUnavailable

__all__ = ["rss", "uss", "memory", "uss_available", "measure_leak", "LeakReport",
           "MemoryUnavailable", "DEFAULT_THRESHOLD"]

#: Default leak threshold: growth per round (bytes) below this is never a leak.
DEFAULT_THRESHOLD = 64 * 1024
_HELP = see("memory-unavailable")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# Two-sided 95 % quantiles of Student's t by degrees of freedom; between
# listed values the next smaller df is used (a wider, more cautious interval).
_T95 = ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (6, 2.447),
        (7, 2.365), (8, 2.306), (9, 2.262), (10, 2.228), (12, 2.179), (15, 2.131),
        (20, 2.086), (25, 2.060), (30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980))
_SETTLE_SECONDS = 0.25


# --------------------------------------------------------------------------
# Reading memory


def _check_pid(pid: object) -> int:
    return _validate.whole(pid, "pid")


def _gone(pid: int) -> ProcessLookupError:
    return ProcessLookupError(f"no process with pid {pid} (it has exited)")


def _proc_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except FileNotFoundError:
        raise _gone(pid) from None


def _proc_uss(pid: int) -> int:
    """Private_Clean + Private_Dirty (+ Private_Hugetlb), summed over the mappings."""
    for name in ("smaps_rollup", "smaps"):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                total = 0
                for line in f:
                    if line.startswith("Private_"):
                        total += int(line.split()[1]) * 1024
                return total
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}"):
                raise _gone(pid) from None
        except PermissionError as exc:
            raise MemoryUnavailable(
                f"cannot read /proc/{pid}/{name} ({exc}); USS needs the same user as "
                f"the process; use metric='rss' ({_HELP})") from None
    raise MemoryUnavailable(f"/proc/{pid}/smaps is missing; use metric='rss' ({_HELP})")


def _psutil_reading(pid: int, metric: str) -> int:
    try:
        process = psutil.Process(pid)
        if metric == "uss":
            return int(process.memory_full_info().uss)
        return int(process.memory_info().rss)
    except psutil.NoSuchProcess:
        raise _gone(pid) from None
    except psutil.AccessDenied as exc:
        raise MemoryUnavailable(f"not allowed to read the memory of pid {pid} ({exc}); "
                                f"use metric='rss', or run as its user ({_HELP})") from None


def _one(pid: int, metric: str) -> int:
    if HAVE_PSUTIL:
        return _psutil_reading(pid, metric)
    if HAVE_PROC:
        return _proc_uss(pid) if metric == "uss" else _proc_rss(pid)
    raise MemoryUnavailable(
        f"reading process memory on {sys.platform} needs psutil (pip install psutil; {_HELP})")


def memory(pid: int, children: bool = True, metric: str = "rss") -> int:
    """Bytes of ``metric`` ("rss" or "uss") used by ``pid`` and, with ``children``, its
    descendants.  ProcessLookupError if ``pid`` is gone; descendants that exit
    while being read are skipped."""
    pid = _check_pid(pid)
    if metric not in ("rss", "uss"):
        raise ValueError(f"metric must be 'rss' or 'uss', got {metric!r}")
    total = _one(pid, metric)
    if children:
        for child in procinfo.descendants(pid):
            try:
                total += _one(child, metric)
            except ProcessLookupError:
                continue
    return total


def rss(pid: int, children: bool = True) -> int:
    """Resident set size of ``pid`` (and its descendants) in bytes."""
    return memory(pid, children, "rss")


def uss(pid: int, children: bool = True) -> int:
    """Unique set size of ``pid`` (and its descendants) in bytes: the memory that
    would be freed if it exited.  The best measure for leaks."""
    return memory(pid, children, "uss")


def uss_available(pid: Optional[int] = None) -> bool:
    """True if USS can be read (for ``pid``, or for this process)."""
    try:
        uss(os.getpid() if pid is None else pid, children=False)
    except (MemoryUnavailable, ProcessLookupError):
        return False
    return True


def _settled(pid: int, children: bool, metric: str) -> int:
    """One sample: reads until two in a row agree (the server finished its
    round's cleanup), or the median of the last three at a short deadline."""
    deadline = Deadline(_SETTLE_SECONDS)
    readings = [memory(pid, children, metric)]
    for interval in backoff(first=0.001, cap=0.01):
        if deadline.expired:
            break
        pause(deadline.cap(interval))
        readings.append(memory(pid, children, metric))
        if readings[-1] == readings[-2]:
            return readings[-1]
    return int(statistics.median(readings[-3:]))


# --------------------------------------------------------------------------
# Statistics


def _t95(df: int) -> float:
    for limit, t in reversed(_T95):
        if df >= limit:
            return t
    return math.inf  # no degrees of freedom: no interval


def _fit(samples: Sequence[int]) -> Tuple[float, float]:
    """Least-squares slope of samples against round number, and its standard error."""
    n = len(samples)
    xs = range(n)
    mean_x = (n - 1) / 2
    mean_y = sum(samples) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, samples)) / sxx
    intercept = mean_y - slope * mean_x
    residual = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, samples))
    stderr = math.sqrt(residual / (n - 2) / sxx) if n > 2 else math.inf
    return slope, stderr




# --------------------------------------------------------------------------
# Leak measurement


@dataclasses.dataclass
class LeakReport:
    """The samples of a :func:`measure_leak` run and the verdict drawn from them.

    ``samples`` are bytes after each measured round (``warmup_samples`` after
    each discarded warm-up round); ``slope`` is bytes per round (least
    squares) and ``stderr`` its standard error; ``growth`` is the last
    sample minus the first; ``reason`` says why ``leaking`` is what it is.
    """

    pid: int
    metric: str
    threshold: float
    samples: List[int]
    warmup_samples: List[int]
    slope: float
    stderr: float
    leaking: bool
    reason: str

    @property
    def rounds(self) -> int:
        """Measured rounds (warm-up rounds not counted)."""
        return len(self.samples)

    @property
    def growth(self) -> int:
        """Bytes: the last sample minus the first."""
        return self.samples[-1] - self.samples[0]

    @property
    def interval(self) -> Tuple[float, float]:
        """The slope's 95 % confidence interval, bytes per round."""
        half = _t95(len(self.samples) - 2) * self.stderr
        return self.slope - half, self.slope + half

    @property
    def growing_rounds(self) -> int:
        """Rounds in which memory grew by more than half the threshold."""
        return sum(1 for a, b in zip(self.samples, self.samples[1:])
                   if b - a > self.threshold / 2)

    def __str__(self) -> str:
        unit = self.metric.upper()
        kib = 1024.0
        low, high = self.interval
        lines = [f"memory of pid {self.pid} ({unit}), {self.rounds} rounds after "
                 f"{len(self.warmup_samples)} warm-up",
                 f"{'round':>6} {unit + ' KiB':>14} {'change KiB':>12}"]
        previous: Optional[int] = None
        for label, value in ([(f"w{i}", v) for i, v in enumerate(self.warmup_samples, 1)] +
                             [(str(i), v) for i, v in enumerate(self.samples, 1)]):
            change = "" if previous is None else f"{(value - previous) / kib:+,.1f}"
            lines.append(f"{label:>6} {value / kib:>14,.1f} {change:>12}".rstrip())
            previous = value
        lines.append(f"slope {self.slope / kib:+,.1f} KiB/round (95% CI {low / kib:+,.1f} .. "
                     f"{high / kib:+,.1f}), threshold {self.threshold / kib:,.1f} KiB/round")
        lines.append(f"growth {self.growth / kib:+,.1f} KiB; grew by more than "
                     f"{self.threshold / 2 / kib:,.1f} KiB in {self.growing_rounds} of "
                     f"{self.rounds - 1} rounds")
        lines.append(f"verdict: {'LEAKING' if self.leaking else 'not leaking'}: {self.reason}")
        return "\n".join(lines)


def _verdict(samples: Sequence[int], slope: float, stderr: float,
             threshold: float) -> Tuple[bool, str]:
    low = slope - _t95(len(samples) - 2) * stderr
    steps = len(samples) - 1
    growing = sum(1 for a, b in zip(samples, samples[1:]) if b - a > threshold / 2)
    kib = 1024.0
    if slope <= threshold:
        return False, (f"the slope ({slope / kib:+,.1f} KiB/round) is not above the threshold "
                       f"({threshold / kib:,.1f} KiB/round)")
    if low <= 0:
        return False, (f"the slope is not significant: its 95% confidence interval reaches "
                       f"{low / kib:+,.1f} KiB/round (noise; more rounds would tell)")
    if growing * 2 <= steps:
        return False, (f"the growth is not sustained: memory grew by more than half the "
                       f"threshold in only {growing} of {steps} rounds (a one-off step, "
                       f"such as an allocator arena or a cache filling once)")
    return True, (f"memory grows {slope / kib:,.1f} KiB/round (95% CI from {low / kib:,.1f}), "
                  f"above the threshold, in {growing} of {steps} rounds")


def _server_pid(server: Any) -> int:
    if isinstance(server, int) and not isinstance(server, bool):
        return _check_pid(server)
    pid = getattr(server, "pid", None)
    if pid is None:
        raise ValueError(f"server must be a started server (with a pid) or an int pid, "
                         f"got {server!r} without a pid; is it started?")
    return _check_pid(pid)


def measure_leak(server: Union[Any, int], workload: Callable[[], Any], rounds: int = 10,
                 warmup: int = 3, *, threshold: float = DEFAULT_THRESHOLD,
                 metric: str = "auto", children: bool = True) -> LeakReport:
    """Run ``workload()`` ``warmup + rounds`` times and judge whether ``server`` leaks.

    ``server`` is anything with a ``pid`` attribute (a ``ServerProcess``,
    a ``subprocess.Popen``) or a plain int pid.  ``workload`` is called once
    per round (e.g. 50 requests); memory (``metric``: "uss", "rss", or
    "auto" for USS where readable) of the process and, with ``children``, its
    descendants is sampled after each round once it has settled.  Warm-up
    rounds fill caches and allocator pools; their samples are shown but not
    judged.  ``threshold`` is the growth in bytes per round that counts as a
    leak; see the module docstring for the verdict.
    """
    pid = _server_pid(server)
    if not callable(workload):
        raise TypeError(f"workload must be a callable run once per round, got {workload!r}")
    _validate.whole(rounds, "rounds", at_least=3, why="to fit a line and judge its noise")
    _validate.whole(warmup, "warmup", at_least=0)
    _validate.amount(threshold, "threshold", "bytes per round")
    if metric not in ("auto", "uss", "rss"):
        raise ValueError(f"metric must be 'auto', 'uss' or 'rss', got {metric!r}")
    if metric == "auto":
        try:
            memory(pid, children, "uss")
            metric = "uss"
        except MemoryUnavailable:
            metric = "rss"
    memory(pid, children, metric)  # a gone pid fails now, not after the first round

    readings: List[int] = []
    for done in range(warmup + rounds):
        workload()
        try:
            readings.append(_settled(pid, children, metric))
        except ProcessLookupError:
            raise HarnessError(
                f"pid {pid} exited during round {done + 1} of the leak measurement "
                f"(samples so far: {readings}); {see('leak-pid-exited')}") from None
    samples = readings[warmup:]
    slope, stderr = _fit(samples)
    leaking, reason = _verdict(samples, slope, stderr, float(threshold))
    return LeakReport(pid=pid, metric=metric, threshold=float(threshold), samples=samples,
                      warmup_samples=readings[:warmup], slope=slope, stderr=stderr,
                      leaking=leaking, reason=reason)
