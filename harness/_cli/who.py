"""``python -m harness who PORT``: who holds a port, and did harness start it?

For each process with a TCP socket on the port (listeners first) it shows
pid, user, how long it has run, its command line, and whether harness
launched it (the ``HARNESS_OWNER`` marker) and if so whether that test
runner is still alive, i.e. whether it is an orphan for ``reap``.  Also
names the holder of a harness lease on the port.  Exit code 0 if the port
is free, 1 if anything holds it.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Dict, List, Optional

from .. import ports
from .._os import procinfo
from .._server import marker
from .._validate import arg_type, check_port


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("port", metavar="PORT", type=arg_type(check_port, "PORT"),
                        help="the TCP port to look at")
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")


def _user(uid: Optional[int]) -> Optional[str]:
    if uid is None:
        return None
    try:
        import pwd
        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


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


def describe_process(pid: int) -> Dict[str, object]:
    """What a person wants to know about a process holding a port."""
    started = procinfo.start_time(pid)
    env = procinfo.environ(pid)
    info: Dict[str, object] = {
        "pid": pid,
        "user": _user(procinfo.owner_uid(pid)),
        "command": procinfo.cmdline(pid),
        "running_seconds": None if started is None else round(time.time() - started, 1),
    }
    if env is None:
        info["harness"] = None  # unknown: the environment is not readable
    elif marker.OWNER_ENV in env:
        owner = env[marker.OWNER_ENV]
        info["harness"] = True
        info["owner"] = owner
        info["owner_alive"] = procinfo.is_alive(owner)
        info["server_id"] = env.get(marker.SERVER_ID_ENV)
    else:
        info["harness"] = False
    return info


def _harness_line(info: Dict[str, object]) -> str:
    if info["harness"] is None:
        return ("started by harness: unknown (its environment is not readable: another "
                "user's process? run as that user or root)")
    if not info["harness"]:
        return "started by harness: no"
    owner_pid = str(info["owner"]).split(":", 1)[0]
    if info["owner_alive"]:
        return f"started by harness: yes, for test runner pid {owner_pid}, which is still running"
    return (f"started by harness: yes, for test runner pid {owner_pid}, which is gone: an "
            f"orphan; `python -m harness reap` stops it")


def run(args: argparse.Namespace) -> int:
    port = args.port
    visible = procinfo.HAVE_PROC or procinfo.HAVE_PSUTIL
    holders = [h for h in procinfo.port_holders(port) if h.pid != os.getpid()]
    lessees = [pid for pid in ports.lease_holders(port) if pid != os.getpid()]
    free_v4 = ports.is_port_free(port, "127.0.0.1")
    free_v6 = ports.is_port_free(port, "::1") if procinfo.has_ipv6_loopback() else True
    in_use = not (free_v4 and free_v6)
    processes: List[Dict[str, object]] = []
    for holder in holders:
        info = describe_process(holder.pid)
        info["state"] = holder.status
        processes.append(info)
    leases = [describe_process(pid) for pid in lessees]
    time_wait = procinfo.time_wait_count(port)
    held = in_use or bool(processes) or bool(leases)
    if args.json:
        print(json.dumps({"port": port, "free": not held, "in_use": in_use,
                          "holders": processes, "lease_holders": leases,
                          "time_wait": time_wait, "holders_visible": visible}, indent=2))
        return 1 if held else 0
    if not held:
        print(f"port {port} is free (nothing listens on or holds it, and no harness lease)")
        return 0
    lines: List[str] = []
    if processes:
        lines.append(f"port {port} is held by:")
    elif in_use and time_wait:
        lines.append(f"port {port} is held by no process, but {time_wait} recently closed "
                     f"connection(s) on it are in TIME_WAIT: a server that sets SO_REUSEADDR "
                     f"can bind it now, others within a minute or so")
    elif in_use:
        if visible:
            lines.append(f"port {port} is in use, but the holder is not visible to this user "
                         f"(another user's process, or another network namespace); "
                         f"try again as root")
        else:
            lines.append(f"port {port} is in use; naming the holder needs psutil on this "
                         f"platform (pip install psutil)")
    for info in processes + leases:
        if info in leases:
            lines.append(f"port {port} is leased by harness to:")
        state = f", {str(info['state']).lower()}" if "state" in info else ""
        lines.append(f"  pid {info['pid']}  user {info['user'] or '?'}  running "
                     f"{_age(info['running_seconds'])}{state}")  # type: ignore[arg-type]
        lines.append(f"    command: {procinfo.short_cmdline(str(info['command']), 200)}")
        lines.append(f"    {_harness_line(info)}")
    print("\n".join(lines))
    return 1
