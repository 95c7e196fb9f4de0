"""What the unittest mixin (``testcase.py``) and the pytest plugin
(``pytest_plugin.py``) share: turning defaults and a call into
``ServerProcess`` arguments, creating and starting a server so that a
failure points at the test's line, the server blocks of a failure report,
and the logs kept after failed starts.

Neither runner imports the other; both import this module.  It imports
neither unittest nor pytest.

Argument names are never listed here: they are read from
``inspect.signature(ServerProcess)``, so an argument added to
``ServerProcess`` is accepted by both runners at once.
"""
from __future__ import annotations

import contextlib
import http.client
import inspect
import logging
import os
from types import FrameType, TracebackType
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from ._config import scaled_for_cleanup
from ._server import log, logstore
from ._wait import Deadline, pause
from .errors import HarnessError, RequestFailed, ServerStartError
from .process import ServerProcess

# A failed start is reported at the test's line: pytest hides the frames of a
# module whose globals say ``__tracebackhide__``, unittest (and pytest, for a
# TestCase) those that say ``__unittest``.
__tracebackhide__ = True
__unittest = True

_log = logging.getLogger("harness.runner")

#: Lines of each server's log shown under a failing test.
LOG_TAIL_LINES = 30
#: The first words of every failure report's server section.
REPORT_TITLE = "harness: log tail of the servers"
# The arguments that name the program a server runs (``target`` is coming:
# DESIGN.md "Next"), and the arguments that only go with one of them.
_PROGRAM = ("app_code", "argv", "target")
_PROGRAM_COMPANIONS = ("args", "kwargs")  # target's
#: Seconds a failure report gives a server that is going down to finish
#: exiting, when the test failed on a broken connection: a Python server
#: whose request handler crashed closes the connection, prints its
#: traceback and takes another 5 to 20 ms to exit.  Scaled by
#: HARNESS_TIMEOUT_FACTOR; spent in full only by a server that stays up.
EXIT_GRACE = 0.25


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

    * The program the call names (``app_code``, ``argv`` or ``target``)
      replaces the defaults' program, with the arguments that went with it
      (``args``, ``kwargs``) unless the call gives them too.
    * A fixed ``port`` in the call replaces a default ``port_range``.
    * ``env`` is merged (see :func:`merge_env`); any other argument of the
      call replaces the default.
    * ``name`` is the server's name unless one is given.
    """
    arguments = dict(defaults)
    if app_code is not None or any(key in kwargs for key in _PROGRAM):
        for key in _PROGRAM + _PROGRAM_COMPANIONS:
            arguments.pop(key, None)
    if kwargs.get("port") is not None:
        arguments.pop("port_range", None)
    for key, value in kwargs.items():
        arguments[key] = merge_env(arguments.get("env"), value) if key == "env" else value
    if app_code is not None:
        arguments["app_code"] = app_code
    arguments.setdefault("name", name)
    return arguments


# --------------------------------------------------------------------------
# Starting


def create_server(arguments: Mapping[str, Any], *, full_traceback: bool = False) -> ServerProcess:
    """``ServerProcess(**arguments)``; an invalid argument is raised from here.

    ``ServerProcess`` names the bad argument in its ``ValueError`` or
    ``TypeError``; its frames would only add the line that checked it.
    See :func:`start_server`.
    """
    try:
        return ServerProcess(**arguments)
    except (TypeError, ValueError) as exc:
        if full_traceback:
            raise
        raise exc.with_traceback(None)  # noqa: B904 (the same exception, raised again)


def start_server(server: ServerProcess, *, full_traceback: bool = False) -> ServerProcess:
    """``server.start()``, with a failure raised from this frame.

    A ``ServerStartError`` says everything in its message (exit code,
    command, probes, the log's tail).  The frames of harness that raised it
    only added 70 lines of harness's source to a pytest report, so the
    exception is raised again from here without them, and this module's
    frames are hidden: the traceback ends at the test's line.
    ``full_traceback`` (pytest's ``--full-trace``) keeps every frame.
    """
    try:
        return server.start()
    except HarnessError as exc:
        if full_traceback:
            raise
        raise exc.with_traceback(None)  # noqa: B904 (the same exception, raised again)


_RAISED_HERE = (create_server.__code__, start_server.__code__)


def _hidden(frame: FrameType) -> bool:
    return bool(frame.f_globals.get("__unittest") or frame.f_globals.get("__tracebackhide__")
                or frame.f_locals.get("__tracebackhide__"))


def cut_hidden_frames(tb: Optional[TracebackType]) -> Optional[TracebackType]:
    """The traceback of an error :func:`create_server` or :func:`start_server`
    raised, ending at the last frame that is not harness's (the test's line).

    unittest drops harness's trailing frames only for assertion failures;
    this does it for the errors raised here.  Any other traceback is
    returned unchanged.
    """
    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    if not entries or entries[-1].tb_frame.f_code not in _RAISED_HERE:
        return entries[0] if entries else None
    last = len(entries) - 1
    while last > 0 and _hidden(entries[last].tb_frame):
        last -= 1
    entries[last].tb_next = None
    return entries[0]


# --------------------------------------------------------------------------
# The failure report


def server_block(server: ServerProcess, scope: str, lines: int,
                 shown: Optional[int] = None) -> Optional[str]:
    """The report of one server: a head line and its log's last ``lines`` lines,
    without colour codes (the report is read in a CI log, as a start error is).

    ``shown``: where its log ended when the failing error showed its tail
    (a ``log_mark()``); then only what was written since, and ``None``
    (nothing to report) while the server still runs and has written
    nothing more.  The log is read before the state, so the state is the
    later fact: a server shown as running was still running after the
    lines above it were written.
    """
    try:
        text = server.log_tail(lines) if shown is None else server.output(since=shown)
        body = log.clean(text).splitlines()[-lines:] if lines > 0 else []
    except Exception as exc:  # the report must never hide the failure it decorates
        body = [f"(log unreadable: {type(exc).__name__}: {exc})"]
    state = server.state
    if shown is not None and not body and state == "running":
        return None
    log_path = server.log_path
    if state != "running" and log_path and _is_kept(log_path):
        state += f"; log kept at {log_path}"
    head = f"--- {scope} server {server.name!r} (pid {server.pid}, {server.where}, {state})"
    if shown is not None:
        body = [SHOWN_SINCE if body else SHOWN_ABOVE] + body
    elif not "".join(body).strip():
        body = ["(the log is empty)"]
    return head + "\n" + "\n".join("    " + line for line in body)


#: A server block's first line when the failing error shows the server's log.
SHOWN_ABOVE = "(the error above shows its log up to the failure; nothing written since)"
SHOWN_SINCE = "(the error above shows its log up to the failure; written since:)"


def _is_kept(log_path: str) -> bool:
    """Whether ``log_path`` is in the folder of kept logs (a log still in the
    server's own directory goes with it, or moves there, at ``stop()``)."""
    try:
        folder = logstore.directory(create=False)
    except HarnessError:
        return False
    return os.path.dirname(os.path.abspath(log_path)) == folder and os.path.exists(log_path)


def report_blocks(servers: Iterable[Tuple[str, ServerProcess]], lines: int,
                  exc: Optional[BaseException]) -> List[str]:
    """The server blocks of a failure report: one per server (``(scope, server)``
    pairs; a server listed twice is shown once), leaving out servers that never
    launched and the server of a failed start (its ``ServerStartError`` carries
    its log's tail and how it ended).

    A failed request's error carries its server's log tail and state when it
    failed (``ServerProcess.request``): that server's block says how it is now
    and shows only the lines written since; it is left out while the server
    still runs and wrote nothing more.  Whether the error or the server's
    exit came first changes nothing but where the exit is said.

    When ``exc`` is a broken connection, servers still running get
    :data:`EXIT_GRACE` to finish exiting first, so that a server that
    crashed is reported as exited, not as running above its traceback.
    """
    shown_log = exc.log_path if isinstance(exc, ServerStartError) else None
    shown: List[Tuple[str, ServerProcess]] = []
    for scope, server in servers:
        if server.pid is None or any(server is other for _, other in shown):
            continue
        if shown_log and server.log_path == shown_log:
            continue
        shown.append((scope, server))
    if exc is not None and _is_connection_failure(exc):
        _await_exits([server for _, server in shown])
    # The server of a failed request: its tail is in the error's message already.
    shown_by = exc.shown_server_id if isinstance(exc, HarnessError) else None
    mark = exc.shown_log_mark if isinstance(exc, HarnessError) else None
    blocks = [server_block(server, scope, lines,
                           shown=mark if shown_by == server.server_id else None)
              for scope, server in shown]
    return [block for block in blocks if block is not None]


def add_note(exc: BaseException, text: str) -> None:
    """``exc.add_note(text)`` on every Python (``__notes__`` is the 3.11 protocol,
    which pytest renders on every version), once."""
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list) and text in notes:
        return
    if hasattr(exc, "add_note"):
        exc.add_note(text)
    elif isinstance(notes, list):
        notes.append(text)
    elif notes is None:
        setattr(exc, "__notes__", [text])  # noqa: B010 (no add_note before 3.11)


def _is_connection_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a failed
    exchange with a server: harness's ``RequestFailed``, an ``OSError``
    (connection refused or reset, timeouts) or an ``http.client`` error."""
    seen = 0
    current: Optional[BaseException] = exc
    while current is not None and seen < 10:
        if isinstance(current, (RequestFailed, OSError, http.client.HTTPException)):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def _await_exits(servers: Sequence[ServerProcess]) -> None:
    """Wait until none of ``servers`` is running, or :data:`EXIT_GRACE` has passed."""
    running = [server for server in servers if server.state == "running"]
    if not running:
        return
    deadline = Deadline(scaled_for_cleanup(EXIT_GRACE))
    for interval in deadline.polls(cap=0.01):
        if all(server.state != "running" for server in running):
            return
        pause(interval)


# --------------------------------------------------------------------------
# The running test's scope: what objects made during a test end with it


class Scope:
    """One test's run (set-up, call, tear-down).  Objects made meanwhile that
    belong to the test (a fresh database of a shared server) register a
    finaliser with :meth:`add`; the runner closes the scope when the test
    ends, after its own clean-ups, and the finalisers run, newest first."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._finalizers: List[Callable[[], None]] = []
        self.closed = False

    def add(self, finalizer: Callable[[], None]) -> None:
        if self.closed:
            finalizer()
            return
        self._finalizers.append(finalizer)

    def close(self) -> None:
        """Run the finalisers (every one, newest first); the first error is raised after."""
        if self in _scopes:
            _scopes.remove(self)
        self.closed = True
        errors: List[BaseException] = []
        while self._finalizers:
            try:
                self._finalizers.pop()()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


# The open scopes, innermost last; ``None`` hides the ones below it (a fixture
# of a wider scope being set up inside a test's set-up).
_scopes: List[Optional[Scope]] = []


def open_scope(label: str) -> Scope:
    """A new test scope, current until it is closed."""
    scope = Scope(label)
    _scopes.append(scope)
    return scope


def current_scope() -> Optional[Scope]:
    """The scope of the test running now, or ``None`` (outside any test, or in the
    set-up of something that outlives the test)."""
    return _scopes[-1] if _scopes else None


@contextlib.contextmanager
def outside_scope() -> Iterator[None]:
    """While it lasts, nothing belongs to the running test (a wider fixture's set-up)."""
    _scopes.append(None)
    try:
        yield
    finally:
        for index in range(len(_scopes) - 1, -1, -1):
            if _scopes[index] is None:
                del _scopes[index]
                break


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
    """Remove a failed start's kept log from the folder of kept logs."""
    logstore.discard(log_path)
    _log.debug("removed %s: the test expected its failed start", log_path)
