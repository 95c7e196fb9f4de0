"""Ready-made services for integration tests: PostgreSQL, Redis, memcached.

Each is a :class:`harness.ServerProcess` (start/stop, ``with``, the
unittest mixin and pytest fixtures work as for any server), constructible
with no arguments, with ``host``, ``port`` and ``url``::

    from harness.services import Postgres

    with Postgres() as pg:
        db = pg.fresh_database()          # made ahead of time: ~0 ms
        db.query("CREATE TABLE t (x int)")

:class:`Service` is the base to write your own; see ``docs/services.rst``.
"""
from __future__ import annotations

from ._base import ProtocolCheck, Service, ServiceUnavailable, wait_background
from ._cache import CACHE_ENV, cache_root
from ._pgwire import PgError
from .memcached import Memcached
from .postgres import Database, Postgres
from .redis import Redis, RedisError

__all__ = ["Service", "ServiceUnavailable", "ProtocolCheck", "Postgres", "Database", "PgError",
           "Redis", "RedisError", "Memcached", "CACHE_ENV", "cache_root", "wait_background"]
