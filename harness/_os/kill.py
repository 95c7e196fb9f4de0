"""Ending process trees safely: signal only processes that are still ours.

A process is named by an identity token (pid plus start time, see
:func:`harness._os.procinfo.identity`), so a pid the kernel has since given to
someone else is never signalled.  On Linux the check and the signal go
through a pidfd, which closes the remaining window.  Used by
``ServerProcess.stop`` and by ``python -m harness reap`` (:func:`terminate_tree`).
"""
from __future__ import annotations

import os
import signal
from typing import Iterable, List, Optional

from .._wait import Deadline, pause, poll_interval
from . import procinfo
from .identity import ProcessId

SERVER_ID_ENV = "HARNESS_SERVER_ID"  # harness._server.marker.SERVER_ID_ENV
_HAVE_PIDFD = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")


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
            if procinfo.identity(pid) != target:
                return False
            signal.pidfd_send_signal(fd, sig)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
    if procinfo.identity(pid) != target:
        return False
    try:
        os.kill(pid, sig)
    except OSError:
        return False
    return True


def find_marked(name: str, value: str, started_after: Optional[int] = None) -> List[ProcessId]:
    """Tokens of live processes whose environment has ``name=value``.

    This finds descendants that left the process group and the process tree
    (setsid, double fork): the marker is inherited through both.
    ``started_after`` (Linux clock ticks, ``ProcessId.start_ticks``) skips
    older processes without reading their environment.
    """
    needle = f"{name}={value}".encode()
    found: List[ProcessId] = []
    me = os.getpid()
    if procinfo.HAVE_PROC:
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            fields = procinfo._stat_fields(int(entry))
            if fields is None or fields[procinfo._STATE] in (b"Z", b"X"):
                continue
            start = int(fields[procinfo._STARTTIME])
            if started_after is not None and start < started_after:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = f.read()
            except OSError:
                continue
            if env.startswith(needle + b"\0") or (b"\0" + needle + b"\0") in env \
                    or env == needle or env.endswith(b"\0" + needle):
                found.append(ProcessId(int(entry), str(start)))
        return found
    if procinfo.HAVE_PSUTIL:
        import psutil
        for proc in psutil.process_iter():
            if proc.pid == me:
                continue
            try:
                if proc.environ().get(name) == value:
                    pid_id = procinfo.identity(proc.pid)
                    if pid_id:
                        found.append(pid_id)
            except (psutil.Error, OSError):
                continue
    return found


def tree_ids(pid: int) -> List[ProcessId]:
    """The live descendants of ``pid``."""
    ids = []
    for child in procinfo.descendants(pid):
        pid_id = procinfo.identity(child)
        if pid_id is not None:
            ids.append(pid_id)
    return ids


def alive(ids: Iterable[ProcessId]) -> List[ProcessId]:
    return [t for t in ids if procinfo.is_alive(t)]


def wait_gone(ids: Iterable[ProcessId], deadline: Deadline) -> List[ProcessId]:
    """Wait until none of ``ids`` runs (zombies count as gone); the survivors."""
    left = alive(ids)
    while left and not deadline.expired:
        pause(deadline.cap(poll_interval(deadline.elapsed(), cap=0.02)))
        left = alive(left)
    return left


def terminate_tree(pid: int, token: Optional[ProcessId] = None, *,
                   server_id: Optional[str] = None, grace: float = 5.0) -> List[ProcessId]:
    """End ``pid``, its process group, its descendants and its marked escapees.

    ``token`` is the identity token recorded when the process was started;
    if the pid now names another process, nothing but the marked processes
    (``HARNESS_SERVER_ID=server_id``) is touched.  Sends SIGCONT and SIGTERM
    (a stopped process ignores SIGTERM until continued), waits up to
    ``grace`` seconds, then SIGKILL.  Returns the tokens still alive
    afterwards (empty on success).
    """
    current = procinfo.identity(pid)
    if token is None:
        token = current
    members: List[ProcessId] = []
    ours = token is not None and current == token
    if ours:
        assert token is not None
        members.append(token)
        members.extend(tree_ids(pid))
    if server_id:
        members.extend(t for t in find_marked(SERVER_ID_ENV, server_id) if t not in members)
    group = pid if ours and _pgid(pid) == pid else None
    for sig in (signal.SIGCONT, signal.SIGTERM):
        if group is not None and procinfo.is_alive(token) if token else False:
            _killpg(group, sig)
        for member in members:
            signal_process(member, sig)
    survivors = wait_gone(members, Deadline(grace))
    if survivors:
        if group is not None and procinfo.is_alive(token) if token else False:
            _killpg(group, signal.SIGKILL)
        if server_id:
            survivors.extend(t for t in find_marked(SERVER_ID_ENV, server_id)
                             if t not in survivors)
        for member in survivors:
            signal_process(member, signal.SIGKILL)
        survivors = wait_gone(survivors, Deadline(max(1.0, grace)))
    return survivors


def _pgid(pid: int) -> Optional[int]:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except OSError:
        return False
    return True


__all__ = ["terminate_tree", "signal_process", "find_marked", "tree_ids", "wait_gone", "alive"]
