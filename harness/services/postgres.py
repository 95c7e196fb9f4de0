"""``Postgres``: a PostgreSQL server of its own for a test, ready in tens of milliseconds.

* ``initdb`` runs once per (version, options) into the per-user cache
  (``HARNESS_CACHE_DIR``); each server starts from a copy of that cluster,
  usually a spare copy made in the background and taken by a rename.
* Readiness is a session that reaches ReadyForQuery (:mod:`._pgwire`),
  through the server's Unix socket in its private dir.
* No one else gets in: TCP asks for a random password per server
  (SCRAM-SHA-256 by default, ``auth=``); the Unix socket is in a 0700 dir
  and, when the server runs as another user than the runner, admits only
  the runner's user (``peer`` authentication mapped to ``postgres``).
* As root it runs as ``nobody`` (``HARNESS_SERVICE_USER``, ``user=``):
  PostgreSQL refuses root.
* ``fresh_database()`` hands out a database created ahead of time by a
  background thread (from ``template0``, or from the template ``setup=``
  filled once); it is dropped in the background when the test ends.
* Stop is PostgreSQL's fast shutdown (SIGINT, also what the keeper sends if
  the runner dies); ``dynamic_shared_memory_type=mmap`` keeps shared memory
  in the data dir, so nothing is left in /dev/shm or ``ipcs``.
"""
from __future__ import annotations

import glob
import hashlib
import itertools
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .. import _runner, _validate
from .._config import scaled
from .._wait import Deadline
from ..errors import HarnessError
from . import _pgwire
from ._base import Service, Settings, check_settings

_log = logging.getLogger("harness.services")
SUPERUSER = "postgres"
TEMPLATE = "harness_template"
AUTH_METHODS = ("scram-sha-256", "md5", "password", "trust")
# The secret is 128 random bits: key stretching adds nothing to it, and every
# psycopg connection would pay 4096 PBKDF2 rounds (a few ms) for nothing.
SCRAM_ITERATIONS = 16
INITDB_OPTIONS = ("-U", SUPERUSER, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C",
                  "--wal-segsize=1")
# Settings for a disposable server: no durability (the data dies with the
# test), little memory, nothing in /dev/shm, no background work.
DEFAULT_SETTINGS = {
    "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
    "wal_level": "minimal", "max_wal_senders": "0", "autovacuum": "off",
    "dynamic_shared_memory_type": "mmap", "shared_buffers": "32MB",
    "logging_collector": "off", "log_checkpoints": "off",
    "unix_socket_permissions": "0700", "max_connections": "50",
}
# Fresh databases go to a tablespace in memory where there is room: on a disk
# CREATE DATABASE (a copy of 7.5 MB in some 300 files, and two checkpoints)
# took 160-200 ms on a loaded machine, in memory 15-18 ms.
TABLESPACE = "harness_memory"
MEMORY_BASE = "/dev/shm"
MEMORY_ROOM = 1 << 30
SetupSpec = Union[None, str, "os.PathLike[str]", Callable[["Database"], Any]]
_versions: Dict[str, Tuple[int, str]] = {}  # postgres binary -> (major, --version text)


def _version_of(postgres: str) -> Optional[Tuple[int, str]]:
    if postgres not in _versions:
        try:
            out = subprocess.run([postgres, "--version"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, timeout=10).stdout.decode()
        except (OSError, subprocess.TimeoutExpired):
            return None
        match = re.search(r"\(PostgreSQL\) (\d+)", out)
        if not match:
            return None
        _versions[postgres] = (int(match.group(1)), out.strip())
    return _versions[postgres]


_candidates: Dict[Tuple[str, str], List[str]] = {}


def _candidate_dirs() -> List[str]:
    """Where PostgreSQL's programs may be: pg_config's bindir, Debian's
    versioned dirs (newest first), PATH (looked up once per PATH)."""
    key = (os.environ.get("PATH", ""), shutil.which("pg_config") or "")
    if key not in _candidates:
        _candidates[key] = _find_dirs()
    return _candidates[key]


def _find_dirs() -> List[str]:
    dirs: List[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, timeout=10).stdout.decode().strip()
            if out:
                dirs.append(out)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def major(path: str) -> float:
        try:
            return float(path.rstrip("/").split("/")[-2])
        except ValueError:
            return 0.0
    dirs += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)
    dirs += sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)
    on_path = shutil.which("postgres")
    if on_path:
        dirs.append(os.path.dirname(os.path.realpath(on_path)))
    seen: List[str] = []
    for path in dirs:
        real = os.path.realpath(path)
        if real not in seen:
            seen.append(real)
    return seen


class Database:
    """A database of a :class:`Postgres` server: ``name``, ``dsn``, ``url``.

    One from ``fresh_database()`` is dropped when the test that made it
    ends (or at the server's ``stop()``, or by ``drop()`` / ``with``).
    """

    def __init__(self, server: "Postgres", name: str, owned: bool = True) -> None:
        self.server = server
        self.name = name
        self.dropped = False
        self._owned = owned

    @property
    def dsn(self) -> str:
        """A libpq keyword string for this database (psycopg takes it)."""
        return self.server.dsn_for(self.name)

    @property
    def url(self) -> str:
        """``postgresql://postgres:SECRET@HOST:PORT/NAME`` for this database."""
        return self.server.url_for(self.name)

    def query(self, sql: str) -> List[_pgwire.Row]:
        """``Postgres.query`` in this database."""
        return self.server.query(sql, database=self.name)

    def drop(self) -> None:
        """Drop it now (in the background); idempotent."""
        if self.dropped or not self._owned:
            return
        self.dropped = True
        self.server._drop(self.name)

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop()

    def __repr__(self) -> str:
        return f"<Database {self.name!r} of {self.server.name!r}>"


class _Pool:
    """Databases created ahead of the tests, and dropped after them, by one thread."""

    def __init__(self, connect: Callable[[], _pgwire.Connection], template: str, ahead: int,
                 prefix: str) -> None:
        self.connect = connect
        self.template = template
        self.ahead = ahead
        self.prefix = prefix
        self.cond = threading.Condition()
        self.ready: List[str] = []
        self.drops: List[str] = []
        self.waiting = 0
        self.closed = False
        self.error: Optional[BaseException] = None
        self.counter = itertools.count(1)
        self.force = ""
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"harness-{prefix}")
        self.thread.start()

    def take(self, timeout: float) -> str:
        deadline = Deadline(timeout)
        with self.cond:
            self.waiting += 1
            self.cond.notify_all()
            try:
                while not self.ready and self.error is None and not self.closed:
                    if deadline.expired:
                        raise HarnessError(f"no fresh database within {timeout:.0f} s: the "
                                           f"server is overloaded or stuck")
                    self.cond.wait(deadline.remaining())
            finally:
                self.waiting -= 1
            if self.error is not None:
                raise HarnessError(f"could not create a fresh database: {self.error}")
            if self.closed:
                raise HarnessError("the server is stopping: no fresh database")
            name = self.ready.pop(0)
            self.cond.notify_all()
            return name

    def drop(self, name: str) -> None:
        with self.cond:
            if not self.closed:
                self.drops.append(name)
                self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.thread.join(scaled(30.0))

    def _run(self) -> None:
        try:
            connection = self.connect()
        except BaseException as exc:
            with self.cond:
                self.error = exc
                self.cond.notify_all()
            return
        try:
            major = int(connection.parameters.get("server_version", "0").split(".")[0] or 0)
            self.force = " WITH (FORCE)" if major >= 13 else ""  # a test's leftover sessions
            while True:
                with self.cond:
                    while not self.closed and not self.drops \
                            and len(self.ready) >= max(self.ahead, self.waiting):
                        self.cond.wait()
                    if self.closed:
                        return
                    make = len(self.ready) < max(self.ahead, self.waiting)
                    drop = None if make else self.drops.pop(0)
                if make:
                    name = f"{self.prefix}{next(self.counter)}"
                    connection.query(f"CREATE DATABASE {_pgwire.quote_ident(name)} TEMPLATE "
                                     f"{self.template}")
                    with self.cond:
                        self.ready.append(name)
                        self.cond.notify_all()
                elif drop is not None:
                    try:
                        connection.query(f"DROP DATABASE IF EXISTS "
                                         f"{_pgwire.quote_ident(drop)}{self.force}")
                    except _pgwire.PgError as exc:
                        _log.warning("could not drop database %s: %s", drop, exc)
        except BaseException as exc:
            with self.cond:
                if not self.closed:
                    self.error = exc
                self.cond.notify_all()
        finally:
            connection.close()


class Postgres(Service):
    """A PostgreSQL server; see the module docstring and ``docs/services.rst``.

    ``version``: the major version to run (``15``), among those installed
    (``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``, PATH); ``None``:
    pg_config's, else the newest.  ``settings``: server parameters
    (``{"work_mem": "8MB"}``) over harness's defaults for a disposable
    server.  ``setup``: an SQL file or a callable ``setup(database)`` run
    once into the template of ``fresh_database()``.  ``auth``: how TCP
    clients authenticate (``scram-sha-256``, ``md5``, ``password``, or
    ``trust``: then any local user can connect).  ``databases_ahead``: how
    many fresh databases are kept ready.
    """

    binaries = ("postgres", "initdb")
    install_hint = ("apt-get install postgresql (Debian, Ubuntu); dnf install postgresql-server "
                    "(Fedora); brew install postgresql (macOS)")
    refuses_root = True
    spares = 2

    def __init__(self, *, version: Optional[Union[int, str]] = None,
                 settings: Optional[Settings] = None, setup: SetupSpec = None,
                 auth: str = "scram-sha-256", databases_ahead: int = 2,
                 databases_in_memory: Optional[bool] = None,
                 **server_kwargs: Any) -> None:
        if version is not None and (isinstance(version, bool) or not isinstance(
                version, (int, str)) or not re.fullmatch(r"\d+", str(version))):
            raise ValueError(f"version must be a major version such as 15, got {version!r}")
        if auth not in AUTH_METHODS:
            raise ValueError(f"auth must be one of {', '.join(AUTH_METHODS)}, got {auth!r}")
        _validate.whole(databases_ahead, "databases_ahead", at_least=0)
        if databases_in_memory not in (None, True, False):
            raise TypeError(f"databases_in_memory must be None (where there is room), True or "
                            f"False, got {databases_in_memory!r}")
        self.setup = _checked_setup(setup)
        server_kwargs.setdefault("stop_signal", signal.SIGINT)  # fast shutdown
        check_settings(settings)  # its errors name settings=, before anything else
        super().__init__(settings=settings, **server_kwargs)
        self.version = int(version) if version is not None else None
        self.auth = auth
        self.databases_ahead = databases_ahead
        self.databases_in_memory = databases_in_memory
        self.memory_dir: Optional[str] = None  # the fresh databases' tablespace, on tmpfs
        self.secret = secrets.token_hex(16)
        self.bindir: Optional[str] = None
        self.server_version = ""
        self._pool: Optional[_Pool] = None
        self._template = "template0"
        self._databases: List[Database] = []
        self._probed: Optional[_pgwire.Connection] = None

    # ----------------------------------------------------------------------
    # Where, what

    def locate(self) -> Dict[str, str]:
        for directory in _candidate_dirs():
            postgres = os.path.join(directory, "postgres")
            initdb = os.path.join(directory, "initdb")
            if not (os.access(postgres, os.X_OK) and os.access(initdb, os.X_OK)):
                continue
            found = _version_of(postgres)
            if found is None or (self.version is not None and found[0] != self.version):
                continue
            self.bindir, self.server_version = directory, found[1]
            return {"postgres": postgres, "initdb": initdb}
        return {}

    def where_looked(self) -> str:
        """Where the PostgreSQL programs were looked for, and the versions installed."""
        which = f"PostgreSQL {self.version}" if self.version is not None else "PostgreSQL"
        return (f"no {which} in pg_config --bindir, /usr/lib/postgresql/*/bin or PATH; "
                f"installed: {', '.join(_installed()) or 'none'}")

    @property
    def major(self) -> int:
        """The major version of the PostgreSQL that runs (``15``)."""
        found = _version_of(self.binary("postgres"))
        return found[0] if found else 0

    def cache_key(self) -> str:
        postgres = self.binary("postgres")
        text = "\0".join((os.path.realpath(postgres), self.server_version) + INITDB_OPTIONS)
        return f"postgres-{self.major}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    def prepare(self, path: str) -> None:
        options = list(INITDB_OPTIONS) + (["--no-instructions"] if self.major >= 14 else [])
        self.run([self.binary("initdb"), "-D", path] + options)

    def trim(self, path: str) -> None:
        resetwal = os.path.join(os.path.dirname(self.binary("postgres")), "pg_resetwal")
        if os.access(resetwal, os.X_OK):
            self.run([resetwal, "-D", path])  # a clean cluster's WAL, down to one segment

    def configure(self) -> None:
        assert self.data_dir is not None
        local = "trust"  # the socket's dir is the runner's alone
        if self.spec.uid is not None:
            # The dir is the server user's: admit only the runner's user through it.
            try:
                runner = pwd.getpwuid(os.geteuid()).pw_name
            except KeyError:
                runner = None
            if runner is not None:
                local = "peer map=harness"
                _write(os.path.join(self.data_dir, "pg_ident.conf"),
                       f"harness {runner} {SUPERUSER}\n", self.spec.uid, self.spec.gid)
        _write(os.path.join(self.data_dir, "pg_hba.conf"),
               f"local all all {local}\n"
               f"host all all 127.0.0.1/32 {self.auth}\n"
               f"host all all ::1/128 {self.auth}\n", self.spec.uid, self.spec.gid)

        self.memory_dir = None
        if self.databases_in_memory is not False:
            base = _memory_base()
            if base is not None:
                self.memory_dir = self.private_dir(base)
            elif self.databases_in_memory:
                raise HarnessError(f"databases_in_memory=True: no tmpfs with room at "
                                   f"{MEMORY_BASE} ({MEMORY_ROOM >> 20} MiB free needed)")

    def command_line(self) -> List[str]:
        assert self.data_dir is not None and self.home is not None
        argv = [self.binary("postgres"), "-D", self.data_dir, "-p", "{port}", "-h", "{host}",
                "-k", self.home]
        for key, value in dict(DEFAULT_SETTINGS, **self.settings).items():
            argv += ["-c", f"{key}={value}"]
        return argv

    # ----------------------------------------------------------------------
    # Talking

    @property
    def socket_dir(self) -> Optional[str]:
        """The private directory of its Unix socket (``host`` for a local libpq connection)."""
        return self.home

    def _local(self, database: str = "postgres", timeout: float = 10.0) -> _pgwire.Connection:
        """A session through the Unix socket (no password: the dir is private)."""
        assert self.home is not None and self.port is not None
        path = os.path.join(self.home, f".s.PGSQL.{self.port}")
        return _pgwire.connect(unix_path=path, user=SUPERUSER, database=database,
                               timeout=timeout)

    def probe(self, timeout: float) -> bool:
        connection = self._local("template1", timeout)
        if self._probed is not None:
            self._probed.close()
        self._probed = connection  # started() goes on in this session
        return True

    def query(self, sql: str, database: str = "postgres",
              timeout: float = 60.0) -> List[_pgwire.Row]:
        """Run ``sql`` as the superuser over TCP, authenticated as a client would be;
        the rows (of its last statement that has rows) as tuples of str or None.

        Errors are :class:`harness.services.PgError` with PostgreSQL's message.
        """
        if self.port is None or not self.running:
            raise HarnessError(f"{self.name!r} is not running; start() it first")
        connection = _pgwire.connect(host=self.host, port=self.port, user=SUPERUSER,
                                     database=database, timeout=scaled(10.0),
                                     password=None if self.auth == "trust" else self.secret)
        try:
            return connection.query(sql, timeout=scaled(timeout))
        finally:
            connection.close()

    def dsn_for(self, database: str) -> str:
        """:attr:`dsn` for another database of this server."""
        password = "" if self.auth == "trust" else f" password={self.secret}"
        return f"host={self.host} port={self.port} user={SUPERUSER}{password} dbname={database}"

    def url_for(self, database: str) -> str:
        """:attr:`url` for another database of this server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        password = "" if self.auth == "trust" else f":{self.secret}"
        return f"postgresql://{SUPERUSER}{password}@{host}:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        """A libpq keyword string for the ``postgres`` database (psycopg takes it)."""
        return self.dsn_for("postgres")

    @property
    def url(self) -> str:
        """``postgresql://postgres:SECRET@HOST:PORT/postgres`` (the secret is this server's)."""
        return self.url_for("postgres")

    # ----------------------------------------------------------------------
    # Lifecycle

    def started(self) -> None:
        connection, self._probed = self._probed, None
        if connection is None:
            connection = self._local("template1")
        try:
            if self.auth in ("scram-sha-256", "password"):
                secret = _pgwire.scram_secret(self.secret, SCRAM_ITERATIONS)
            else:
                secret = _pgwire.md5_secret(self.secret, SUPERUSER)
            connection.query(f"ALTER ROLE {SUPERUSER} PASSWORD {_pgwire.quote_literal(secret)}")
            space = ""
            if self.memory_dir is not None:
                connection.query(f"CREATE TABLESPACE {TABLESPACE} LOCATION "
                                 f"{_pgwire.quote_literal(self.memory_dir)}")
                space = f" TABLESPACE {TABLESPACE}"
            if self.setup is not None:
                connection.query(f"CREATE DATABASE {TEMPLATE} TEMPLATE template0{space}")
        finally:
            connection.close()
        if self.setup is not None:
            self._fill_template()
            self._template = TEMPLATE
        else:
            self._template = "template0"
        options = " STRATEGY FILE_COPY" if self.major >= 15 else ""  # faster here than WAL_LOG
        if self.memory_dir is not None:
            options += f" TABLESPACE {TABLESPACE}"
        self._pool = _Pool(lambda: self._local("template1"), self._template + options,
                           self.databases_ahead, "test_")

    def _fill_template(self) -> None:
        template = Database(self, TEMPLATE, owned=False)
        if callable(self.setup):
            self.setup(template)
        else:
            with open(self.setup, encoding="utf-8") as f:  # type: ignore[arg-type]
                sql = f.read()
            connection = self._local(TEMPLATE)
            try:
                connection.query(sql, timeout=scaled(300.0))
            finally:
                connection.close()
        connection = self._local("template1")
        try:
            # Sessions the setup left open would make every copy wait, then fail.
            connection.query(f"ALTER DATABASE {TEMPLATE} WITH ALLOW_CONNECTIONS false; "
                             f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             f"WHERE datname = '{TEMPLATE}'")
        finally:
            connection.close()

    def fresh_database(self) -> Database:
        """A new database for this test: empty, or a copy of the ``setup=`` template.

        Made ahead of time in the background, so this costs the test next to
        nothing; dropped (in the background) when the test ends, at
        ``stop()``, or by ``drop()`` / leaving its ``with`` block.
        """
        if self._pool is None or not self.running:
            raise HarnessError(f"{self.name!r} is not running; start() it first")
        database = Database(self, self._pool.take(scaled(60.0)))
        scope = _runner.current_scope()
        if scope is not None:  # (a drop by hand first makes the test's end a no-op)
            scope.add(database.drop)
        self._databases.append(database)
        return database

    def _drop(self, name: str) -> None:
        if self._pool is not None:
            self._pool.drop(name)

    def reset(self) -> None:
        """Drop every fresh database handed out so far."""
        for database in self._databases:
            database.drop()
        self._databases = []

    def stopping(self) -> None:
        if self._probed is not None:
            self._probed.close()
            self._probed = None
        pool, self._pool = self._pool, None
        for database in self._databases:
            database.dropped = True  # they go with the server (a scope's drop: a no-op)
        self._databases = []
        if pool is not None:
            pool.close()


def _memory_base() -> Optional[str]:
    """/dev/shm if it is a tmpfs with room for the fresh databases, else ``None``."""
    try:
        with open("/proc/mounts") as f:
            mounted = any(line.split()[1:3] == [MEMORY_BASE, "tmpfs"] for line in f)
        room = os.statvfs(MEMORY_BASE)
    except (OSError, IndexError):
        return None
    if not mounted or room.f_bavail * room.f_frsize < MEMORY_ROOM \
            or not os.access(MEMORY_BASE, os.W_OK | os.X_OK):
        return None
    return MEMORY_BASE


def _checked_setup(setup: object) -> SetupSpec:
    if setup is None or callable(setup):
        return setup
    path = _validate.path(setup, "setup", "an SQL file's path or a callable taking the "
                                          "template Database")
    if not os.path.isfile(path):
        raise ValueError(f"setup: no such SQL file: {path!r}")
    return str(path)


def _write(path: str, text: str, uid: Optional[int], gid: Optional[int]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    if uid is not None:
        os.chown(path, uid, -1 if gid is None else gid)


def _installed() -> List[str]:
    out = []
    for directory in _candidate_dirs():
        found = _version_of(os.path.join(directory, "postgres"))
        if found:
            out.append(f"{found[0]} ({directory})")
    return out


__all__ = ["Postgres", "Database"]
