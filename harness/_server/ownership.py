"""Is the port the server's?  Every listener on it must belong to the server's process tree.

A readiness check talks to *a* listener on the port; nothing in the
answer says whose it is.  Three ways a stranger's answer could pass for
the server's, each seen in practice:

* another user's dual-stack ``[::]`` listener, in the IPv6 table, takes
  the leased port while the server is slow to bind;
* a ``SO_REUSEPORT`` listener on ``127.0.0.1:PORT`` shares the port with a
  server bound to ``0.0.0.0``: the kernel spreads connections over both;
* a server that listens on another port, while a stale server from an
  earlier run answers on ours.

So ready requires that *every* listener on the port, IPv4 and IPv6,
wildcard binds included, is a socket held by the server or one of its
descendants (the keeper's subtree: daemons that left the server's tree are
still in it).  A listener that is not is named by pid where this user can
see it, and by uid always (sock_diag reports every socket's owner).
Linux only; elsewhere the answer is "cannot tell" and readiness proceeds.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Callable, Iterable, List, Optional, Set, Tuple

from .._config import scaled_for_cleanup
from .._os import proc, procinfo, sockets
from ..checks import Outcome


def tree_pids(server_pid: int, keeper_pid: Optional[int]) -> List[int]:
    """The server and every process it started (the keeper's subtree when there is one)."""
    if keeper_pid is not None:
        below = proc.subtree(keeper_pid)
        if below is not None:
            return below
    return [server_pid] + procinfo.descendants(server_pid)


def tree_inodes(pids: Iterable[int]) -> Set[int]:
    inodes: Set[int] = set()
    for pid in pids:
        inodes |= proc.socket_inodes(pid)
    return inodes


def _user(uid: int) -> str:
    try:
        import pwd
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def describe_foreign(listener: sockets.Listener) -> str:
    """Who holds ``listener``: a pid and command line where visible, the user always."""
    holders = procinfo.holders_of([listener.inode])
    where = f"[{listener.address}]" if ":" in listener.address else listener.address
    if holders:
        who = "; ".join(f"pid {pid} ({procinfo.short_cmdline(procinfo.cmdline(pid), 80)})"
                        for pid in holders[:3])
        return f"{who}, user {_user(listener.uid)}, listening on {where}:{listener.port}"
    mine = listener.uid == os.geteuid()
    return (f"a process of user {_user(listener.uid)} listening on {where}:{listener.port}"
            + ("" if mine else " (its pid is not visible to this user)"))


def split_listeners(port: int, pids: Iterable[int]
                    ) -> Optional[Tuple[List[sockets.Listener], List[sockets.Listener]]]:
    """The listeners on ``port`` held by one of ``pids``, and the others; ``None`` if unknown."""
    found = sockets.on_port(port)
    if found is None or not proc.HAVE_PROC:
        return None
    ours = tree_inodes(pids) if found else set()
    return ([listener for listener in found if listener.inode in ours],
            [listener for listener in found if listener.inode not in ours])


def held_by(listeners: Iterable[sockets.Listener], pids: Iterable[int]) -> bool:
    """True if one of ``pids`` holds one of ``listeners``."""
    inodes = tree_inodes(pids)
    return any(listener.inode in inodes for listener in listeners)


def own_tree(server_pid: int) -> List[int]:
    """The server and its descendants by parentage (not the orphans it left to its keeper)."""
    below = proc.subtree(server_pid)
    return [server_pid] + (below if below is not None else procinfo.descendants(server_pid))


def listen_ports(pids: Iterable[int]) -> Set[int]:
    """TCP ports the processes ``pids`` listen on (Linux; else empty)."""
    inodes = tree_inodes(pids)
    ports: Set[int] = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        table = sockets.listeners(family) or {}
        ports.update(item.port for inode, item in table.items() if inode in inodes)
    return ports


class Idleness:
    """How long a process tree has done nothing: no CPU time used, nothing runnable.

    A tree that works (imports, migrations, a starved process on a loaded
    machine: state R or D) is on its way somewhere, however slowly; one
    that used no CPU time between two looks waits for something outside.
    """

    def __init__(self) -> None:
        self.since: Optional[float] = None
        self.ticks = -1

    def idle_for(self, pids: Iterable[int], now: float) -> float:
        """Seconds the tree ``pids`` has been idle as of ``now`` (0 at the first look)."""
        ticks, busy = proc.activity(pids)
        if self.since is None or busy or ticks != self.ticks:
            self.since, self.ticks = now, ticks
            return 0.0
        return now - self.since

    def reset(self) -> None:
        self.since = None


class PortWatch:
    """Gives up on a server that listens on other ports but not on $PORT, after a grace.

    The grace is for servers that open an admin or metrics port before
    their main one.  It counts only time in which the server's tree did
    nothing (:class:`Idleness`): a server still importing or migrating is
    working towards $PORT however long that takes (``start_timeout`` bounds
    it); one that sits idle for a second (times HARNESS_TIMEOUT_FACTOR)
    with another port open waits for nothing.  Looked at no more than every
    50 ms: it reads the process tree's sockets.
    """

    GRACE = 1.0
    EVERY = 0.05

    def __init__(self, tree: Callable[[], List[int]], port: int) -> None:
        self.tree = tree
        self.port = port
        self.last_look = 0.0
        self.idleness = Idleness()
        self.seen: Set[int] = set()

    def __call__(self) -> Optional[Outcome]:
        now = time.monotonic()
        if now - self.last_look < self.EVERY:
            return None
        self.last_look = now
        pids = self.tree()
        ports = listen_ports(pids)
        if not ports or self.port in ports:
            self.idleness.reset()
            return None
        self.seen = ports
        idle = self.idleness.idle_for(pids, now)
        if idle < scaled_for_cleanup(self.GRACE):
            return None
        shown = ", ".join(map(str, sorted(ports)))
        return Outcome(False, f"listens on port {shown} instead of {self.port}",
                       f"the server listens on {shown}, not on $PORT={self.port} "
                       f"(and did nothing else for {idle:.1f} s)")
