"""pytest plugin: servers for pytest tests, and their log tails in failure reports.

Registered through the ``pytest11`` entry point named ``harness``, so
installing harness is enough and ``-p no:harness`` turns it off.  From a
checkout or a vendored copy, load it with ``-p harness.pytest_plugin`` (or
``pytest_plugins = ["harness.pytest_plugin"]``), but not both ways at once:
pytest refuses one module registered under two names.  This is the only
module of harness that imports pytest.

* ``server_fixture(app_code=None, *, scope="function", **kwargs)`` makes a
  fixture (assign it to a name in a ``conftest.py``) whose value is a
  started server, shared by the tests of ``scope`` (one per pytest-xdist
  worker for ``"session"``).
* ``harness_server``: a factory fixture, ``harness_server(app_code=None,
  **kwargs)`` starts a server for the test and returns it ready; every
  server it started is stopped when the test ends.
* ``harness_server_defaults``: ``ServerProcess`` arguments for every
  server of ``harness_server`` (``{}``); override the fixture in a
  ``conftest.py``.  Keywords of a call go over them, ``env`` merged.
* ``harness_port``: a port leased to the test until it ends;
  ``harness_server(port=harness_port)`` takes the lease over.
  ``free_port`` is its deprecated alias (removed in the next release).

A failing test's report gets a section with the log tail of every server it
used: those its ``harness_server`` started and every ``ServerProcess`` among
the values of the fixtures it asked for, directly or not (``item.funcargs``),
shared ones included.  A server whose failed start the error already shows
is not repeated.  A failed start's traceback ends at the test's line (the
error says everything; ``--full-trace`` shows harness's frames).
"""
from __future__ import annotations

import os
import sys
import warnings
import weakref
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
    cast,
)

import pytest

from . import _runner
from .errors import ServerStartError
from .ports import PortAllocator
from .process import ServerProcess

# The fixtures are asked for by name, never imported; they are here because
# they are public (the API reference documents every name of __all__).
__all__ = ["server_fixture", "harness_server", "harness_server_defaults", "harness_port",
           "free_port"]

_SERVERS_ATTR = "_harness_servers"
_KEPT_ATTR = "_harness_kept_logs"  # logs kept after a failed start
_FAILED_ATTR = "_harness_failed"  # a report of the test failed

_SCOPES = ("function", "class", "module", "package", "session")
# The servers of server_fixture fixtures, with the scope each was started
# for (what a failure report calls it).
_fixture_scopes: "weakref.WeakKeyDictionary[ServerProcess, str]" = weakref.WeakKeyDictionary()


def _node_servers(node: pytest.Item) -> List[ServerProcess]:
    servers: Optional[List[ServerProcess]] = getattr(node, _SERVERS_ATTR, None)
    if servers is None:
        servers = []
        setattr(node, _SERVERS_ATTR, servers)
    return servers


def _node_kept_logs(node: pytest.Item) -> _runner.KeptLogs:
    kept: Optional[_runner.KeptLogs] = getattr(node, _KEPT_ATTR, None)
    if kept is None:
        kept = _runner.KeptLogs()
        setattr(node, _KEPT_ATTR, kept)
    return kept


@pytest.fixture
def harness_server_defaults() -> Dict[str, Any]:
    """``ServerProcess`` arguments for every server of ``harness_server``."""
    return {}


@pytest.fixture
def harness_server(request: pytest.FixtureRequest, harness_server_defaults: Mapping[str, Any],
                   ) -> Iterator[Callable[..., ServerProcess]]:
    """A factory: ``harness_server(app_code=None, **ServerProcess kwargs)`` -> started server."""
    defaults = _runner.check_options("harness_server_defaults", harness_server_defaults)
    node = request.node
    servers = _node_servers(node)

    full_traceback = bool(request.config.getoption("fulltrace", False))

    def start(app_code: Optional[str] = None, **kwargs: Any) -> ServerProcess:
        __tracebackhide__ = True  # a failure points at the test's line
        _runner.check_arguments("harness_server()", kwargs)
        # A port from harness_port is fine: the server takes its lease over.
        arguments = _runner.merge_arguments(defaults, app_code, kwargs, node.name)
        server = _runner.create_server(arguments, full_traceback=full_traceback)
        servers.append(server)
        try:
            return _runner.start_server(server, full_traceback=full_traceback)
        except ServerStartError as exc:
            _node_kept_logs(node).note(exc)
            raise

    yield start
    errors = []
    for server in reversed(servers):
        try:
            server.stop()
        except Exception as exc:  # stop the others first, then report
            errors.append(exc)
    # A test that passed expected its failed starts: their logs go.
    _node_kept_logs(node).settle(test_failed=getattr(node, _FAILED_ATTR, False))
    if errors:
        raise errors[0]


def _leased_port(harness_server_defaults: Mapping[str, Any]) -> Iterator[int]:
    lease = PortAllocator(harness_server_defaults.get("port_range")).acquire()
    try:
        yield lease.port
    finally:
        lease.release()


@pytest.fixture
def harness_port(harness_server_defaults: Mapping[str, Any]) -> Iterator[int]:
    """A free port leased to this test (from ``harness_server_defaults["port_range"]``);
    ``harness_server(port=harness_port)`` takes the lease over."""
    yield from _leased_port(harness_server_defaults)


@pytest.fixture
def free_port(request: pytest.FixtureRequest,
              harness_server_defaults: Mapping[str, Any]) -> Iterator[int]:
    """Deprecated alias of ``harness_port`` (home-made ``free_port`` fixtures,
    common in conftest files, shadow it); removed in the next release."""
    path, line, _ = request.node.location
    warnings.warn_explicit("the free_port fixture is deprecated; use harness_port (the same "
                           "leased port under a name no home-made fixture shadows)",
                           DeprecationWarning, path, (line or 0) + 1)
    yield from _leased_port(harness_server_defaults)


def server_fixture(app_code: Optional[str] = None, *,
                   scope: Union[str, Callable[..., str]] = "function",
                   **server_kwargs: Any) -> Any:
    """A fixture that starts a server for a whole ``scope``; assign it to a
    name in a ``conftest.py`` (or a test module), and that name is the fixture::

        api = server_fixture(APP, scope="session", env={"MODE": "test"})

        def test_health(api):            # api is the started ServerProcess
            assert api.get("/health").status == 200

    ``scope`` is pytest's: ``"function"`` (the default), ``"class"``,
    ``"module"``, ``"package"`` or ``"session"`` (or a callable, as
    ``pytest.fixture`` takes).  One server is started for each instance of
    the scope, when a test first asks for it, and stopped when the scope
    ends; under pytest-xdist each worker is a session of its own, so a
    session server is started once per worker.

    ``app_code`` and ``server_kwargs`` are the ``ServerProcess`` arguments,
    every one of them (``argv=``, ``port=``, ``health=``, ...): a misspelt
    name is a ``TypeError`` here, when the conftest is imported.  The
    server's ``name`` is the fixture's name unless ``name=`` is given.
    ``harness_server_defaults`` is not used: it is a per-test fixture, and a
    fixture of a wider scope cannot depend on one.

    A failing test that used the server (directly or through another
    fixture) gets its log tail in the report.  A failed start is an error of
    every test of the scope that asks for the server; its log is kept and
    its path shown.
    """
    if not (callable(scope) or scope in _SCOPES):
        raise ValueError(f"server_fixture(): scope must be one of {', '.join(map(repr, _SCOPES))}"
                         f" (or a callable, as pytest.fixture takes), got {scope!r}")
    _runner.check_arguments("server_fixture()", server_kwargs)
    arguments = dict(server_kwargs)
    if app_code is not None:
        arguments["app_code"] = app_code
    caller = sys._getframe(1)  # the conftest line that made the fixture, for a failed start
    where = f"{_shown_path(caller.f_code.co_filename)}:{caller.f_lineno}"

    @pytest.fixture(scope=cast(Any, scope))  # checked above; pytest types it as a Literal
    def harness_server_fixture(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
        __tracebackhide__ = True  # a failed start shows its message, not harness's source
        full_traceback = bool(request.config.getoption("fulltrace", False))
        server = _runner.create_server(dict(arguments, name=arguments.get(
            "name", request.fixturename)), full_traceback=full_traceback)
        try:
            _runner.start_server(server, full_traceback=full_traceback)
        except ServerStartError as exc:
            _runner.add_note(exc, f"harness: the server of the {request.scope}-scoped fixture "
                                  f"{request.fixturename!r} (server_fixture() at {where})")
            raise
        _fixture_scopes[server] = "test" if request.scope == "function" else request.scope
        try:
            yield server
        finally:
            server.stop()

    return harness_server_fixture


def _shown_path(path: str) -> str:
    """``path`` relative to the working directory (pytest's root, usually) if under it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive
        return path
    return path if relative.startswith(os.pardir) else relative


def _servers_of(item: pytest.Item) -> List[Tuple[str, ServerProcess]]:
    """The servers a test used: those its ``harness_server`` started, and the
    ``ServerProcess`` values of the fixtures it asked for, directly or
    through other fixtures (``item.funcargs`` holds them all, overrides
    resolved), ``server_fixture`` ones named by their scope."""
    servers = [("test", server) for server in getattr(item, _SERVERS_ATTR, None) or []]
    for name, value in (getattr(item, "funcargs", None) or {}).items():
        if isinstance(value, ServerProcess):
            servers.append((_fixture_scopes.get(value) or f"fixture {name!r}", value))
    return servers


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Optional[pytest.Item],
                            ) -> Generator[None, Any, None]:
    """The test's scope (``_runner.Scope``) spans its set-up, call and tear-down:
    what was made for the test (a fresh database) ends after its fixtures."""
    scope = _runner.open_scope(item.nodeid)
    try:
        yield
    finally:
        try:
            scope.close()
        except Exception as exc:  # after the report: said, never a crash of the run
            warnings.warn(f"harness: ending what {item.nodeid} made failed: "
                          f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=1)


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest,
                         ) -> Generator[None, Any, None]:
    """A fixture wider than the test is set up outside the test's scope: what it
    makes lives as long as the fixture."""
    if getattr(fixturedef, "scope", "function") == "function":
        yield
        return
    with _runner.outside_scope():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None],
                              ) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.failed:
        return
    setattr(item, _FAILED_ATTR, True)
    servers = _servers_of(item)
    if not servers:
        return
    lines = _runner.LOG_TAIL_LINES
    failure = call.excinfo.value if call.excinfo is not None else None
    blocks = _runner.report_blocks(servers, lines, failure)
    if blocks:
        report.sections.append((f"{_runner.REPORT_TITLE} (last {lines} lines each)",
                                "\n".join(blocks)))
