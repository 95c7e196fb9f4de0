"""Ending a process tree: the one algorithm, and signals that never hit a stranger.

:func:`stop_tree` is the only kill sequence in harness.  Its callers differ
only in how they list the processes to end:

* a server's keeper (:mod:`harness._server.zygote`) lists its own subtree:
  being a child subreaper, it is the ancestor of everything the server ever
  started, daemons and ``setsid`` escapees included;
* the keeper and the zygote run it on their subtree when the test runner
  dies (the lifeline pipe reads EOF);
* ``python -m harness reap`` lists an orphan's tree and the processes
  carrying its ``HARNESS_SERVER_ID`` marker (:func:`terminate_tree`).

A process is named by its :class:`~.identity.ProcessId`, so a pid the
kernel has since given to someone else is never signalled; on Linux the
check and the signal go through a pidfd, which closes the remaining window.
A process *group* is signalled only by a caller that guarantees the group
id is still its own (its leader not reaped yet).

Loaded without the rest of harness by the zygote: imports only the
standard library, :mod:`.proc`, :mod:`.identity` and :mod:`harness._wait`.
"""
from __future__ import annotations

import os
import signal
from typing import Callable, Iterable, List, Optional

from .._wait import Deadline, pause, poll_interval
from . import proc
from .identity import ProcessId

SERVER_ID_ENV = "HARNESS_SERVER_ID"  # harness._server.marker.SERVER_ID_ENV
#: After SIGKILL, how long the processes of a tree may take to disappear.
KILL_WAIT = 5.0
_HAVE_PIDFD = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")

Members = Callable[[], Iterable[ProcessId]]


def is_alive(target: ProcessId) -> bool:
    """True if ``target`` still runs (a zombie has exited: not alive)."""
    if proc.HAVE_PROC:
        return proc.alive(target)
    from . import procinfo  # psutil, only off Linux: the zygote never gets here on Linux
    return procinfo.is_alive(target)


def _identity(pid: int) -> Optional[ProcessId]:
    if proc.HAVE_PROC:
        return proc.identity(pid)
    from . import procinfo  # see is_alive
    return procinfo.identity(pid)


def signal_process(target: ProcessId, sig: int) -> bool:
    """Send ``sig`` to ``target`` if it is still that process (not a reused pid)."""
    pid = target.pid
    if pid <= 1 or pid == os.getpid():
        return False
    if _HAVE_PIDFD:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return False
        try:
            # The pidfd pins the process: if it is still `target` now, the
            # signal cannot reach a later process with the same pid.
            if _identity(pid) != target:
                return False
            signal.pidfd_send_signal(fd, sig)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
    if _identity(pid) != target:
        return False
    try:
        os.kill(pid, sig)
    except OSError:
        return False
    return True


def _signal_group(group: Optional[int], sig: int) -> bool:
    if group is not None and group > 1:
        try:
            os.killpg(group, sig)
            return True
        except OSError:
            pass
    return False


def _in_group(member: ProcessId, group: int) -> bool:
    """Whether ``member`` is in process group ``group`` (read after the group
    was signalled: a process that joined it later is not, and is signalled)."""
    try:
        return os.getpgid(member.pid) == group
    except OSError:
        return False


def alive(ids: Iterable[ProcessId]) -> List[ProcessId]:
    return [pid_id for pid_id in ids if is_alive(pid_id)]


def wait_gone(ids: Iterable[ProcessId], deadline: Deadline,
              on_wait: Optional[Callable[[], None]] = None) -> List[ProcessId]:
    """Wait until none of ``ids`` runs (zombies count as gone); the survivors."""
    left = alive(ids)
    while left and not deadline.expired:
        if on_wait is not None:
            on_wait()
        pause(deadline.cap(poll_interval(deadline.elapsed(), cap=0.02)))
        left = alive(left)
    return left


def stop_tree(members: Members, *, grace: float, kill_wait: float,
              group: Optional[int] = None,
              on_wait: Optional[Callable[[], None]] = None,
              wait: Callable[[float], None] = pause,
              sig: int = signal.SIGTERM) -> List[ProcessId]:
    """End every process ``members()`` lists, and the process group ``group``.

    With ``grace > 0``: SIGCONT and ``sig`` (SIGTERM unless the server asks
    for another, such as PostgreSQL's SIGINT, its fast shutdown; a stopped
    process ignores it until continued) to the group and to every member
    outside it (each process gets one), then up to
    ``grace`` seconds for all of them to exit.  Then SIGKILL to the group
    and to whoever ``members()`` lists *now* (a member may have forked
    meanwhile), in rounds, until none is left or ``kill_wait`` passes.
    ``on_wait`` runs at every look (a keeper reaps its zombies there);
    ``wait(seconds)`` pauses between looks (a keeper returns early on
    SIGCHLD).  A member once listed is waited for until it is gone, even if
    a later listing leaves it out.  Returns the members still alive at the
    end (empty on success).
    """
    seen: List[ProcessId] = []

    def running() -> List[ProcessId]:
        # Every member seen so far that still runs: one can drop out of
        # members() before it is gone (its environment, the marker, reads
        # empty while it exits; the parent it was found through died first).
        for member in members():
            if member not in seen:
                seen.append(member)
        seen[:] = alive(seen)
        return list(seen)

    if grace > 0:
        first = running()
        for each in (signal.SIGCONT, sig):
            grouped = _signal_group(group, each)
            for member in first:
                # One signal each: a second one, sent while the first is
                # handled, would interrupt the clean-up it began (Redis exits
                # at once on a second SIGINT; coverage's save was cut short).
                if not (grouped and group is not None and _in_group(member, group)):
                    signal_process(member, each)
        deadline = Deadline(grace)
        while True:
            if on_wait is not None:
                on_wait()
            if not running() or deadline.expired:
                break
            wait(deadline.cap(poll_interval(deadline.elapsed(), cap=0.02)))
    deadline = Deadline(kill_wait)
    while True:
        _signal_group(group, signal.SIGKILL)
        for member in running():
            signal_process(member, signal.SIGKILL)
        if on_wait is not None:
            on_wait()
        left = running()
        if not left or deadline.expired:
            return left
        wait(deadline.cap(poll_interval(deadline.elapsed(), cap=0.02)))


def find_marked(name: str, value: str) -> List[ProcessId]:
    """Live processes whose environment has ``name=value``.

    The marker is inherited through ``setsid`` and double forks, so this
    finds descendants that left the process group and the tree, unless
    they replaced their environment.
    """
    needle = f"{name}={value}".encode()
    found: List[ProcessId] = []
    me = os.getpid()
    if proc.HAVE_PROC:
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            fields = proc.stat_fields(int(entry))
            if fields is None or fields[proc.STATE] in (b"Z", b"X"):
                continue
            start = int(fields[proc.STARTTIME])
            block = proc.environ(int(entry))
            if block is not None and proc.has_env(block, needle):
                found.append(ProcessId(int(entry), str(start)))
        return found
    from . import procinfo  # psutil, only off Linux
    if procinfo.HAVE_PSUTIL:
        import psutil
        for process in psutil.process_iter():
            if process.pid == me:
                continue
            try:
                if process.environ().get(name) == value:
                    pid_id = procinfo.identity(process.pid)
                    if pid_id:
                        found.append(pid_id)
            except (psutil.Error, OSError):
                continue
    return found


def descendants(pid: int) -> List[ProcessId]:
    """The live descendants of ``pid`` (children files, else a scan)."""
    pids = proc.subtree(pid)
    if pids is None:
        from . import procinfo  # psutil or a full scan, off the fast path
        pids = procinfo.descendants(pid)
    return [i for i in map(_identity, pids) if i is not None]


def terminate_tree(pid: int, identity: Optional[ProcessId] = None, *,
                   server_id: Optional[str] = None, grace: float = 5.0) -> List[ProcessId]:
    """End ``pid``, its process group, its descendants and its marked escapees.

    For ``python -m harness reap``.  ``identity`` is the process as recorded
    when it was found; if the pid now names another process, only the
    processes marked ``HARNESS_SERVER_ID=server_id`` are touched.  Returns
    the survivors (empty on success).
    """
    current = _identity(pid)
    if identity is None:
        identity = current
    ours = identity is not None and current == identity
    root: Optional[ProcessId] = identity if ours else None

    def members() -> List[ProcessId]:
        found: List[ProcessId] = []
        if root is not None and is_alive(root):
            found.append(root)
            found.extend(descendants(root.pid))
        if server_id:
            found.extend(m for m in find_marked(SERVER_ID_ENV, server_id) if m not in found)
        return found

    group = None
    if root is not None:
        try:
            group = pid if os.getpgid(pid) == pid else None
        except OSError:
            group = None
    # We are not the leader's parent, so its group id is ours only while
    # the leader (or another member) lives: it was just checked.
    return stop_tree(members, grace=grace, kill_wait=max(1.0, grace), group=group)


__all__ = ["stop_tree", "terminate_tree", "signal_process", "find_marked", "descendants",
           "wait_gone", "alive", "is_alive"]
