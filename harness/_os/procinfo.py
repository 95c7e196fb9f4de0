"""Facts about processes and sockets: psutil when it is there, /proc otherwise.

harness must keep working when vendored without psutil.  On Linux every
function here has a /proc fallback; elsewhere, without psutil, the answers
shrink to "unknown" (documented in README.rst) instead of failing.
"""
from __future__ import annotations

import os
import socket
import sys
from typing import Dict, Iterator, List, NamedTuple, Optional, Union

from .identity import ProcessId

try:  # psutil is the one optional dependency.
    import psutil
except ImportError:  # pragma: no cover - exercised by the no-psutil CI run
    psutil = None  # type: ignore[assignment]

HAVE_PSUTIL = psutil is not None
HAVE_PROC = sys.platform.startswith("linux") and os.path.isdir("/proc/self")

# TCP state LISTEN in /proc/net/tcp and psutil.
_PROC_TCP_LISTEN = "0A"


class SocketHolder(NamedTuple):
    """A process that has a TCP socket on a port."""
    pid: int
    cmdline: str
    status: str  # "LISTEN", "BOUND", ... as far as it is known

    def describe(self) -> str:
        return f"pid {self.pid} ({short_cmdline(self.cmdline)}), {self.status.lower()}"


def short_cmdline(text: str, limit: int = 120) -> str:
    """A command line fit for one line of an error message."""
    text = " ".join(text.split()) or "?"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _stat_fields(pid: int) -> Optional[List[bytes]]:
    """Fields 3 on of /proc/<pid>/stat (state first), or ``None`` if it is gone.

    The command name (field 2) may hold spaces and parentheses, so the
    fields after it are split from the last ')'.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()


# Indexes into _stat_fields (field number - 3).
_STATE, _PPID, _STARTTIME = 0, 1, 19


def identity(pid: int) -> Optional[ProcessId]:
    """The :class:`ProcessId` of ``pid``: pid plus start time, so a reused pid differs.

    ``None`` if the process does not exist (or, without psutil or /proc,
    cannot be looked at).
    """
    if HAVE_PROC:
        fields = _stat_fields(pid)
        return None if fields is None else ProcessId(pid, fields[_STARTTIME].decode())
    if HAVE_PSUTIL:
        try:
            return ProcessId(pid, f"{psutil.Process(pid).create_time():.6f}")
        except (psutil.Error, OSError):
            return None
    return None


def is_alive(ident: Union[ProcessId, str]) -> bool:
    """True if the process named by ``ident`` (a ``ProcessId`` or its text) still runs."""
    wanted = ProcessId.coerce(ident)
    if wanted is None:
        return False
    current = identity(wanted.pid)
    if current is None or _is_zombie(wanted.pid):
        return False
    return current == wanted


def _is_zombie(pid: int) -> bool:
    if HAVE_PROC:
        fields = _stat_fields(pid)
        return fields is None or fields[_STATE] in (b"Z", b"X")
    if HAVE_PSUTIL:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except (psutil.Error, OSError):
            return True
    return False


def cmdline(pid: int) -> str:
    """The command line of ``pid`` as one string, or ``""`` when unknown."""
    if HAVE_PSUTIL:
        try:
            return " ".join(psutil.Process(pid).cmdline())
        except (psutil.Error, OSError):
            return ""
    if HAVE_PROC:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            return ""
        return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    return ""


def environ(pid: int) -> Optional[Dict[str, str]]:
    """The environment ``pid`` was started with, or ``None`` if unreadable."""
    if HAVE_PROC:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                raw = f.read()
        except OSError:
            return None
        env = {}
        for item in raw.split(b"\0"):
            key, sep, value = item.partition(b"=")
            if sep:
                env[key.decode(errors="replace")] = value.decode(errors="replace")
        return env
    if HAVE_PSUTIL:
        try:
            return dict(psutil.Process(pid).environ())
        except (psutil.Error, OSError):
            return None
    return None


def owner_uid(pid: int) -> Optional[int]:
    """The (effective) user id ``pid`` runs as, or ``None`` when unknown."""
    if HAVE_PROC:
        try:
            return os.stat(f"/proc/{pid}").st_uid
        except OSError:
            return None
    if HAVE_PSUTIL:
        try:
            return psutil.Process(pid).uids().effective
        except (psutil.Error, OSError, AttributeError):
            return None
    return None


def start_time(pid: int) -> Optional[float]:
    """When ``pid`` started, in ``time.time()`` seconds, or ``None`` when unknown."""
    if HAVE_PSUTIL:
        try:
            return psutil.Process(pid).create_time()
        except (psutil.Error, OSError):
            return None
    if HAVE_PROC:
        fields = _stat_fields(pid)
        try:
            with open("/proc/stat", "rb") as f:
                boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        except (OSError, StopIteration, ValueError):
            return None
        if fields is None:
            return None
        return boot + int(fields[_STARTTIME]) / os.sysconf("SC_CLK_TCK")
    return None


def all_pids() -> List[int]:
    """Every pid visible to us (empty when it cannot be known)."""
    if HAVE_PSUTIL:
        return psutil.pids()
    if HAVE_PROC:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    return []


def parent_pid(pid: int) -> Optional[int]:
    if HAVE_PROC:
        fields = _stat_fields(pid)
        return None if fields is None else int(fields[_PPID])
    if HAVE_PSUTIL:
        try:
            return psutil.Process(pid).ppid()
        except (psutil.Error, OSError):
            return None
    return None


def descendants(pid: int) -> List[int]:
    """Pids of every live descendant of ``pid`` (children first)."""
    if HAVE_PSUTIL:
        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except (psutil.Error, OSError):
            return []
    children: Dict[int, List[int]] = {}
    for candidate in all_pids():
        parent = parent_pid(candidate)
        if parent is not None:
            children.setdefault(parent, []).append(candidate)
    found: List[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(0), ()):
            found.append(child)
            todo.append(child)
    return found


def _socket_inodes(pid: int) -> Iterator[int]:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            yield int(target[8:-1])


def _proc_net_tcp(port: int) -> Dict[int, str]:
    """inode -> state name for TCP sockets on local ``port`` (IPv4 and IPv6)."""
    found: Dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if int(local.rsplit(":", 1)[1], 16) == port and inode:
                found[inode] = "LISTEN" if state == _PROC_TCP_LISTEN else (
                    "BOUND" if state == "07" else "CONNECTED")
    return found


def time_wait_count(port: int) -> int:
    """How many TCP connections on local ``port`` are in TIME_WAIT (held by no process).

    They make a ``bind()`` without ``SO_REUSEADDR`` fail for up to a minute
    after a server closed its connections first; 0 when unknown.
    """
    count = 0
    if HAVE_PROC:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    lines = f.readlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if fields[3] == "06" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    elif HAVE_PSUTIL:
        try:
            conns = psutil.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            return 0
        count = sum(1 for c in conns if c.laddr and c.laddr.port == port
                    and c.status == psutil.CONN_TIME_WAIT)
    return count


def port_holders(port: int) -> List[SocketHolder]:
    """Processes that have a TCP socket bound to local ``port``, listeners first.

    Best effort: without privileges some holders are invisible, and the
    caller must say "unknown holder" when the list is empty.
    """
    holders: Dict[int, str] = {}
    if HAVE_PROC:
        inodes = _proc_net_tcp(port)
        if inodes:
            for pid in all_pids():
                for inode in _socket_inodes(pid):
                    if inode in inodes:
                        state = inodes[inode]
                        if holders.get(pid) != "LISTEN":
                            holders[pid] = state
    elif HAVE_PSUTIL:
        try:
            conns = psutil.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            conns = []
        for conn in conns:
            if conn.laddr and conn.laddr.port == port and conn.pid:
                state = "LISTEN" if conn.status == psutil.CONN_LISTEN else (
                    "BOUND" if conn.status == psutil.CONN_NONE else "CONNECTED")
                if holders.get(conn.pid) != "LISTEN":
                    holders[conn.pid] = state
    ordered = sorted(holders.items(), key=lambda item: (item[1] != "LISTEN", item[0]))
    return [SocketHolder(pid, cmdline(pid), state) for pid, state in ordered]


def describe_port_holders(port: int) -> str:
    """One line naming who holds ``port``, or "unknown holder"."""
    holders = [h for h in port_holders(port) if h.status != "CONNECTED"] or port_holders(port)
    if not holders:
        return "unknown holder"
    return "; ".join(h.describe() for h in holders[:3])


def has_ipv6_loopback() -> bool:
    """True if this machine can bind ``::1``."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True
