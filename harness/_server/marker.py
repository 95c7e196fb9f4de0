"""How harness marks what it starts, so orphans can be found and nothing else is touched.

Every server process harness launches gets two environment variables,
inherited by everything it spawns (even a child that escapes the process
group with ``setsid``):

- ``HARNESS_OWNER``: the :func:`harness._os.procinfo.identity` token (pid and
  start time) of the test runner that launched it.  A server whose owner
  token no longer names a live process is an orphan.
- ``HARNESS_SERVER_ID``: a random token naming one server launch, so a
  stop can find exactly that server's escaped descendants.

Every private temp directory harness creates is named ``harness-*`` in
:func:`tempfile.gettempdir` and holds a file ``owner`` with the owner token,
so ``python -m harness reap`` can remove those of dead runners.
"""
from __future__ import annotations

import os
import secrets
import tempfile
from typing import Optional

from .._os import procinfo

OWNER_ENV = "HARNESS_OWNER"
SERVER_ID_ENV = "HARNESS_SERVER_ID"
TEMP_PREFIX = "harness-"
OWNER_FILE = "owner"


def owner_token() -> str:
    """The identity token of the current process (the test runner)."""
    token = procinfo.identity(os.getpid())
    # Without /proc or psutil there is no start time: the pid alone still
    # lets reap skip live runners, at the price of trusting pid reuse less.
    return token if token is not None else f"{os.getpid()}:?"


def new_server_id() -> str:
    return secrets.token_hex(8)


def make_private_dir() -> str:
    """A new 0700 temp directory with an unpredictable name, tagged with its owner."""
    path = tempfile.mkdtemp(prefix=TEMP_PREFIX)  # mkdtemp: 0700, random name, O_EXCL
    fd = os.open(os.path.join(path, OWNER_FILE),
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(owner_token() + "\n")
    return path


def read_owner(path: str) -> Optional[str]:
    """The owner token recorded in a harness temp dir, or ``None``."""
    try:
        with open(os.path.join(path, OWNER_FILE)) as f:
            return f.read().strip() or None
    except OSError:
        return None
