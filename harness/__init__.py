"""harness: integration tests that start real servers, fast and never flaky."""
from __future__ import annotations

from .errors import (HarnessError, PortUnavailable, RequestFailed, ResponseInvalid,
                     ServerNotReady, ServerStartError)
from .ports import (PortAllocator, PortLease, find_free_port, is_port_free,
                    listening_socket, release_port)

__version__ = "0.1.0"

__all__ = [
    "HarnessError", "PortUnavailable", "ServerStartError", "ServerNotReady",
    "RequestFailed", "ResponseInvalid",
    "PortAllocator", "PortLease", "find_free_port", "release_port", "is_port_free",
    "listening_socket",
]
