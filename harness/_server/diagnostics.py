"""The message of a failed start: facts in, text out.

A pure function of :class:`StartFacts`, gathered while the process still
existed, so it can be tested alone and never races the server's exit.
The message says what happened, shows what every readiness probe saw,
the head and tail of the server's output, where the log is kept, and ends
with the one change most likely to fix it.
"""
from __future__ import annotations

import dataclasses
import errno as errnos
import re
import shlex
import signal
from typing import Dict, List, Optional, Sequence, Set, Tuple, Type

from ..checks import WaitEnd
from ..errors import ServerNotReady, ServerStartError


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; ``signal 99`` for a number no signal has."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_exit(returncode: Optional[int]) -> str:
    """An exit status in words: "exited with code 1", "was killed by SIGKILL"."""
    if returncode is None:
        return "is still running"
    if returncode < 0:
        return f"was killed by {signal_name(-returncode)}"
    return f"exited with code {returncode}"


def shown(command: Sequence[str]) -> str:
    """A command line fit for a message: quoted, long items shortened."""
    return " ".join(shlex.quote(c if len(c) < 200 else c[:60] + "...") for c in command)


@dataclasses.dataclass
class StartFacts:
    """What a person needs to know about a start that failed."""

    name: str
    reason: WaitEnd
    elapsed: float
    returncode: Optional[int]
    command: List[str]
    pid: Optional[int]
    where: str                      # the URL, or "unix socket PATH"
    handoff: bool
    check: str
    successes: int
    summary: str                    # "connection refused x12, HTTP 404 x3"
    counts: Dict[str, int]
    details: Dict[str, str]
    other_ports: Set[int]
    port: Optional[int]
    lost: str                       # why the port was lost, "" if it was not
    fixed_port: bool
    deadline_seconds: float
    start_timeout: float
    factor: float
    log_lines: List[str]            # head and tail of this launch's output
    log_path: Optional[str]         # where the log is kept ("" or None: not kept)
    warm: bool = False
    not_kept: str = ""              # why the log was not kept
    keeper_lost: bool = False       # the keeper died (was killed) before the server's exit


def _fix_exited(facts: StartFacts) -> str:
    """The one change most likely to fix a server that exited during start-up."""
    if facts.keeper_lost:
        return ("do not signal the server's parent process (os.getppid()): it is harness's "
                "keeper, which ends the server's whole process tree when it goes")
    log = "\n".join(facts.log_lines)
    if facts.returncode == 0:
        return ("run the server in the foreground: harness supervises the process it "
                "starts, and this one exited (did it daemonize?)")
    missing = re.search(r"ModuleNotFoundError: No module named '([^']+)'", log)
    if missing:
        return (f"make {missing.group(1)!r} importable in the server: install it in this "
                f"environment, or add its directory with env={{'PYTHONPATH': ...}} (a "
                f"target= function's module is found on the test's own sys.path)")
    if re.search(r"address already in use|EADDRINUSE|errno (98|48)\b", log, re.I):
        if facts.handoff:
            return ("with handoff=True use the listening socket on fd 3 (LISTEN_FDS=1) "
                    "instead of binding the port again")
        if facts.fixed_port:
            return (f"port {facts.port} was given explicitly and is taken; free it or let "
                    f"harness choose one (port=None)")
        return "bind the port in $PORT (or '{port}' in argv), not a fixed one"
    return "fix the error at the end of the server's output, shown above"


def _fix(facts: StartFacts) -> str:
    """The one change most likely to fix it."""
    if facts.reason is WaitEnd.EXITED:
        return _fix_exited(facts)
    if facts.reason is WaitEnd.PORT_LOST:
        if facts.fixed_port:
            return (f"port {facts.port} was given explicitly: free it (see above who holds "
                    f"it), or let harness choose one (port=None)")
        return "stop the process named above, which listens on the server's port"
    if facts.other_ports:
        ports = ", ".join(map(str, sorted(facts.other_ports)))
        return (f"make the server listen on $PORT ({facts.port}) instead of {ports} "
                f"(or '{{port}}' in argv)")
    labels = list(facts.counts)
    if any(label.startswith("check passed, but nothing listens") for label in labels):
        return (f"make the server listen on $HOST:$PORT (port {facts.port}), or pass "
                f"listens=False if it has no port: its check passed, but nothing listened")
    if facts.port is None and facts.where.startswith("unix socket"):
        if labels and all(label in ("connection refused", "FileNotFoundError") or
                          label.startswith("ENOENT") for label in labels):
            return ("make the server listen on the Unix socket $SOCKET_PATH (or '{socket}' "
                    "in argv); nothing accepted connections there")
    elif labels and all(label == "connection refused" for label in labels):
        return ("make the server listen on $HOST:$PORT (or '{host}:{port}' in argv); it "
                "never accepted a connection there")
    if any(label.startswith("HTTP 404") for label in labels):
        return "point health= at a path the server answers (HttpCheck('/your/health'))"
    if any(label.startswith("JSON ") for label in labels):
        return "make the health answer carry what HttpCheck(json=...) asks for, or relax json="
    return (f"if the server is only slow, raise start_timeout (now {facts.start_timeout:g} s) "
            f"or HARNESS_TIMEOUT_FACTOR on a slow machine")


def start_failure(facts: StartFacts) -> Tuple[Type[ServerStartError], str]:
    """The exception class and message for a failed start."""
    if facts.reason is WaitEnd.EXITED and facts.keeper_lost:
        what = (f"lost its keeper (harness's process that is the server's parent, killed by "
                f"the server or another process) during start-up after {facts.elapsed:.2f} s; "
                f"the server has been stopped")
        cls: Type[ServerStartError] = ServerStartError
    elif facts.reason is WaitEnd.EXITED:
        what = f"{describe_exit(facts.returncode)} during start-up after {facts.elapsed:.2f} s"
        if facts.returncode == 0:
            what += (" (a server must keep running in the foreground; one that daemonizes "
                     "cannot be supervised)")
        cls = ServerStartError
    elif facts.reason is WaitEnd.PORT_LOST:
        what = f"did not get its port after {facts.elapsed:.2f} s: {facts.lost}"
        cls = ServerNotReady
    elif facts.reason is WaitEnd.GAVE_UP:
        what = (f"was given up after {facts.elapsed:.2f} s: it listens on port "
                f"{', '.join(map(str, sorted(facts.other_ports))) or '?'} instead of "
                f"{facts.port} (its $PORT); it has been stopped")
        cls = ServerNotReady
    else:
        scale = f" x HARNESS_TIMEOUT_FACTOR={facts.factor:g}" if facts.factor != 1 else ""
        what = (f"was not ready within {facts.deadline_seconds:.1f} s (start_timeout="
                f"{facts.start_timeout:g}{scale}); it has been stopped")
        cls = ServerNotReady
    lines = [f"server {facts.name!r} {what}",
             f"  command: {shown(facts.command)}",
             f"  pid {facts.pid}, {facts.where}" + (" (socket handed off as fd 3)"
                                                   if facts.handoff else ""),
             f"  readiness {facts.check}, {facts.successes} passes in a row needed: "
             f"{facts.summary}"]
    # What each kind of outcome looked like, the most frequent first: the
    # last probe is often just the one the deadline cut short.
    for label in sorted(facts.counts, key=lambda lbl: -facts.counts[lbl]):
        if facts.details.get(label):
            lines.append(f"  last {label}: {facts.details[label][:200]!r}")
            if len([line for line in lines if line.startswith("  last ")]) >= 4:
                break
    if facts.other_ports:
        lines.append(f"  the server listens on port "
                     f"{', '.join(map(str, sorted(facts.other_ports)))} instead of {facts.port}")
    kept = f"kept at {facts.log_path}" if facts.log_path else f"not kept: {facts.not_kept}" \
        if facts.not_kept and "=0" not in facts.not_kept else "not kept (HARNESS_KEEP_LOGS=0)"
    if facts.log_lines:
        lines.append(f"  log ({kept}):")
        lines.extend("    " + line for line in facts.log_lines)
    else:
        lines.append(f"  log: empty ({kept})")
    lines.append(f"  fix: {_fix(facts)}")
    return cls, "\n".join(lines)


def launch_failure(name: str, what: str, *, errno: Optional[int], detail: str,
                   keeper_died: bool, command: Sequence[str], cwd: str,
                   preload: Optional[Sequence[str]], log_lines: Sequence[str] = (),
                   log_path: Optional[str] = None) -> str:
    """The message of a server that could not be launched: usually no program ran,
    but a keeper that died as the server started may leave output (``log_lines``,
    kept at ``log_path``)."""
    missing = re.search(r"ModuleNotFoundError: No module named '([^']+)'", detail)
    if errno in (errnos.ENOENT, errnos.EACCES, errnos.ENOEXEC, errnos.ENOTDIR):
        fix = "fix the command (is the program installed, on PATH and executable?)"
    elif keeper_died:
        fix = ("do not signal the server's parent process (os.getppid()): it is harness's "
               "keeper, which ends the server's whole process tree when it goes")
    elif missing:
        fix = (f"make {missing.group(1)!r} importable by the test runner itself: the warm "
               f"launcher imports preload and target modules with the runner's sys.path "
               f"(install your project, e.g. pip install -e ., or put its directory on "
               f"sys.path / PYTHONPATH before the tests start)")
    elif detail:
        fix = "fix the import error above (in a preload or target module)"
    else:
        fix = "see the error above; the next start launches a fresh launcher"
    shown_command = shown(command) if command else (
        f"(the warm launcher, preload {list(preload or ())})")
    lines = [f"could not launch server {name!r}: {what}", f"  command: {shown_command}",
             f"  cwd: {cwd}"]
    if detail:
        lines.extend("    " + line for line in detail.rstrip().splitlines())
    if log_lines:
        lines.append(f"  log (kept at {log_path}):" if log_path else "  log (not kept):")
        lines.extend("    " + line for line in log_lines)
    lines.append(f"  fix: {fix}")
    return "\n".join(lines)


#: A wait of harness's own beyond the user's check is logged from this long on.
NOTABLE_WAIT = 0.05


@dataclasses.dataclass
class ReadyFacts:
    """How a start that succeeded spent its time (seconds from the start's deadline)."""

    name: str
    pid: Optional[int]
    where: str                      # the URL, "unix:PATH" or "no port"
    warm: bool
    preparing: float                # starting the launchers (not counted in start_timeout)
    launched: float
    first_pass: Optional[float]
    probes: int                     # probes up to the first that passed
    done: Optional[float]
    verifying: float                # in the listener proof
    successes: int
    port: Optional[int]
    elsewhere: str                  # where it listens instead of $PORT ("" if on it)
    without_port: bool              # taken for a process without a port
    waited: float                   # for a listener after the check passed
    relaunches: int


def ready_report(facts: ReadyFacts) -> Tuple[str, Optional[str]]:
    """The INFO line of a start, and a WARNING when harness waited for something."""
    def ms(seconds: Optional[float]) -> str:
        return f"{1000 * (seconds or 0.0):.1f} ms"
    steps = []
    if facts.preparing >= 0.001:
        steps.append(f"launchers started in {ms(facts.preparing)} (not counted)")
    steps.append(f"launched in {ms(facts.launched)}")
    steps.append(f"check passed at {ms(facts.first_pass)} after {facts.probes} "
                 f"probe{'s' if facts.probes != 1 else ''}")
    steps.append(f"{facts.successes} pass{'es' if facts.successes != 1 else ''} in a row at "
                 f"{ms(facts.done)}")
    if facts.verifying >= 0.0001:
        steps.append(f"listener proof {ms(facts.verifying)}")
    where = facts.where
    if facts.elsewhere:
        steps.append(f"it listens on {facts.elsewhere}, not on its $PORT {facts.port}")
    if facts.without_port:
        steps.append("taken for a process without a port")
    if facts.elsewhere or facts.without_port:
        where += " unused"
    if facts.relaunches:
        steps.append(f"{facts.relaunches} relaunch{'es' if facts.relaunches != 1 else ''} on a "
                     f"new port")
    info = (f"server {facts.name!r} ready in {facts.done or 0.0:.3f} s (pid {facts.pid}, "
            f"{where}{', warm' if facts.warm else ''}): " + "; ".join(steps))
    warning = None
    if facts.without_port:
        warning = (f"server {facts.name!r} passed its check, but its process tree listens "
                   f"nowhere (no TCP port, no Unix socket): waited {facts.waited:.3f} s for a "
                   f"listener, then took it for a process without a port.  Pass listens=False "
                   f"if it has no port (no wait, no port leased); if it is a server whose check "
                   f"passes before it listens, make the check talk to it (HttpCheck, TcpCheck)")
    elif facts.waited >= NOTABLE_WAIT:
        warning = (f"server {facts.name!r} passed its check {facts.waited:.3f} s before it "
                   f"listened on $PORT {facts.port}: waited {facts.waited:.3f} s for a listener."
                   f"  A check that talks to the server (HttpCheck, TcpCheck) passes only once "
                   f"it listens; pass listens=False for a process without a port")
    return info, warning
