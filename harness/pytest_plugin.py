"""pytest plugin: the ``harness_server`` factory and ``free_port`` fixtures.

Registered through the ``pytest11`` entry point, so installing harness is
enough (``-p harness.pytest_plugin`` loads it from a checkout).  This is the
only module of harness that imports pytest.

* ``harness_server(app_code=None, **kwargs)`` starts a ``ServerProcess``
  and returns it ready; every server it started is stopped when the test
  ends, and a failing test's report gets a section with each server's log
  tail.
* ``free_port``: a port leased to the test until it ends;
  ``harness_server(..., port=free_port)`` takes the lease over.
* ``harness_server_defaults``: ``ServerProcess`` arguments for every
  server of the factory (``{}``); override the fixture in a ``conftest.py``.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Generator, Iterator, List, Mapping, Optional

import pytest

from . import _runner
from .errors import ServerStartError
from .ports import PortAllocator
from .process import ServerProcess

_SERVERS_ATTR = "_harness_servers"
_KEPT_ATTR = "_harness_kept_logs"  # logs kept after a failed start
_FAILED_ATTR = "_harness_failed"  # a report of the test failed


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
        # A port from free_port is fine: the server takes its lease over.
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None],
                              ) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.failed:
        return
    setattr(item, _FAILED_ATTR, True)
    servers = getattr(item, _SERVERS_ATTR, None)
    if not servers:
        return
    lines = _runner.LOG_TAIL_LINES
    failure = call.excinfo.value if call.excinfo is not None else None
    blocks = _runner.report_blocks([("test", server) for server in servers], lines, failure)
    if blocks:
        report.sections.append((f"{_runner.REPORT_TITLE} (last {lines} lines each)",
                                "\n".join(blocks)))
