"""``python -m harness who PORT``: who holds a port, and did harness start it?

For each process with a TCP socket on the port (listeners first) it shows
pid, user, how long it has run, its command line, and whether harness
launched it (the ``HARNESS_OWNER`` marker) and if so whether that test
runner is still alive, i.e. whether it is an orphan for ``reap``.  Also
names the holder of a harness lease on the port.  Exit code 0 if the port
is free, 1 if anything holds it.  A port that only connections in TIME_WAIT
block, and that a server setting ``SO_REUSEADDR`` (nearly every server) can
bind now, counts as free: it is what harness hands out when a range runs low.

What it cannot see it says so: another user's process is invisible to an
ordinary user, but its socket is not (the kernel lists every socket of the
network namespace, and a bind with ``SO_REUSEADDR`` fails on any live
one), nor is its harness lease; so "held by a process you cannot see" is
told apart from "held by no process" (only connections in TIME_WAIT).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import sys
import time
from typing import Dict, List, Optional

from .. import _validate, ports
from .._os import procinfo, sockets
from .._os.identity import ProcessId
from .._os.leases import held as lease_held
from .._os.leases import holders as lease_holders
from .._os.users import describe_user, user_name
from .._server import marker
from .._server.reaper import Runner, runner_state
from .._validate import arg_type

_LINUX = sys.platform.startswith("linux")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("port", metavar="PORT", type=arg_type(_validate.port, "PORT"),
                        help="the TCP port to look at")
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(max(0.0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclasses.dataclass
class ProcessFacts:
    """What a person wants to know about a process holding a port (or its lease)."""

    pid: int
    uid: Optional[int]  # None: not visible to this user
    command: str
    running_seconds: Optional[float]
    marked: Optional[bool]  # started by harness? None: its environment is not readable
    owner_text: Optional[str] = None  # the HARNESS_OWNER marker as found
    owner: Optional[ProcessId] = None  # ... as a value (None: not one harness writes)
    runner: Optional[Runner] = None
    server_id: Optional[str] = None
    state: Optional[str] = None  # "LISTEN", ... for a socket holder

    @property
    def user(self) -> Optional[str]:
        """The account name (the uid as text when it has none), as JSON's ``user``."""
        return None if self.uid is None else user_name(self.uid) or str(self.uid)

    def to_json(self) -> Dict[str, object]:
        data: Dict[str, object] = {"pid": self.pid, "user": self.user, "command": self.command,
                                   "running_seconds": self.running_seconds,
                                   "harness": self.marked}
        if self.marked:
            alive = {Runner.ALIVE: True, Runner.GONE: False}
            data.update(owner=self.owner_text, server_id=self.server_id,
                        owner_alive=alive.get(self.runner) if self.runner else None,
                        runner=self.runner.value if self.runner else None)
        if self.state is not None:
            data["state"] = self.state
        return data

    def harness_line(self) -> str:
        if self.marked is None:
            return ("started by harness: unknown (its environment is not readable: another "
                    "user's process? run as that user or root)")
        if not self.marked:
            return "started by harness: no"
        if self.owner is None:
            return (f"started by harness: yes, but its marker names no test runner "
                    f"({self.owner_text!r})")
        runner = f"test runner pid {self.owner.pid}"
        if self.runner is Runner.OTHER_NAMESPACE:
            return (f"started by harness: yes, for {runner} in another PID namespace (a "
                    f"container): whether it still runs cannot be seen from here, and reap "
                    f"leaves it alone")
        if self.runner is Runner.ALIVE:
            return f"started by harness: yes, for {runner}, which is still running"
        return (f"started by harness: yes, for {runner}, which is gone: an orphan; "
                f"`python -m harness reap` stops it")


def describe_process(pid: int, state: Optional[str] = None) -> ProcessFacts:
    """The facts about ``pid``, as far as this user can see them."""
    started = procinfo.start_time(pid)
    env = procinfo.environ(pid)
    facts = ProcessFacts(
        pid=pid, uid=procinfo.owner_uid(pid), command=procinfo.cmdline(pid),
        running_seconds=None if started is None else round(time.time() - started, 1),
        marked=None if env is None else marker.OWNER_ENV in env, state=state)
    if env is not None and facts.marked:
        facts.owner_text = env[marker.OWNER_ENV]
        facts.owner = ProcessId.parse(facts.owner_text)
        facts.runner = None if facts.owner is None else runner_state(facts.owner)
        facts.server_id = env.get(marker.SERVER_ID_ENV)
    return facts


def _hosts() -> List[str]:
    return ["127.0.0.1", "::1"] if procinfo.has_ipv6_loopback() else ["127.0.0.1"]


def _listening(port: int) -> Optional[bool]:
    """Whether a socket listens on ``port`` (anyone's: the kernel's table); None: unknown."""
    seen: Optional[bool] = None
    for family in (socket.AF_INET, socket.AF_INET6):
        table = sockets.listening(family)
        if table is not None:
            seen = bool(seen) or port in table.values()
    return seen


def run(args: argparse.Namespace) -> int:
    port = args.port
    visible = procinfo.HAVE_PROC or procinfo.HAVE_PSUTIL
    processes = [describe_process(h.pid, h.status) for h in procinfo.port_holders(port)
                 if h.pid != os.getpid()]
    leases = [describe_process(pid) for pid in lease_holders(port) if pid != os.getpid()]
    lease_hidden = bool(lease_held(port)) and not leases
    probes = [ports.probe_port(port, host) for host in _hosts()]
    in_use = any(p in (ports.Probe.IN_USE, ports.Probe.UNREACHABLE) for p in probes)
    privileged = ports.Probe.PRIVILEGED in probes
    # The kernel lists every listening socket of the network namespace to
    # every user, while their processes are hidden from all but their owner.
    listening = _listening(port)
    hidden_holder = bool(visible and listening and not any(p.state == "LISTEN"
                                                            for p in processes))
    time_wait = procinfo.time_wait_count(port)
    holders = bool(processes) or bool(leases) or lease_hidden or hidden_holder
    # Only connections in TIME_WAIT, which SO_REUSEADDR binds past (Linux: tried).
    reusable = bool(in_use and time_wait and not holders and listening is not True
                    and _reusable(port))
    held = (in_use and not reusable) or holders
    if args.json:
        print(json.dumps({"port": port, "free": not held, "in_use": in_use,
                          "holders": [p.to_json() for p in processes],
                          "lease_holders": [p.to_json() for p in leases],
                          "time_wait": time_wait, "holders_visible": visible,
                          "hidden_holder": hidden_holder, "lease_hidden": lease_hidden},
                         indent=2))
        return 1 if held else 0
    if reusable:
        print(f"port {port} is free for a server that sets SO_REUSEADDR (nearly all do): no "
              f"process holds it, but {time_wait} recently closed connection(s) on it are in "
              f"TIME_WAIT; a server without SO_REUSEADDR can bind it once they expire, within "
              f"a minute or so")
        return 0
    if not held:
        needs = (f"; binding it needs privileges (ports below "
                 f"{ports.unprivileged_port_start()})" if privileged else "")
        print(f"port {port} is free (nothing listens on or holds it, and no harness lease)"
              f"{needs}")
        return 0
    print("\n".join(_report(port, processes, leases, lease_hidden, hidden_holder, in_use,
                            listening, time_wait, visible)))
    return 1


def _report(port: int, processes: List[ProcessFacts], leases: List[ProcessFacts],
            lease_hidden: bool, hidden_holder: bool, in_use: bool, listening: Optional[bool],
            time_wait: int, visible: bool) -> List[str]:
    as_root = f"to name it, run as root: sudo python -m harness who {port}"
    lines: List[str] = []
    if hidden_holder:
        lines.append(f"port {port} is held by a process you cannot see: a socket listens on "
                     f"it, but its process belongs to another user; {as_root}")
    if processes:
        lines.append(f"port {port} is held by:")
        lines.extend(_process_lines(processes))
    elif in_use and not hidden_holder:
        lines.append(_unnamed_holder(port, listening, time_wait, visible))
    if leases:
        lines.append(f"port {port} is leased by harness to:")
        lines.extend(_process_lines(leases))
    elif lease_hidden:
        lines.append(f"port {port} is leased by harness to a process you cannot see (another "
                     f"user's); {as_root}")
    return lines


def _unnamed_holder(port: int, listening: Optional[bool], time_wait: int, visible: bool) -> str:
    """The line for a port in use whose holder is not among the processes seen."""
    if time_wait:
        nothing = " (nothing listens on it)" if listening is False else ""
        return (f"port {port} is held by no process{nothing}, but {time_wait} recently closed "
                f"connection(s) on it are in TIME_WAIT: {_time_wait_advice(port)}")
    if visible:
        return (f"port {port} is in use, but the holder is not visible to this user (another "
                f"user's process, or another network namespace); try again as root")
    return (f"port {port} is in use; naming the holder needs psutil on this platform "
            f"(pip install psutil)")


def _reusable(port: int) -> bool:
    """Whether a server setting SO_REUSEADDR can bind ``port`` now despite its
    TIME_WAIT connections (known on Linux only, by trying)."""
    return _LINUX and all(ports.probe_port(port, host, allow_time_wait=True) is ports.Probe.FREE
                          for host in _hosts())


def _time_wait_advice(port: int) -> str:
    """Who can bind a port that only connections in TIME_WAIT block, as found by trying."""
    if _reusable(port):
        return "a server that sets SO_REUSEADDR can bind it now, others within a minute or so"
    if _LINUX:
        # Linux lets a bind pass a TIME_WAIT only if the closed socket had set
        # SO_REUSEADDR too.
        return ("no server can bind it until they expire, within a minute or so (the server "
                "that closed them did not set SO_REUSEADDR)")
    return "a bind may fail until they expire, within a minute or so"


def _process_lines(facts: List[ProcessFacts]) -> List[str]:
    lines = []
    for info in facts:
        state = f", {info.state.lower()}" if info.state else ""
        user = "?" if info.uid is None else describe_user(info.uid)
        lines.append(f"  pid {info.pid}  user {user}  running "
                     f"{_age(info.running_seconds)}{state}")
        lines.append(f"    command: {procinfo.short_cmdline(info.command, 200)}")
        lines.append(f"    {info.harness_line()}")
    return lines
