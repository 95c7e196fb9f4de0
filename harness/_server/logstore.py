"""Kept failure logs: one bounded, per-user folder, and nothing else survives a test.

When a server fails to start (or dies before ``stop()``), its log is the
evidence: the error shows its head and tail, and the whole file is moved
here, named by time, server name and pid.  The folder keeps the newest
``HARNESS_KEEP_LOGS`` files (default 50; older ones are removed as new
ones arrive), so a suite that fails a thousand times leaves 50 files, not a
thousand directories.  ``HARNESS_LOG_DIR`` sends them somewhere a CI system
collects as artifacts; by default it is ``harness-logs-<uid>`` in the temp
dir, created 0700 and refused if another user owns it or it is a symlink.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from typing import List, Optional

from .._os.users import describe_user
from ..errors import HarnessError

LOG_DIR_VAR = "HARNESS_LOG_DIR"
KEEP_VAR = "HARNESS_KEEP_LOGS"
DEFAULT_KEEP = 50
DIR_PREFIX = "harness-logs-"
SUFFIX = ".log"

_log = logging.getLogger("harness.logs")


def keep_count() -> int:
    """How many kept logs the folder holds at most (``HARNESS_KEEP_LOGS``; 0 keeps none)."""
    raw = os.environ.get(KEEP_VAR, "").strip()
    if not raw:
        return DEFAULT_KEEP
    if not raw.isdigit():
        _log.warning("%s must be a whole number >= 0, got %r; keeping %d",
                     KEEP_VAR, raw, DEFAULT_KEEP)
        return DEFAULT_KEEP
    return int(raw)


def _location() -> str:
    configured = os.environ.get(LOG_DIR_VAR, "").strip()
    if configured:
        return os.path.abspath(configured)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"{DIR_PREFIX}{uid}")


def directory(create: bool = True) -> str:
    """The folder kept logs go to, created (0700) if needed and checked to be this user's."""
    configured = bool(os.environ.get(LOG_DIR_VAR, "").strip())
    path = _location()
    if create:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise HarnessError(f"cannot create the folder for kept server logs {path}: {exc}; "
                               f"set {LOG_DIR_VAR} to a writable directory") from None
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise HarnessError(f"the folder for kept server logs {path} is unusable: {exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise HarnessError(f"the folder for kept server logs {path} is not a directory (a "
                           f"symlink or file planted there?); remove it or set {LOG_DIR_VAR}")
    if hasattr(os, "getuid") and info.st_uid != os.getuid() and not configured:
        raise HarnessError(f"the folder for kept server logs {path} belongs to "
                           f"{describe_user(info.st_uid)}, not to you; refusing to write "
                           f"there. Set {LOG_DIR_VAR} to a directory of yours")
    return path


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)[:40] or "server"


def keep(source: str, name: str, pid: Optional[int]) -> Optional[str]:
    """Move the log at ``source`` into the folder; its new path (``None`` if none is kept)."""
    limit = keep_count()
    if limit == 0:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(3):  # another process may remove the (then empty) folder meanwhile
        folder = directory()
        target = os.path.join(folder, f"{stamp}-{_slug(name)}-{pid or 0}-"
                                      f"{secrets.token_hex(3)}{SUFFIX}")
        try:
            os.replace(source, target)  # same file system: an atomic rename
            break
        except FileNotFoundError:
            if not os.path.exists(source) or attempt == 2:
                return None
        except OSError:
            try:
                shutil.copyfile(source, target)
                break
            except OSError as exc:
                _log.warning("could not keep the log %s in %s: %s", source, folder, exc)
                return None
    os.chmod(target, 0o600)
    prune(limit)
    return target


def kept() -> List[str]:
    """The kept logs, oldest first."""
    if not os.path.isdir(_location()):
        return []
    folder = directory(create=False)
    entries = []
    for entry in os.listdir(folder):
        if entry.endswith(SUFFIX):
            path = os.path.join(folder, entry)
            try:
                entries.append((os.lstat(path).st_mtime, entry, path))
            except OSError:
                continue
    return [path for _, _, path in sorted(entries)]


def prune(limit: int) -> None:
    """Remove the oldest kept logs beyond ``limit`` (other processes may prune too)."""
    logs = kept()
    for path in logs[:max(0, len(logs) - limit)]:
        try:
            os.unlink(path)
        except OSError:
            pass


def discard(path: Optional[str]) -> None:
    """Remove one kept log (its test expected the failure and passed)."""
    if not path:
        return
    try:
        folder = directory(create=False)
    except HarnessError:
        return
    if os.path.dirname(os.path.abspath(path)) == folder and path.endswith(SUFFIX):
        try:
            os.unlink(path)
        except OSError:
            pass
        if not os.environ.get(LOG_DIR_VAR, "").strip():
            try:
                os.rmdir(folder)  # the default folder goes once it is empty
            except OSError:
                pass
