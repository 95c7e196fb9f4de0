"""Facts about processes and sockets for the runner: one backend, chosen once.

harness must keep working when vendored without psutil, so the backend is
chosen at import, trio's ``_subprocess_platform`` way, instead of each
function trying psutil and then /proc:

* **/proc** on Linux, with or without psutil (the same answers in both CI
  runs; :mod:`.proc` reads the files);
* **psutil** elsewhere (macOS, the BSDs);
* **unknown** otherwise: every answer shrinks to "unknown" (``None``, an
  empty list, "unknown holder"), documented in docs/platforms.rst, never an error.
"""
from __future__ import annotations

import os
import socket
from typing import Dict, Iterable, List, NamedTuple, Optional, Set, Union

from . import proc
from .identity import ProcessId

try:  # psutil is the one optional dependency.
    import psutil as psutil  # (re-exported: memory.py reads it too)
except ImportError:  # pragma: no cover - exercised by the no-psutil CI run
    psutil = None

HAVE_PSUTIL = psutil is not None
HAVE_PROC = proc.HAVE_PROC
BACKEND = "proc" if HAVE_PROC else "psutil" if HAVE_PSUTIL else "unknown"

# TCP states in /proc/net/tcp.
_LISTEN, _TIME_WAIT, _CLOSE = "0A", "06", "07"


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


# --------------------------------------------------------------------------
# Processes


def identity(pid: int) -> Optional[ProcessId]:
    """The :class:`ProcessId` of ``pid``: pid plus start time, so a reused pid differs.

    ``None`` if the process does not exist (or cannot be looked at).
    """
    if BACKEND == "proc":
        return proc.identity(pid)
    if BACKEND == "psutil":
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
    if BACKEND == "proc":
        return proc.alive(wanted)
    if identity(wanted.pid) != wanted:
        return False
    if BACKEND == "psutil":
        try:
            return bool(psutil.Process(wanted.pid).status() != psutil.STATUS_ZOMBIE)
        except (psutil.Error, OSError):
            return False
    return False


def cmdline(pid: int) -> str:
    """The command line of ``pid`` as one string, or ``""`` when unknown."""
    if BACKEND == "proc":
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            return ""
        return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    if BACKEND == "psutil":
        try:
            return " ".join(psutil.Process(pid).cmdline())
        except (psutil.Error, OSError):
            return ""
    return ""


def environ(pid: int) -> Optional[Dict[str, str]]:
    """The environment ``pid`` was started with, or ``None`` if unreadable."""
    if BACKEND == "proc":
        raw = proc.environ(pid)
        if raw is None:
            return None
        env = {}
        for item in raw.split(b"\0"):
            key, sep, value = item.partition(b"=")
            if sep:
                env[key.decode(errors="replace")] = value.decode(errors="replace")
        return env
    if BACKEND == "psutil":
        try:
            return dict(psutil.Process(pid).environ())
        except (psutil.Error, OSError):
            return None
    return None


def owner_uid(pid: int) -> Optional[int]:
    """The (effective) user id ``pid`` runs as, or ``None`` when unknown."""
    if BACKEND == "proc":
        try:
            return os.stat(f"/proc/{pid}").st_uid
        except OSError:
            return None
    if BACKEND == "psutil":
        try:
            return int(psutil.Process(pid).uids().effective)
        except (psutil.Error, OSError, AttributeError):
            return None
    return None


def start_time(pid: int) -> Optional[float]:
    """When ``pid`` started, in ``time.time()`` seconds, or ``None`` when unknown."""
    if BACKEND == "proc":
        fields = proc.stat_fields(pid)
        try:
            with open("/proc/stat", "rb") as f:
                boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        except (OSError, StopIteration, ValueError):
            return None
        if fields is None:
            return None
        return boot + int(fields[proc.STARTTIME]) / os.sysconf("SC_CLK_TCK")
    if BACKEND == "psutil":
        try:
            return float(psutil.Process(pid).create_time())
        except (psutil.Error, OSError):
            return None
    return None


def all_pids() -> List[int]:
    """Every pid visible to us (empty when it cannot be known)."""
    if BACKEND == "proc":
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    if BACKEND == "psutil":
        return [int(pid) for pid in psutil.pids()]
    return []


def parent_pid(pid: int) -> Optional[int]:
    if BACKEND == "proc":
        return proc.parent(pid)
    if BACKEND == "psutil":
        try:
            return int(psutil.Process(pid).ppid())
        except (psutil.Error, OSError):
            return None
    return None


def descendants(pid: int) -> List[int]:
    """Pids of every live descendant of ``pid`` (children first)."""
    if BACKEND == "proc":
        found = proc.subtree(pid)
        if found is not None:
            return found
        tree = proc.scan_children()  # no children files in this kernel: scan
        found, todo = [], [pid]
        while todo:
            for child in tree.get(todo.pop(0), ()):
                found.append(child)
                todo.append(child)
        return found
    if BACKEND == "psutil":
        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except (psutil.Error, OSError):
            return []
    return []


# --------------------------------------------------------------------------
# Sockets


def socket_inodes(pid: int) -> Set[int]:
    """Inodes of the sockets ``pid`` has open (Linux; empty elsewhere or if unreadable)."""
    return proc.socket_inodes(pid) if BACKEND == "proc" else set()



def holders_of(inodes: Iterable[int]) -> List[int]:
    """Pids of the processes holding any of the socket ``inodes`` (a scan of /proc)."""
    wanted = set(inodes)
    if not wanted or BACKEND != "proc":
        return []
    return [pid for pid in all_pids() if wanted & proc.socket_inodes(pid)]


def _proc_net_tcp(port: int) -> Dict[int, str]:
    """inode -> state name for TCP sockets on local ``port`` (IPv4 and IPv6)."""
    found: Dict[int, str] = {}
    for row in _tcp_rows():
        local, state, inode = row[1], row[3], int(row[9])
        if int(local.rsplit(":", 1)[1], 16) == port and inode:
            found[inode] = "LISTEN" if state == _LISTEN else (
                "BOUND" if state == _CLOSE else "CONNECTED")
    return found


def _tcp_rows() -> Iterable[List[str]]:
    """The rows of /proc/net/tcp and tcp6, split into fields (the one parser of them)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 10:
                yield fields


def time_wait_count(port: int) -> int:
    """How many TCP connections on local ``port`` are in TIME_WAIT (held by no process).

    They make a ``bind()`` without ``SO_REUSEADDR`` fail for up to a minute
    after a server closed its connections first; 0 when unknown.
    """
    if BACKEND == "proc":
        return sum(1 for row in _tcp_rows()
                   if row[3] == _TIME_WAIT and int(row[1].rsplit(":", 1)[1], 16) == port)
    if BACKEND == "psutil":
        try:
            conns = psutil.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            return 0
        return sum(1 for c in conns if c.laddr and c.laddr.port == port
                   and c.status == psutil.CONN_TIME_WAIT)
    return 0


def port_holders(port: int) -> List[SocketHolder]:
    """Processes that have a TCP socket bound to local ``port``, listeners first.

    Best effort: without privileges some holders are invisible, and the
    caller must say "unknown holder" when the list is empty.
    """
    holders: Dict[int, str] = {}
    if BACKEND == "proc":
        inodes = _proc_net_tcp(port)
        if inodes:
            for pid in all_pids():
                for inode in proc.socket_inodes(pid):
                    if inode in inodes and holders.get(pid) != "LISTEN":
                        holders[pid] = inodes[inode]
    elif BACKEND == "psutil":
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
