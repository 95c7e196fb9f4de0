"""What the unittest mixin (``testcase.py``) and the pytest plugin
(``pytest_plugin.py``) share: turning defaults and a call into
``ServerProcess`` arguments, the server block of a failure report, and the
logs kept after failed starts.

Neither runner imports the other; both import this module.  It imports
neither unittest nor pytest.

Argument names are never listed here: they are read from
``inspect.signature(ServerProcess)``, so an argument added to
``ServerProcess`` is accepted by both runners at once.
"""
from __future__ import annotations

import inspect
import logging
import os
import shutil
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ._server import marker
from .errors import ServerStartError
from .process import ServerProcess

_log = logging.getLogger("harness.runner")

#: Lines of each server's log shown under a failing test.
LOG_TAIL_LINES = 30
#: The first words of every failure report's server section.
REPORT_TITLE = "harness: log tail of the servers"


# --------------------------------------------------------------------------
# Arguments


def server_argument_names() -> List[str]:
    """The keyword arguments ``ServerProcess`` takes, from its signature."""
    return [name for name in inspect.signature(ServerProcess).parameters if name != "self"]


def check_arguments(owner: str, arguments: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` for a name that is not a ``ServerProcess`` argument,
    naming ``owner`` (where the argument was written) and the known names."""
    known = server_argument_names()
    for key in arguments:
        if key not in known:
            raise TypeError(f"{owner}: {key!r} is not a ServerProcess argument; "
                            f"known: {', '.join(known)}")


def check_options(owner: str, options: object) -> Mapping[str, Any]:
    """``options`` if it is a mapping of ``ServerProcess`` arguments, else a ``TypeError``."""
    if not isinstance(options, Mapping):
        raise TypeError(f"{owner} must be a dict of ServerProcess arguments, got {options!r}")
    check_arguments(owner, options)
    return options


def merge_env(default: Any, call: Any) -> Any:
    """The environment of a call over the defaults' one.

    The call's variables win, a variable the call sets to ``None`` is
    removed (``ServerProcess`` then also removes it from the inherited
    environment), and ``env=None`` in a call adds nothing.  A value that is
    not a mapping is passed on as it is, for ``ServerProcess`` to reject
    with its own message.
    """
    if call is None:
        return default
    if isinstance(default, Mapping) and isinstance(call, Mapping):
        merged = dict(default)
        merged.update(call)
        return merged
    return call


def merge_arguments(defaults: Mapping[str, Any], app_code: Optional[str],
                    kwargs: Mapping[str, Any], name: str) -> Dict[str, Any]:
    """``ServerProcess`` arguments: ``defaults`` overridden by a call.

    * The program the call names (``app_code`` or ``argv``) replaces the
      defaults' program.
    * A fixed ``port`` in the call replaces a default ``port_range``.
    * ``env`` is merged (see :func:`merge_env`); any other argument of the
      call replaces the default.
    * ``name`` is the server's name unless one is given.
    """
    arguments = dict(defaults)
    if app_code is not None or "app_code" in kwargs or "argv" in kwargs:
        arguments.pop("app_code", None)
        arguments.pop("argv", None)
    if kwargs.get("port") is not None:
        arguments.pop("port_range", None)
    for key, value in kwargs.items():
        arguments[key] = merge_env(arguments.get("env"), value) if key == "env" else value
    if app_code is not None:
        arguments["app_code"] = app_code
    arguments.setdefault("name", name)
    return arguments


# --------------------------------------------------------------------------
# The failure report


def server_block(server: ServerProcess, scope: str, lines: int) -> str:
    """The report of one server: a head line and its log's last ``lines`` lines.

    The tail is read before the state, so the state is the later fact: a
    server shown as running was still running after the lines above it
    were written.
    """
    try:
        tail = server.log_tail(lines)
    except Exception as exc:  # the report must never hide the failure it decorates
        tail = f"(log unreadable: {type(exc).__name__}: {exc})"
    state = server.state
    log_path = server.log_path
    if state != "running" and log_path and os.path.exists(log_path):
        state += f"; log kept at {log_path}"
    head = f"--- {scope} server {server.name!r} (pid {server.pid}, {server.url}, {state})"
    body = "\n".join("    " + line for line in tail.splitlines()) if tail.strip() \
        else "    (the log is empty)"
    return head + "\n" + body


def report_blocks(servers: Iterable[Tuple[str, ServerProcess]], lines: int,
                  exc: Optional[BaseException]) -> List[str]:
    """The server blocks of a failure report: one per server (``(scope, server)``
    pairs; a server listed twice is shown once), leaving out servers that never
    launched and the server whose log the failing exception already shows (a
    ``ServerStartError`` carries its own log's tail)."""
    shown_log = exc.log_path if isinstance(exc, ServerStartError) else None
    seen = set()
    blocks = []
    for scope, server in servers:
        if id(server) in seen or server.pid is None:
            continue
        seen.add(id(server))
        if shown_log and server.log_path == shown_log:
            continue
        blocks.append(server_block(server, scope, lines))
    return blocks


# --------------------------------------------------------------------------
# Logs kept after failed starts


class KeptLogs:
    """The logs harness kept after failed starts in one test.

    A failed start keeps its log (the error shows its path).  When the test
    that saw the failure passes anyway, it expected the failure
    (``assertRaises(ServerStartError)``), and nobody will read the log:
    :meth:`settle` removes it.  When the test fails, the log stays where its
    report says.
    """

    def __init__(self) -> None:
        self.paths: List[str] = []

    def note(self, exc: ServerStartError) -> None:
        if exc.log_path:
            self.paths.append(exc.log_path)

    def settle(self, test_failed: bool) -> None:
        paths, self.paths = self.paths, []
        if not test_failed:
            for log_path in paths:
                remove_kept_log(log_path)


def remove_kept_log(log_path: str) -> None:
    """Remove the private directory harness kept a failed start's log in, if it is ours."""
    directory = os.path.dirname(log_path)
    if os.path.basename(directory).startswith(marker.TEMP_PREFIX) and \
            marker.read_owner(directory) == marker.owner_id():
        shutil.rmtree(directory, ignore_errors=True)
        _log.debug("removed %s: the test expected its failed start", directory)
