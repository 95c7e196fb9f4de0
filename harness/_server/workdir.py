"""The server's private directory: its app file, its log, its ``TMPDIR``, often its socket.

Made 0700 with an unpredictable name before the first launch, registered
with the zygote (which removes it if the runner dies), handed to the
server's ``user=`` if it has one, and removed at ``stop()`` -- the log's
last MiB is kept in memory first, and a failed start's log was moved to
the kept-logs folder before.
"""
from __future__ import annotations

import os
import shutil
from typing import Dict, Optional

from . import address, marker, supervisor
from .log import ServerLog
from .spec import ServerSpec


class WorkDir:
    """One server's private directory and the files harness wrote into it."""

    def __init__(self) -> None:
        self.path: Optional[str] = None
        self.files: Dict[str, str] = {}  # "app" (app_code), "target" (a target's pickle)

    def make(self, spec: ServerSpec, log: ServerLog) -> str:
        """Make the directory, its log and the app file; nothing is left if this fails."""
        self.path = marker.make_private_dir(marker.base_for(spec.uid, spec.gid))
        try:
            supervisor.register_dir(self.path)
            log.create(self.path)
            self.files = {}
            if spec.kind == "app":
                assert spec.app_code is not None
                self.files["app"] = marker.write_private(os.path.join(self.path, "app.py"),
                                                         spec.app_code.encode("utf-8"))
            marker.give_to(self.path, spec.uid, spec.gid)  # user=: the server's own
        except BaseException:
            self.remove(log)
            raise
        return self.path

    def holds(self, path: Optional[str]) -> bool:
        """Whether ``path`` is inside the directory (a log not yet kept elsewhere)."""
        return self.path is not None and path is not None and path.startswith(
            self.path + os.sep)

    def remove(self, log: ServerLog) -> None:
        """Remove the directory, keeping the log's last MiB in memory."""
        path, self.path = self.path, None
        if path is None:
            return
        log.remember()
        try:
            supervisor.register_dir(path, add=False)
        except Exception:
            pass  # a dead zygote cannot be told; the directory goes all the same
        address.remove_socket_dir(path)
        shutil.rmtree(path, ignore_errors=True)
        if log.path and log.path.startswith(path + os.sep):
            log.path = None
