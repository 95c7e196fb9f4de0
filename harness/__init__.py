"""harness: integration tests that start real servers, fast and never flaky.

Everything a test needs is importable from here; the manual is ``docs/``
(https://server-harness.readthedocs.io/).  Importing harness starts nothing
and installs nothing: the safety net (atexit and signal handlers) goes up
when the first server starts.
"""
from __future__ import annotations

from .checks import AllChecks, HttpCheck, LogCheck, TcpCheck, wait_until
from .errors import (
    HarnessError,
    MemoryUnavailable,
    PortUnavailable,
    RequestFailed,
    ResponseInvalid,
    ServerNotReady,
    ServerStartError,
    WaitTimeout,
)
from .http import LoadResult, Response, RetryPolicy, load, request
from .memory import LeakReport, measure_leak, rss, uss
from .ports import (
    PortAllocator,
    PortLease,
    find_free_port,
    is_port_free,
    listening_socket,
    release_port,
)
from .process import ServerProcess, start_server
from .testcase import ServerTestCase, ServerTestMixin

__version__ = "0.3.0.dev0"

__all__ = [
    # errors
    "HarnessError", "PortUnavailable", "ServerStartError", "ServerNotReady",
    "RequestFailed", "ResponseInvalid", "MemoryUnavailable", "WaitTimeout",
    # ports
    "PortAllocator", "PortLease", "find_free_port", "release_port", "is_port_free",
    "listening_socket",
    # servers
    "ServerProcess", "start_server", "HttpCheck", "TcpCheck", "LogCheck", "AllChecks",
    "wait_until",
    # talking to servers
    "request", "RetryPolicy", "Response", "load", "LoadResult",
    # memory
    "rss", "uss", "measure_leak", "LeakReport",
    # unittest
    "ServerTestMixin", "ServerTestCase",
]
