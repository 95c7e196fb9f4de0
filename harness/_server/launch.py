"""Launching one server: its command, its environment, warm or fresh, through a zygote.

The server runs in a new session (its own process group, away from the
terminal's Ctrl-C), with stdin from /dev/null, stdout and stderr appended
to its log, and -- with handoff -- the listening socket as fd 3 by
systemd's socket-activation convention (``LISTEN_FDS=1``, ``LISTEN_PID`` =
the server's *own* pid, set in the forked process before it execs).

A Python server (``app_code`` or ``target``) is *fresh* (a new
interpreter runs :mod:`.boot`) or *warm* (forked from a zygote that has
imported its ``preload`` modules).  :func:`warm_key` decides, with
``HARNESS_WARM`` (``0``: never warm, ``1``: every Python server warm).
"""
from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set

from .._config import scaled_for_cleanup
from .._os import kill
from .._os.identity import ProcessId
from .._wait import Deadline
from . import boot, marker, protocol, supervisor
from .spec import ServerSpec

WARM_VAR = "HARNESS_WARM"
LEARN_VAR = "HARNESS_LEARN_IMPORTS"
BOOT_PATH = os.path.abspath(boot.__file__)
_LISTEN_VARS = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
# Where a server listens is harness's to say: the runner's own values (it may
# run where PORT is set) never reach a server, which may have no port at all.
_ADDRESS_VARS = ("PORT", "HOST", "SOCKET_PATH")
_log = logging.getLogger("harness.launch")
# Modules whose warm launch failed (threads): launched fresh at once from then on.
_unsafe: Dict[Any, str] = {}
# Per warm zygote: the modules its target servers imported when they ran (learned
# at their stop), and modules whose import changed a zygote (never tried again).
_learned: Dict[Any, Set[str]] = {}
_unlearnable: Set[str] = set()


def warm_setting() -> Optional[bool]:
    """``HARNESS_WARM``: ``False`` (0), ``True`` (1) or ``None`` (unset: as each server asks)."""
    raw = os.environ.get(WARM_VAR, "").strip()
    if raw == "":
        return None
    if raw in ("0", "1"):
        return raw == "1"
    raise ValueError(f"{WARM_VAR} must be 0 (never warm), 1 (every Python server warm) or "
                     f"unset, got {raw!r}")


def warm_key(spec: ServerSpec) -> Optional[supervisor.PreloadKey]:
    """The zygote key of a warm launch, or ``None`` for a fresh one.

    ``target`` servers are warm unless told otherwise (the zygote imports
    the target's module once); ``app_code`` servers when they give
    ``preload``; argv servers never.
    """
    setting = warm_setting()
    if spec.kind == "argv" or setting is False or not hasattr(os, "fork"):
        return None
    if spec.preload is None and spec.kind == "app" and not setting:
        return None
    key = tuple(spec.preload or ())
    if key in _unsafe or (spec.target_module, key) in _unsafe:
        return None
    return key


def prepare(spec: ServerSpec) -> None:
    """Start the zygotes ``spec`` needs now (once per run, or per preload set).

    Their start -- an interpreter and the preload imports -- is not counted
    in the server's ``start_timeout``: it is paid once, not by every server.
    A ``ValueError`` for a bad ``HARNESS_WARM`` comes from here, before
    anything else starts.
    """
    key = warm_key(spec)
    supervisor.zygote(None)  # for the temp dirs, and fresh launches
    if key is not None:
        try:
            supervisor.zygote(key)
        except supervisor.WarmUnavailable as exc:
            mark_unsafe(key if spec.kind == "app" else (spec.target_module, key), str(exc))
            _log.warning("warm launch of %r unavailable: %s; starting a fresh interpreter "
                         "instead (now and for the rest of this run)", spec.name, exc)
        except supervisor.LaunchError:
            pass  # launch() raises it again, with the full story, as a start error


def learning() -> bool:
    """``HARNESS_LEARN_IMPORTS``: 0 turns off learning what target servers import."""
    return os.environ.get(LEARN_VAR, "").strip() != "0"


def learn(spec: ServerSpec, directory: str) -> None:
    """Remember what a stopped warm target server imported while it ran (it wrote it
    down in its directory), for the launcher to import before the next fork."""
    key = warm_key(spec)
    if key is None or spec.kind != "target":
        return
    try:
        with open(os.path.join(directory, boot.LEARNED_FILE)) as f:
            names = {line.strip() for line in f if line.strip()}
    except OSError:
        return
    _learned.setdefault(key, set()).update(names - _unlearnable)


def preload_learned(key: supervisor.PreloadKey, modules: Sequence[str],
                    timeout: float = supervisor.START_TIMEOUT) -> List[str]:
    """Import learned ``modules`` into the warm zygote of ``key``; the ones it now has.

    A module whose import changed the zygote is never tried again, and that
    zygote is replaced (the next use starts a clean one).
    """
    zygote = supervisor.zygote(key)
    todo = [name for name in modules if name not in zygote.imported and name not in
            _unlearnable]
    if not todo:
        return [name for name in modules if name in zygote.imported]
    answer = zygote.import_learned(todo, timeout)
    if not answer.get("ok"):
        module = answer.get("module") or ""
        if module:
            _unlearnable.add(module)
            _learned.get(key, set()).discard(module)
        _log.info("warm launcher %s: importing %r changed it (%s): the module is left to "
                  "the servers, and the launcher is replaced", list(key or ()), module,
                  answer.get("changed"))
        supervisor.discard(key)
    return [name for name in modules if name in zygote.imported and zygote.warm
            and not zygote.broken]


def unlearnable_modules() -> Set[str]:
    """Modules whose import changed a launcher (for tests and diagnostics)."""
    return set(_unlearnable)


def mark_unsafe(key: Any, reason: str) -> None:
    _unsafe[key] = reason


def environment(spec: ServerSpec, *, port: Optional[int], socket_path: Optional[str],
                markers: Mapping[str, str], temp_dir: str, python: bool) -> Dict[str, str]:
    """The inherited environment (less its PORT, HOST, SOCKET_PATH and LISTEN_*) plus
    ``spec.env`` (``None`` removes), PORT, HOST, marker."""
    env = dict(os.environ)
    for var in _LISTEN_VARS + _ADDRESS_VARS:  # never pass on an outer socket activation
        env.pop(var, None)                     # nor an outer address
    env.setdefault("PYTHONUNBUFFERED", "1")  # a log shows what happened, when it happened
    for key, value in spec.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    if port is not None:
        env["PORT"] = str(port)
        env["HOST"] = spec.host
    if socket_path is not None:
        env["SOCKET_PATH"] = socket_path
    env["TMPDIR"] = temp_dir  # what the server leaves in its temp dir goes with it
    env.update(markers)
    if spec.handoff:
        env["LISTEN_FDS"] = "1"
        env["LISTEN_FDNAMES"] = re.sub(r"[^\w.-]", "_", spec.name)
    if python:
        env[boot.SYS_PATH_ENV] = os.pathsep.join(supervisor.runner_sys_path())
    return env


def argv_command(spec: ServerSpec, port: Optional[int], socket_path: Optional[str]) -> List[str]:
    """The user's argv with ``{port}``, ``{host}`` and ``{socket}`` filled in."""
    assert spec.argv is not None
    values = {"{port}": str(port) if port is not None else "{port}", "{host}": spec.host,
              "{socket}": socket_path or "{socket}"}
    out = []
    for item in spec.argv:
        for key, value in values.items():
            item = item.replace(key, value)
        out.append(item)
    return out


def fresh_command(kind: str, path: str) -> List[str]:
    """A fresh interpreter running :mod:`.boot` for an app file or a target's pickle."""
    return [sys.executable, BOOT_PATH, kind, path]


class Launched:
    """A started server: its pid, its keeper, the command shown in messages, warm or not."""

    def __init__(self, link: supervisor.KeeperLink, pid: int, command: List[str],
                 warm: bool, subreaper: bool, server_id: str) -> None:
        self.link = link
        self.pid = pid
        self.command = command
        self.warm = warm
        self.subreaper = subreaper  # the keeper adopts escaped descendants
        self.server_id = server_id  # its HARNESS_SERVER_ID marker

    @property
    def status(self) -> Optional[int]:
        """The exit status its keeper reported (``None``: none yet, or the keeper died)."""
        return self.link.status

    def exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the exit; True if it has exited (or its keeper died)."""
        return self.link.exited(max(timeout, 0.0))

    def end(self, grace: float, kill_wait: float) -> List[ProcessId]:
        """End the server's whole tree; the processes that survived SIGKILL.

        Its keeper does it (stop signal, ``grace``, SIGKILL); a keeper that
        is gone (killed) leaves it to us, by parentage and by the marker.
        """
        try:
            survivors = self.link.stop(grace, kill_wait)
        except supervisor.KeeperLost:
            roots = [self.link.identity] if self.link.identity else []
            survivors = end_by_hand(self.server_id, roots, kill_wait)
        else:
            if not self.subreaper:  # no subreaper: escapees are found by their marker
                survivors += end_by_hand(self.server_id, [], kill_wait)
        self.link.close()
        return survivors


def end_by_hand(server_id: str, roots: Sequence[ProcessId], kill_wait: float) -> List[ProcessId]:
    """End ``roots`` and what they parent, and every process marked ``server_id``, at once."""
    def members() -> List[ProcessId]:
        found = [root for root in roots if kill.is_alive(root)]
        for root in list(found):
            found += [m for m in kill.descendants(root.pid) if m not in found]
        found += [m for m in kill.find_marked(marker.SERVER_ID_ENV, server_id)
                  if m not in found]
        return found
    return kill.stop_tree(members, grace=0.0, kill_wait=kill_wait)


def launch(spec: ServerSpec, *, port: Optional[int], socket_path: Optional[str],
           directory: str, files: Dict[str, str], log_fd: int, listen_fd: Optional[int],
           deadline: Deadline) -> Launched:
    """Start the server through the right zygote; :class:`supervisor.LaunchError` if it cannot.

    ``directory`` is the server's private dir (its ``TMPDIR`` too); ``files``
    the files already written there (``app``), to which a ``target``
    server's pickle is added.  A server whose keeper died before confirming
    its start is ended here before the error is raised.
    """
    server_id = marker.new_server_id()
    markers = {marker.OWNER_ENV: marker.owner_token(), marker.SERVER_ID_ENV: server_id}
    try:
        return _launch(spec, port=port, socket_path=socket_path, markers=markers,
                       directory=directory, files=files, log_fd=log_fd, listen_fd=listen_fd,
                       deadline=deadline, server_id=server_id)
    except supervisor.LaunchError as exc:
        if exc.orphan is not None:  # its keeper died before confirming it: ours to end
            end_by_hand(server_id, [exc.orphan], scaled_for_cleanup(kill.KILL_WAIT))
        raise


def _launch(spec: ServerSpec, *, port: Optional[int], socket_path: Optional[str],
            markers: Mapping[str, str], directory: str, files: Dict[str, str], log_fd: int,
            listen_fd: Optional[int], deadline: Deadline, server_id: str) -> Launched:
    key = warm_key(spec)
    if key is not None:
        env = environment(spec, port=port, socket_path=socket_path, markers=markers,
                          temp_dir=directory, python=True)
        try:
            return _launch_warm(spec, key, env, directory, files, log_fd, listen_fd, deadline,
                                server_id)
        except supervisor.WarmUnavailable as exc:
            mark_unsafe(key if spec.kind == "app" else (spec.target_module, key), str(exc))
            _log.warning("warm launch of %r unavailable: %s; starting a fresh interpreter "
                         "instead (now and for the rest of this run)", spec.name, exc)
    env = environment(spec, port=port, socket_path=socket_path, markers=markers,
                      temp_dir=directory, python=spec.kind != "argv")
    if spec.kind == "argv":
        command = argv_command(spec, port, socket_path)
    elif spec.kind == "app":
        command = fresh_command("app", files["app"])
    else:
        command = fresh_command("target", _target_file(spec, directory, files)) + (
            [spec.main_path] if spec.main_path else [])
    request = protocol.spawn(spec.kind, warm=False, argv=command, env=env,
                             cwd=spec.cwd or os.getcwd(), uid=spec.uid, gid=spec.gid,
                             stop_signal=spec.stop_signal)
    try:
        return _spawn(supervisor.zygote(None), request, log_fd, listen_fd, deadline, command,
                      False, server_id)
    except supervisor.LaunchError as exc:
        exc.command = command
        raise


def _target_file(spec: ServerSpec, directory: str, files: Dict[str, str]) -> str:
    """The target's pickle in the server's dir (a fresh interpreter reads it; so does a
    warm server's re-run)."""
    if "target" not in files:
        assert spec.payload is not None
        files["target"] = marker.write_private(os.path.join(directory, "target.pickle"),
                                               spec.payload)
        marker.give_to(directory, spec.uid, spec.gid)
    return files["target"]


def _launch_warm(spec: ServerSpec, key: supervisor.PreloadKey, env: Dict[str, str],
                 directory: str, files: Dict[str, str], log_fd: int, listen_fd: Optional[int],
                 deadline: Deadline, server_id: str) -> Launched:
    zygote = supervisor.zygote(key)
    if spec.kind == "app":
        request = protocol.spawn(
            "app", warm=True, argv=[], env=env, cwd=spec.cwd or os.getcwd(), uid=spec.uid,
            gid=spec.gid, stop_signal=spec.stop_signal, app_path=files["app"],
            sys_path=supervisor.runner_sys_path())
        shown = [f"(warm, preload {list(key or ())})", files["app"]]
    else:
        zygote = _target_zygote(spec, key, zygote, deadline)
        assert spec.payload is not None
        request = protocol.spawn(
            "target", warm=True, argv=[], env=env, cwd=spec.cwd or os.getcwd(), uid=spec.uid,
            gid=spec.gid, stop_signal=spec.stop_signal, payload=spec.payload,
            payload_path=_target_file(spec, directory, files), main_path=spec.main_path or "",
            sys_path=supervisor.runner_sys_path(), learn=learning())
        shown = [f"(warm, preload {list(key or ())})",
                 f"{spec.target_module}.{getattr(spec.target, '__qualname__', '?')}"]
    return _spawn(zygote, request, log_fd, listen_fd, deadline, shown, True, server_id)


def _target_zygote(spec: ServerSpec, key: supervisor.PreloadKey, zygote: supervisor.Zygote,
                   deadline: Deadline) -> supervisor.Zygote:
    """The warm launcher with the target's module imported (within ``start_timeout``, as
    the server would import it), and what its servers were seen to import (once each)."""
    module = spec.target_module
    if not module or module == "__main__":
        return zygote
    zygote.import_module(module, max(deadline.remaining(), 1.0))  # once
    if _learned.get(key):
        preload_learned(key, sorted(_learned[key]), max(deadline.remaining(), 1.0))
        if supervisor.zygote(key) is not zygote:  # an import changed it: it was replaced
            zygote = supervisor.zygote(key)
            zygote.import_module(module, max(deadline.remaining(), 1.0))
    return zygote


def _spawn(zygote: supervisor.Zygote, request: protocol.Spawn, log_fd: int,
           listen_fd: Optional[int], deadline: Deadline, shown: List[str],
           warm: bool, server_id: str) -> Launched:
    link = zygote.spawn(request, log_fd, listen_fd)
    try:
        pid = link.wait_started(max(deadline.remaining(), 5.0))
    except supervisor.LaunchError:
        link.wait_closed()  # the keeper exits right after saying why: nothing stays behind
        link.close()
        raise
    except BaseException:
        link.close()
        raise
    return Launched(link, pid, shown, warm, zygote.subreaper, server_id)
