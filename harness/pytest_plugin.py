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

from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from .errors import ServerStartError
from .testcase import (
    LOG_TAIL_LINES,
    _check_arguments,
    _server_block,
    merge_arguments,
    remove_kept_log,
)

_SERVERS_ATTR = "_harness_servers"
_KEPT_ATTR = "_harness_kept_logs"  # logs kept after a failed start
_FAILED_ATTR = "_harness_failed"  # a report of the test failed


def _node_list(node: Any, attr: str) -> List[Any]:
    value = getattr(node, attr, None)
    if value is None:
        value = []
        setattr(node, attr, value)
    return value


@pytest.fixture
def harness_server_defaults() -> Dict[str, Any]:
    """``ServerProcess`` arguments for every server of ``harness_server``."""
    return {}


@pytest.fixture
def harness_server(request: Any,
                   harness_server_defaults: Dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """A factory: ``harness_server(app_code=None, **ServerProcess kwargs)`` -> started server."""
    from .process import ServerProcess
    if not isinstance(harness_server_defaults, dict):
        raise TypeError(f"the harness_server_defaults fixture must return a dict of "
                        f"ServerProcess arguments, got {harness_server_defaults!r}")
    _check_arguments("harness_server_defaults", harness_server_defaults)
    servers = _node_list(request.node, _SERVERS_ATTR)

    def start(app_code: Optional[str] = None, **kwargs: Any) -> Any:
        _check_arguments("harness_server()", kwargs)
        # A port from free_port is fine: the server takes its lease over.
        arguments = merge_arguments(harness_server_defaults, app_code, kwargs, request.node.name)
        server = ServerProcess(**arguments)
        servers.append(server)
        try:
            return server.start()
        except ServerStartError as exc:
            if exc.log_path:
                _node_list(request.node, _KEPT_ATTR).append(exc.log_path)
            raise

    yield start
    errors = []
    for server in reversed(servers):
        try:
            server.stop()
        except Exception as exc:  # stop the others first, then report
            errors.append(exc)
    if not getattr(request.node, _FAILED_ATTR, False):  # it expected its failed starts
        for log_path in _node_list(request.node, _KEPT_ATTR):
            remove_kept_log(log_path)
    if errors:
        raise errors[0]


@pytest.fixture
def free_port(request: Any, harness_server_defaults: Dict[str, Any]) -> Iterator[int]:
    """A free port leased to this test (from ``harness_server_defaults["port_range"]``)."""
    from .ports import PortAllocator
    lease = PortAllocator(harness_server_defaults.get("port_range")).acquire()
    try:
        yield lease.port
    finally:
        lease.release()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        setattr(item, _FAILED_ATTR, True)
    servers = getattr(item, _SERVERS_ATTR, None)
    if not servers or not report.failed:
        return
    blocks = [_server_block(server, "test", LOG_TAIL_LINES)
              for server in servers if server.pid is not None]
    if blocks:
        report.sections.append((f"harness: log tail of the servers (last {LOG_TAIL_LINES} "
                                f"lines each)", "\n".join(blocks)))
