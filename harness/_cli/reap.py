"""``python -m harness reap``: clean up after test runners that died without cleaning up.

It touches only what harness marked, and only when the marker's owner (the
test runner's identity token: pid plus start time) is no longer alive:

- processes whose environment has ``HARNESS_OWNER=<dead runner>`` are
  stopped: SIGCONT and SIGTERM, a grace period, then SIGKILL, each signal
  only after checking the pid still names the same process
  (:func:`harness._os.kill.terminate_tree`);
- ``harness-*`` directories in the temp dir, owned by the current user,
  whose ``owner`` file names a dead runner are removed (symlinks are never
  followed);
- lock files in the lease directory (file leases, used off Linux) that no
  live process holds are removed, with the same lock protocol as a release.

A process of another user, one without the marker, or one whose runner is
alive is never touched.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from typing import Dict, List, Optional

from .. import _config, ports
from .._os import kill, procinfo
from .._os.identity import ProcessId
from .._server import marker
from .._validate import arg_type, check_positive_int, check_seconds, parse_number
from .._wait import Deadline

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

GRACE = 5.0  # seconds between SIGTERM and SIGKILL, times HARNESS_TIMEOUT_FACTOR


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="only list what would be stopped and removed")
    parser.add_argument("--grace", default=GRACE, metavar="S",
                        type=arg_type(check_seconds, "--grace", parse=parse_number,
                                      allow_zero=True),
                        help=f"seconds a server gets to exit after SIGTERM before SIGKILL "
                             f"(default {GRACE:g}, times HARNESS_TIMEOUT_FACTOR)")
    parser.add_argument("--runner", type=arg_type(check_positive_int, "--runner"), metavar="PID",
                        help="only what the dead test runner with this pid left behind")
    parser.add_argument("--json", action="store_true", help="print what was done as JSON")


def _wanted(owner: str, runner: Optional[int]) -> bool:
    return runner is None or owner.split(":", 1)[0] == str(runner)


def _owner_alive(token: str) -> bool:
    """Whether a runner token names a live process; when unsure, alive (be safe)."""
    pid_text, _, start = token.partition(":")
    if not pid_text.isdigit():
        return False  # not a token harness writes: nobody can be its owner
    if start not in ("", "?") and (procinfo.HAVE_PROC or procinfo.HAVE_PSUTIL):
        return procinfo.is_alive(token)
    # Without a start time to compare, only "no such pid" is certain.
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _protected() -> set:
    """This process and its ancestors: never reaped, whatever their markers say."""
    pids = set()
    pid: Optional[int] = os.getpid()
    while pid and pid not in pids:
        pids.add(pid)
        pid = procinfo.parent_pid(pid)
    return pids


def find_orphans(runner: Optional[int] = None) -> List[Dict[str, object]]:
    """Processes of this user started by harness for a runner that is gone."""
    found = []
    protected = _protected()
    uid = os.getuid()
    for pid in procinfo.all_pids():
        if pid in protected or procinfo.owner_uid(pid) != uid:
            continue
        env = procinfo.environ(pid)
        owner = env.get(marker.OWNER_ENV) if env else None
        if not owner or not _wanted(owner, runner) or _owner_alive(owner):
            continue
        token = procinfo.identity(pid)
        if token is None or not procinfo.is_alive(token):
            continue  # gone meanwhile, or a zombie
        found.append({"pid": pid, "token": str(token), "owner": owner,
                      "server_id": env.get(marker.SERVER_ID_ENV) if env else None,
                      "command": procinfo.cmdline(pid)})
    return found


def stop_orphans(orphans: List[Dict[str, object]], grace: float) -> None:
    """Stop every orphan tree at once (one grace period in all); record the outcome."""
    tokens = {str(o["token"]) for o in orphans}
    by_pid = {int(o["pid"]): o for o in orphans}  # type: ignore[call-overload]
    roots = [o for o in orphans
             if procinfo.parent_pid(int(o["pid"])) not in by_pid]  # type: ignore[call-overload]
    survivors: List[ProcessId] = []
    lock = threading.Lock()

    def stop(orphan: Dict[str, object]) -> None:
        left = kill.terminate_tree(int(orphan["pid"]),  # type: ignore[call-overload]
                                   ProcessId.parse(orphan["token"]), grace=grace)
        with lock:
            survivors.extend(left)

    threads = [threading.Thread(target=stop, args=(root,)) for root in roots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Anything not below a root (it should not happen) is ended on its own.
    ids = [i for i in map(ProcessId.parse, tokens) if i is not None]
    left = kill.alive(i for i in ids if i not in survivors)
    for pid_id in left:
        kill.signal_process(pid_id, signal.SIGKILL)
    survivors.extend(kill.wait_gone(left, Deadline(max(1.0, grace))))
    for orphan in orphans:
        pid_id = ProcessId.parse(orphan["token"])
        alive = pid_id in survivors and procinfo.is_alive(str(orphan["token"]))
        orphan["result"] = "still running after SIGKILL" if alive else "stopped"


def _read_owner_nofollow(path: str) -> Optional[str]:
    try:
        fd = os.open(os.path.join(path, marker.OWNER_FILE),
                     os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd) as f:
        return f.read(200).strip() or None


def find_temp_dirs(runner: Optional[int] = None) -> List[Dict[str, object]]:
    """``harness-*`` dirs of this user in the temp dir whose owner is dead."""
    found = []
    base = tempfile.gettempdir()
    uid = os.getuid()
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return []
    lease_dir = os.path.abspath(ports.default_lease_dir())
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
        owner = _read_owner_nofollow(path)
        if owner is None or not _wanted(owner, runner) or _owner_alive(owner):
            continue  # no owner file (being created, or not ours to judge) or alive
        found.append({"path": path, "owner": owner})
    return found


def remove_temp_dirs(dirs: List[Dict[str, object]]) -> None:
    for entry in dirs:
        errors: List[str] = []
        if sys.version_info >= (3, 12):  # onerror is deprecated from 3.12
            shutil.rmtree(str(entry["path"]), onexc=lambda f, p, e: errors.append(f"{p}: {e}"))
        else:
            shutil.rmtree(str(entry["path"]), onerror=lambda f, p, e: errors.append(f"{p}: {e[1]}"))
        entry["result"] = "removed" if not errors else "not removed: " + "; ".join(errors[:3])


def find_stale_leases() -> List[Dict[str, object]]:
    """Lock files in the lease directory that nobody holds (their holder died)."""
    directory = ports.default_lease_dir()
    if fcntl is None:
        return []
    try:
        info = os.lstat(directory)
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    if not stat.S_ISDIR(info.st_mode):
        return []
    found = []
    for name in names:
        if not (name.startswith("port-") and name.endswith(".lock")):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
                continue  # only our own lock files: others' we could not unlink anyway
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # held by a live process
            fcntl.flock(fd, fcntl.LOCK_UN)
            found.append({"path": path})
        finally:
            os.close(fd)
    return found


def remove_stale_leases(leases: List[Dict[str, object]]) -> None:
    """Unlink while holding the lock, and only the file still at the path (as a release does)."""
    for entry in leases:
        path = str(entry["path"])
        entry["result"] = "held again meanwhile: left alone"
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            entry["result"] = "gone meanwhile"
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)
                entry["result"] = "removed"
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                entry["result"] = f"not removed: {exc}"
        finally:
            os.close(fd)


def run(args: argparse.Namespace) -> int:
    if not (procinfo.HAVE_PROC or procinfo.HAVE_PSUTIL):
        print("reap: without psutil this platform cannot list processes, so no server is "
              "stopped (pip install psutil); temp dirs of runners whose pid is gone and "
              "stale lease files are still removed", file=sys.stderr)
    orphans = find_orphans(args.runner)
    dirs = find_temp_dirs(args.runner)
    leases = find_stale_leases()
    if not args.dry_run:
        if orphans:
            stop_orphans(orphans, _config.scaled(args.grace))
        remove_temp_dirs(dirs)
        remove_stale_leases(leases)
    failed = [e for e in orphans + dirs + leases
              if str(e.get("result", "")).startswith(("still", "not"))]
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "processes": orphans, "temp_dirs": dirs,
                          "lease_files": leases}, indent=2))
    else:
        print("\n".join(_report(orphans, dirs, leases, args.dry_run)))
    if args.dry_run:
        return 1 if orphans or dirs or leases else 0
    return 1 if failed else 0


def _report(orphans: List[Dict[str, object]], dirs: List[Dict[str, object]],
            leases: List[Dict[str, object]], dry_run: bool) -> List[str]:
    if not (orphans or dirs or leases):
        return ["nothing to reap: no harness server, temp dir or lease file of a dead test runner"]
    lines = []
    for o in orphans:
        runner = str(o["owner"]).split(":", 1)[0]
        what = "would stop" if dry_run else str(o["result"])
        lines.append(f"{what}: pid {o['pid']} ({procinfo.short_cmdline(str(o['command']))}), "
                     f"started by harness for test runner pid {runner}, which is gone")
    for d in dirs:
        what = "would remove" if dry_run else str(d["result"])
        lines.append(f"{what}: temp dir {d['path']} (runner pid "
                     f"{str(d['owner']).split(':', 1)[0]} is gone)")
    for lease in leases:
        what = "would remove" if dry_run else str(lease["result"])
        lines.append(f"{what}: lease file {lease['path']} (no live holder)")
    return lines
