"""What ``python -m harness reap`` finds and does: the engine, apart from the command.

It touches only what harness marked, and only when the marker's owner (the
test runner's :class:`~harness._os.identity.ProcessId`: pid, start time and
PID namespace) is no longer alive:

- processes whose environment has ``HARNESS_OWNER=<dead runner>`` are
  stopped: SIGCONT and SIGTERM, a grace period, then SIGKILL, each signal
  only after checking the pid still names the same process
  (:func:`harness._os.kill.terminate_tree`);
- ``harness-*`` directories in the temp dir, owned by the current user,
  whose ``owner`` file names a dead runner are removed (symlinks are never
  followed); so are those harness made whose ``owner`` file is missing,
  empty or unreadable (a full disk, a runner killed while making one), once
  they are older than ``OWNERLESS_GRACE``: until then one may still be in
  the making;
- lock files in the lease directory (file leases, used off Linux) that no
  live process holds are removed, with the same lock protocol as a release.

A process of another user, one without the marker, or one whose runner is
alive is never touched.  Nor is anything whose runner is in another PID
namespace (a container): its pid means nothing here, so whether it lives
cannot be told from here; such things are listed as "left alone".  What
reap does with each thing is an :class:`Action`, never message wording.
"""
from __future__ import annotations

import dataclasses
import enum
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence, Set, Union

from .._os import kill, leases, procinfo
from .._os.identity import ProcessId, own_pid_namespace
from .._wait import Deadline
from . import marker

# A harness-* dir without a usable owner file younger than this may still be
# being made (mkdtemp, then the owner file): left alone until then.
OWNERLESS_GRACE = 60.0
# The names tempfile.mkdtemp(prefix="harness-") makes: only such a dir can
# be one of harness's when its owner file does not say so.
_MADE_BY_MKDTEMP = re.compile(r"^" + re.escape(marker.TEMP_PREFIX) + r"[a-z0-9_]{8}$")


# --------------------------------------------------------------------------
# Actions


class Action(enum.Enum):
    """What reap did (or, in a dry run, will do) with one thing it found."""

    TO_DO = "to do"  # found; a dry run ends here
    STOPPED = "stopped"
    STILL_RUNNING = "still running after SIGKILL"
    REMOVED = "removed"
    NOT_REMOVED = "not removed"
    GONE = "gone meanwhile"
    HELD_AGAIN = "held again meanwhile: left alone"
    LEFT_ALONE = "left alone"

    @property
    def failed(self) -> bool:
        """Whether this action makes ``reap`` exit 1."""
        return self in (Action.STILL_RUNNING, Action.NOT_REMOVED)


class Runner(enum.Enum):
    """What can be known here about the test runner a marker names."""

    ALIVE = "alive"
    GONE = "gone"
    OTHER_NAMESPACE = "other namespace"  # its pid names nothing here: alive or not, unknown


OTHER_NAMESPACE = "its test runner is in another PID namespace"


def runner_state(owner: ProcessId) -> Runner:
    """Whether the runner ``owner`` names lives; when unsure, alive (be safe)."""
    here = own_pid_namespace()
    if owner.pidns is not None and here is not None and owner.pidns != here:
        return Runner.OTHER_NAMESPACE
    if owner.start is not None and (procinfo.HAVE_PROC or procinfo.HAVE_PSUTIL):
        return Runner.ALIVE if procinfo.is_alive(owner) else Runner.GONE
    # Without a start time to compare, only "no such pid" is certain.
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return Runner.GONE
    except OSError:
        return Runner.ALIVE
    return Runner.ALIVE


@dataclasses.dataclass
class _Record:
    action: Action = dataclasses.field(default=Action.TO_DO, init=False)
    detail: str = dataclasses.field(default="", init=False)

    def settle(self, action: Action, detail: str = "") -> None:
        self.action, self.detail = action, detail

    @property
    def result(self) -> str:
        """The action in words, as JSON's ``result`` and the start of a report line."""
        return self.action.value + (f": {self.detail}" if self.detail else "")

    def _verb(self, dry_run: bool, would: str) -> str:
        return would if self.action is Action.TO_DO and dry_run else self.result

    def _json(self, data: Dict[str, object]) -> Dict[str, object]:
        if self.action is not Action.TO_DO:
            data["result"] = self.result
        return data


@dataclasses.dataclass
class Orphan(_Record):
    """A process harness started for a runner that is gone (or that cannot be judged)."""

    process: ProcessId
    owner: ProcessId
    server_id: Optional[str]
    command: str

    def to_json(self) -> Dict[str, object]:
        return self._json({"pid": self.process.pid, "token": str(self.process),
                           "owner": str(self.owner), "server_id": self.server_id,
                           "command": self.command})

    def describe(self, dry_run: bool) -> str:
        what = f"pid {self.process.pid} ({procinfo.short_cmdline(self.command)})"
        if self.action is Action.LEFT_ALONE:
            return (f"left alone: {what}, started by harness for test runner pid "
                    f"{self.owner.pid}: {self.detail}; run reap in there (its container)")
        return (f"{self._verb(dry_run, 'would stop')}: {what}, started by harness for test "
                f"runner pid {self.owner.pid}, which is gone")


@dataclasses.dataclass
class TempDir(_Record):
    """A ``harness-*`` directory of a dead runner, or of none that can be named."""

    path: str
    owner: Optional[ProcessId] = None  # None: its owner file is missing, empty or unreadable
    problem: str = ""  # why there is no owner
    age: float = 0.0  # seconds since it last changed

    def to_json(self) -> Dict[str, object]:
        data: Dict[str, object] = {"path": self.path,
                                   "owner": None if self.owner is None else str(self.owner)}
        if self.owner is None:
            data["problem"] = self.problem
        return self._json(data)

    def describe(self, dry_run: bool) -> str:
        if self.action is Action.LEFT_ALONE:
            runner = "" if self.owner is None else f" (runner pid {self.owner.pid})"
            return f"left alone: temp dir {self.path}{runner}: {self.detail}"
        what = f"{self._verb(dry_run, 'would remove')}: temp dir {self.path}"
        if self.owner is None:
            return (f"{what} ({self.problem}; {int(self.age)}s old: its runner failed while "
                    f"making it)")
        return f"{what} (runner pid {self.owner.pid} is gone)"


@dataclasses.dataclass
class LeaseFile(_Record):
    """A lock file in the lease directory that no live process holds (or one to leave alone)."""

    path: str

    def to_json(self) -> Dict[str, object]:
        return self._json({"path": self.path})

    def describe(self, dry_run: bool) -> str:
        if self.action is Action.LEFT_ALONE:
            return f"left alone: lease file {self.path}: {self.detail}"
        return f"{self._verb(dry_run, 'would remove')}: lease file {self.path} (no live holder)"


Record = Union[Orphan, TempDir, LeaseFile]


# --------------------------------------------------------------------------
# Processes


def _protected() -> Set[int]:
    """This process and its ancestors: never reaped, whatever their markers say."""
    pids: Set[int] = set()
    pid: Optional[int] = os.getpid()
    while pid and pid not in pids:
        pids.add(pid)
        pid = procinfo.parent_pid(pid)
    return pids


def find_orphans(runner: Optional[int] = None) -> List[Orphan]:
    """Processes of this user started by harness for a runner that is gone.

    Those whose runner is in another PID namespace come back too, already
    settled as :attr:`Action.LEFT_ALONE`.
    """
    found = []
    protected = _protected()
    uid = os.getuid()
    for pid in procinfo.all_pids():
        if pid in protected or procinfo.owner_uid(pid) != uid:
            continue
        env = procinfo.environ(pid)
        owner = ProcessId.parse(env.get(marker.OWNER_ENV)) if env else None
        if owner is None or (runner is not None and owner.pid != runner):
            continue  # no marker (or not one harness writes), or another runner's
        state = runner_state(owner)
        if state is Runner.ALIVE:
            continue
        process = procinfo.identity(pid)
        if process is None or not procinfo.is_alive(process):
            continue  # gone meanwhile, or a zombie
        orphan = Orphan(process=process, owner=owner, command=procinfo.cmdline(pid),
                        server_id=env.get(marker.SERVER_ID_ENV) if env else None)
        if state is Runner.OTHER_NAMESPACE:
            orphan.settle(Action.LEFT_ALONE, OTHER_NAMESPACE)
        found.append(orphan)
    return found


def stop_orphans(orphans: Sequence[Orphan], grace: float) -> None:
    """Stop every orphan tree still to do at once (one grace period in all)."""
    todo = [o for o in orphans if o.action is Action.TO_DO]
    by_pid = {o.process.pid: o for o in todo}
    roots = [o for o in todo if procinfo.parent_pid(o.process.pid) not in by_pid]
    survivors: List[ProcessId] = []
    lock = threading.Lock()

    def stop(orphan: Orphan) -> None:
        left = kill.terminate_tree(orphan.process.pid, orphan.process, grace=grace)
        with lock:
            survivors.extend(left)

    threads = [threading.Thread(target=stop, args=(root,)) for root in roots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Anything not below a root (it should not happen) is ended on its own.
    left = kill.alive(o.process for o in todo if o.process not in survivors)
    for process in left:
        kill.signal_process(process, signal.SIGKILL)
    survivors.extend(kill.wait_gone(left, Deadline(max(1.0, grace))))
    for orphan in todo:
        alive = orphan.process in survivors and procinfo.is_alive(orphan.process)
        orphan.settle(Action.STILL_RUNNING if alive else Action.STOPPED)


# --------------------------------------------------------------------------
# Temp dirs


def find_temp_dirs(runner: Optional[int] = None) -> List[TempDir]:
    """``harness-*`` dirs of this user in the temp dir whose owner is dead (or unknown).

    A dir without a usable owner file is included only if harness made it
    (mkdtemp's name), it is older than ``OWNERLESS_GRACE``, and no
    ``runner`` was asked for (it belongs to none that can be named).
    """
    found = []
    base = tempfile.gettempdir()
    uid = os.getuid()
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return []
    lease_dir = os.path.abspath(leases.default_lease_dir())
    now = time.time()
    for name in entries:
        path = os.path.join(base, name)
        if not name.startswith(marker.TEMP_PREFIX) or os.path.abspath(path) == lease_dir:
            continue
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
            continue  # a symlink, a file, or someone else's
        owner, problem = marker.owner_of(path)
        if owner is None:
            age = now - info.st_mtime
            if runner is None and _MADE_BY_MKDTEMP.match(name) and age >= OWNERLESS_GRACE:
                found.append(TempDir(path=path, problem=problem, age=age))
            continue
        if runner is not None and owner.pid != runner:
            continue
        state = runner_state(owner)
        if state is Runner.ALIVE:
            continue
        entry = TempDir(path=path, owner=owner)
        if state is Runner.OTHER_NAMESPACE:
            entry.settle(Action.LEFT_ALONE, OTHER_NAMESPACE)
        found.append(entry)
    return found


def _rmtree(path: str) -> List[str]:
    """Remove ``path``; the errors met (never raised), at most three."""
    errors: List[str] = []
    if sys.version_info >= (3, 12):  # onerror is deprecated from 3.12
        shutil.rmtree(path, onexc=lambda f, p, e: errors.append(f"{p}: {e}"))
    else:
        shutil.rmtree(path, onerror=lambda f, p, e: errors.append(f"{p}: {e[1]}"))
    return errors[:3]


def remove_temp_dirs(dirs: Sequence[TempDir]) -> None:
    for entry in dirs:
        if entry.action is not Action.TO_DO:
            continue
        errors = _rmtree(entry.path)
        if errors:
            entry.settle(Action.NOT_REMOVED, "; ".join(errors))
        else:
            entry.settle(Action.REMOVED)


# --------------------------------------------------------------------------
# Lease files


def find_stale_leases() -> List[LeaseFile]:
    """Lock files in the lease directory that nobody holds (their holder died).

    Only this user's: another user's cannot be unlinked in a sticky
    directory.  An entry that is no lock file at all (a FIFO, a symlink,
    an unreadable file) is listed as left alone, with what it is.
    """
    if not leases.HAVE_FLOCK:
        return []
    found = []
    for path in leases.lock_files(leases.default_lease_dir()):
        problem = leases.lock_file_problem(path)
        if problem is not None:
            entry = LeaseFile(path=path)
            entry.settle(Action.LEFT_ALONE, problem)
            found.append(entry)
        elif leases.is_stale(path):
            found.append(LeaseFile(path=path))
    return found


_SETTLED_AS = {leases.Removal.REMOVED: Action.REMOVED, leases.Removal.GONE: Action.GONE,
               leases.Removal.HELD: Action.HELD_AGAIN, leases.Removal.FAILED: Action.NOT_REMOVED}


def remove_stale_leases(found: Sequence[LeaseFile]) -> None:
    """Remove each as a release does (:func:`harness._os.leases.remove_if_stale`)."""
    for entry in found:
        if entry.action is Action.TO_DO:
            removal, detail = leases.remove_if_stale(entry.path)
            entry.settle(_SETTLED_AS[removal], detail)
