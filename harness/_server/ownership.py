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

The same look tells where else the tree listens (other TCP ports, Unix
sockets): a check that does not talk to the port (a callable, a
``LogCheck``) passes for a server on a socket of its own, and then that is
the server's address (:class:`ListenerProof`).  No decision here depends
on how busy or idle the server is: only on which sockets it holds.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Callable, Iterable, List, NamedTuple, Optional, Set

from .._os import proc, procinfo, sockets
from .._os.users import describe_user
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


def describe_foreign(listener: sockets.Listener) -> str:
    """Who holds ``listener``: a pid and command line where visible, the user always."""
    holders = procinfo.holders_of([listener.inode])
    where = f"[{listener.address}]" if ":" in listener.address else listener.address
    if holders:
        who = "; ".join(f"pid {pid} ({procinfo.short_cmdline(procinfo.cmdline(pid), 80)})"
                        for pid in holders[:3])
        return f"{who}, user {describe_user(listener.uid)}, listening on {where}:{listener.port}"
    mine = listener.uid == os.geteuid()
    return (f"a process of user {describe_user(listener.uid)} listening on {where}:{listener.port}"
            + ("" if mine else " (its pid is not visible to this user)"))


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



class Listening(NamedTuple):
    """Where a process tree listens, and who else listens on its ``$PORT``, in one look."""
    ours: List[sockets.Listener]      # the tree's listeners on $PORT
    foreign: List[sockets.Listener]   # anyone else's listeners on $PORT
    other_ports: Set[int]             # TCP ports the tree listens on besides $PORT
    unix: List[str]                   # Unix socket paths the tree listens on

    def elsewhere(self) -> str:
        """Where the tree listens other than $PORT, for messages ("" if nowhere)."""
        places = [f"port {port}" for port in sorted(self.other_ports)]
        places += [f"unix:{path}" if path else "an unnamed Unix socket" for path in self.unix]
        return ", ".join(places)


def look(port: Optional[int], pids: Iterable[int], unix: bool = True) -> Optional[Listening]:
    """Every listener on ``port`` (ours or not) and wherever else ``pids`` listen.

    ``None`` where the kernel's tables cannot be read (not Linux).  The Unix
    table is read only if ``unix`` (it is not needed once ``port`` is ours).
    """
    if not proc.HAVE_PROC:
        return None
    tables = [sockets.listeners(family) for family in (socket.AF_INET, socket.AF_INET6)]
    if all(table is None for table in tables):
        return None
    inodes = tree_inodes(pids)
    ours: List[sockets.Listener] = []
    foreign: List[sockets.Listener] = []
    other: Set[int] = set()
    for table in tables:
        for inode, item in (table or {}).items():
            if item.port == port:
                (ours if inode in inodes else foreign).append(item)
            elif inode in inodes:
                other.add(item.port)
    paths: List[str] = []
    if unix and not ours:
        paths = sorted(item.path for inode, item in (sockets.unix_listeners() or {}).items()
                       if inode in inodes)
    return Listening(ours, foreign, other, paths)


class ListenerProof:
    """Is a passed check about *this* server?  Decided by where its tree listens.

    Run when a streak of passed checks is complete.  Every listener on
    ``$PORT`` must be the tree's (a stranger's answer never counts).  A
    check that does not talk to the port (a callable, a ``LogCheck``) is
    about wherever the server listens: on ``$PORT``, or on a socket of its
    own (a Unix socket, another TCP port), and then the server is ready at
    once.  Only a tree that listens nowhere makes the proof wait: for its
    listener on ``$PORT`` when the server is known to bind it (``listens=
    True``, or an earlier launch did), else up to ``grace`` seconds, after
    which it is taken for a process without a port.  Never does a decision
    depend on how busy or idle the server is.
    """

    def __init__(self, port: Optional[int], tree: Callable[[], List[int]], *,
                 check_uses_port: bool, expects_port: bool, grace: float,
                 daemon_check: Optional[Callable[[List[sockets.Listener]], bool]] = None) -> None:
        self.port = port
        self.tree = tree
        self.check_uses_port = check_uses_port
        self.expects_port = expects_port
        self.grace = grace
        self.daemon_check = daemon_check  # True if only orphans the keeper adopted listen
        self.seen_on_port = False   # the tree listened on $PORT at some look
        self.where = ""             # where it listens instead, when ready without $PORT
        self.unbound_since: Optional[float] = None
        self.waited = 0.0           # from the first "listens nowhere" to the verdict
        self.without_port = False   # taken for a process without a port

    def __call__(self) -> Optional[Outcome]:
        """``None`` to accept the streak, or the failing outcome that stands for it."""
        if self.port is None:
            return None
        facts = look(self.port, self.tree(), unix=not self.check_uses_port)
        if facts is None:
            return None  # cannot tell (not Linux)
        if facts.foreign:
            who = "; ".join(describe_foreign(item) for item in facts.foreign[:3])
            return Outcome(False, f"port answered by another process: {who}", foreign=True)
        now = time.monotonic()
        if facts.ours:
            self.seen_on_port = True
            self._settle(now)
            if self.daemon_check is not None and self.daemon_check(facts.ours):
                return Outcome(False, "port held by a process the server left behind "
                                      "(it daemonized?)")
            return None
        elsewhere = facts.elsewhere()
        if elsewhere and not self.expects_port and not self.check_uses_port:
            self.where = elsewhere
            self._settle(now)
            return None
        if self.unbound_since is None:
            self.unbound_since = now
        waited = now - self.unbound_since
        if not self.expects_port and not self.check_uses_port and waited >= self.grace:
            self.without_port = True
            self._settle(now)
            return None
        detail = (f"it listens on {elsewhere}, not on $PORT" if elsewhere else
                  "its process tree listens nowhere yet (no TCP port, no Unix socket)")
        return Outcome(False, f"check passed, but nothing listens on port {self.port} yet",
                       detail)

    def _settle(self, now: float) -> None:
        if self.unbound_since is not None:
            self.waited = now - self.unbound_since


class WrongPortWatch:
    """Says (once) that a server listens on other ports but not on ``$PORT``.

    Runs after failed probes, at most every 50 ms (it reads the tree's
    sockets).  It decides nothing: a server may open an admin port long
    before its main one (imports, migrations, a database to wait for), so
    the start goes on until ``start_timeout``; ``warn`` is called once the
    situation has lasted ``grace`` seconds, so the wait is not silent.
    """

    EVERY = 0.05

    def __init__(self, port: int, tree: Callable[[], List[int]], grace: float,
                 warn: Callable[[str], None]) -> None:
        self.port = port
        self.tree = tree
        self.grace = grace
        self.warn = warn
        self.last_look = 0.0
        self.since: Optional[float] = None
        self.warned = False

    def __call__(self) -> Optional[Outcome]:
        now = time.monotonic()
        if self.warned or now - self.last_look < self.EVERY:
            return None
        self.last_look = now
        ports = listen_ports(self.tree())
        if not ports or self.port in ports:
            self.since = None
            return None
        if self.since is None:
            self.since = now
        elif now - self.since >= self.grace:
            self.warned = True
            shown = ", ".join(map(str, sorted(ports)))
            self.warn(f"listens on port {shown} but not on its $PORT {self.port} for "
                      f"{now - self.since:.1f} s; still waiting for $PORT until start_timeout "
                      f"(make it listen on $PORT, or on '{{port}}' in argv)")
        return None
