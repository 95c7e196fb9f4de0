"""``Service``: a ready-made server (a database, a cache) as a ``ServerProcess``.

A service is a program harness knows how to run: which binaries it needs
and what to install when they are missing, an optional *preparation*
cached per user (PostgreSQL's ``initdb``), its command line, a readiness
probe in its own protocol, and a per-test reset.  Everything else -- the
leased port, the keeper, the orphan guard, the log, the unittest mixin
and the pytest fixtures -- is ``ServerProcess``'s.

The life of a start::

    unavailable()?          missing binary: ServiceUnavailable, before anything starts
    home = private dir      0700, the service user's, removed at stop (and by the
                            zygote if the runner dies)
    data = copy of cache    cache_key() and prepare(path): built once per key
    configure()             files in home/data (PostgreSQL's pg_hba.conf)
    command_line()          the argv; {port}, {host} and {socket} are filled in
    ServerProcess.start()   ready when probe() passes (the service's own protocol)
    started()               what needs the running server (a password, a template)

Write your own by subclassing and overriding those hooks; see
``docs/services.rst``, "Your own service".
"""
from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.parse
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .._config import scaled
from .._server import marker, supervisor
from .._wait import Deadline
from ..checks import Check, Outcome
from ..errors import HarnessError, ServerStartError
from ..process import ServerProcess
from . import _cache

USER_ENV = "HARNESS_SERVICE_USER"
_log = logging.getLogger("harness.services")
_FORBIDDEN = ("app_code", "argv", "target", "args", "kwargs", "preload", "health", "handoff")
Settings = Mapping[str, Union[str, int, float, bool]]


class ServiceUnavailable(ServerStartError):
    """The service's program is not installed (or not the version asked for); the
    message says what to install.  Tests skip with ``server.unavailable()``."""


class ProtocolCheck(Check):
    """Ready when the service's :meth:`Service.probe` passes (its own protocol)."""

    uses_port = True

    def probe(self, server: Any, timeout: float) -> Outcome:
        try:
            ok = server.probe(timeout)
        except Exception as exc:  # "not yet", with its reason counted
            return Outcome(False, _label(exc), str(exc))
        if ok:
            return Outcome(True, f"{type(server).__name__} answered")
        return Outcome(False, "not ready")

    def __repr__(self) -> str:
        return "ProtocolCheck()"


def _label(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, FileNotFoundError):
        return "no socket yet"
    if isinstance(exc, socket.timeout):
        return "timed out"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def check_settings(settings: object, name: str = "settings") -> Dict[str, str]:
    """``settings`` as a dict of str to str (``True`` -> ``on``); a bad one raises now."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise TypeError(f"{name} must be a dict of setting names to values, got {settings!r}")
    out: Dict[str, str] = {}
    for key, value in settings.items():
        if not isinstance(key, str) or not key or any(c in key for c in "\0\n= "):
            raise ValueError(f"{name}: {key!r} is not a setting name")
        if isinstance(value, bool):
            out[key] = "on" if value else "off"
        elif isinstance(value, (str, int, float)):
            text = str(value)
            if "\0" in text or "\n" in text:
                raise ValueError(f"{name}[{key!r}] contains a NUL byte or a newline")
            out[key] = text
        else:
            raise TypeError(f"{name}[{key!r}] must be a str, int, float or bool, got {value!r}")
    return out


class Service(ServerProcess):
    """Base class of ready-made services; see the module docstring for the hooks.

    Keywords are ``ServerProcess``'s (``port``, ``env``, ``start_timeout``,
    ``name``, ``user``, ...) except those that say what to run and how to
    probe it, which the service decides.
    """

    #: The programs the service runs; :meth:`~harness.services.Service.binary` finds them.
    binaries: ClassVar[Tuple[str, ...]] = ()
    #: What to install when one is missing (shown in the error).
    install_hint: ClassVar[str] = ""
    #: True for programs that refuse to run as root: as root they run as
    #: ``$HARNESS_SERVICE_USER`` (default ``nobody``) unless ``user=`` says otherwise.
    refuses_root: ClassVar[bool] = False
    #: Spare copies of the prepared directory kept ready in the cache.
    spares: ClassVar[int] = 0

    def __init__(self, *, settings: Optional[Settings] = None, **server_kwargs: Any) -> None:
        for key in _FORBIDDEN:
            if key in server_kwargs:
                raise TypeError(f"{type(self).__name__}() takes no {key}= (the service decides "
                                f"what it runs and how it is probed)")
        self.settings = check_settings(settings)
        if self.refuses_root and "user" not in server_kwargs and os.geteuid() == 0:
            server_kwargs["user"] = os.environ.get(USER_ENV, "").strip() or "nobody"
        server_kwargs.setdefault("name", type(self).__name__.lower())
        server_kwargs.setdefault("start_timeout", 30.0)
        server_kwargs.setdefault("ready_successes", 1)  # a protocol answer is proof enough
        super().__init__(argv=[self.binaries[0] if self.binaries else "service"],
                         health=ProtocolCheck(), **server_kwargs)
        self.home: Optional[str] = None      # the service's private dir (data, sockets)
        self.data_dir: Optional[str] = None  # home/data: a copy of the prepared dir
        self.took_spare = False              # the data dir was a spare copy (a rename)
        self._located: Optional[Dict[str, str]] = None
        self._service_lock = threading.RLock()
        self._dirs: List[str] = []           # private dirs made for this start

    # ----------------------------------------------------------------------
    # The hooks

    def locate(self) -> Dict[str, str]:
        """Each of :attr:`binaries` -> its path; a missing one is left out."""
        found = {}
        for name in self.binaries:
            path = shutil.which(name)
            if path:
                found[name] = path
        return found

    def cache_key(self) -> Optional[str]:
        """The key of the prepared directory (``None``: nothing to prepare).

        Two services with the same key share the preparation, so put in it
        everything :meth:`prepare` depends on (the program's version, options).
        """
        return None

    def prepare(self, path: str) -> None:
        """Build the prepared directory at ``path`` (empty, the service user's).

        Runs once per :meth:`cache_key` and user cache; each server starts
        from a copy of it (``self.data_dir``).  Run commands with
        :meth:`~harness.services.Service.run`.
        """

    def trim(self, path: str) -> None:
        """Shrink a prepared directory before it is cached (fewer bytes to copy);
        not run when a cold start prepares a server's own directory."""

    def configure(self) -> None:
        """Write what this server needs before it starts (in ``self.home``)."""

    def command_line(self) -> List[str]:
        """The argv (``{port}``, ``{host}``, ``{socket}`` are filled in)."""
        raise NotImplementedError

    def probe(self, timeout: float) -> bool:
        """One readiness probe in the service's protocol, within ``timeout`` seconds:
        True when ready; False or an exception when not yet (its message is counted)."""
        raise NotImplementedError

    def started(self) -> None:
        """After readiness: what needs the running server (a password, a template)."""

    def reset(self) -> None:
        """Empty the service for the next test."""
        raise NotImplementedError(f"{type(self).__name__} has no reset")

    def stopping(self) -> None:
        """Before the process is stopped (background work ends here)."""

    # ----------------------------------------------------------------------
    # Helpers

    def binary(self, name: str) -> str:
        """The path of the program ``name`` (one of :attr:`binaries`), as :meth:`locate`
        found it; :class:`ServiceUnavailable` if it is not there."""
        located = self._located if self._located is not None else self.locate()
        if name not in located:
            raise ServiceUnavailable(self.unavailable() or f"{name} not found")
        return located[name]

    def unavailable(self) -> Optional[str]:
        """Why this service cannot start here (what to install), or ``None``."""
        located = self.locate()
        missing = [name for name in self.binaries if name not in located]
        if not missing:
            self._located = located
            return None
        return (f"{type(self).__name__} cannot start: {', '.join(missing)} not found "
                f"({self.where_looked()}); install it: {self.install_hint}")

    def where_looked(self) -> str:
        """Where :meth:`locate` looked, for the message of a missing program."""
        return "on PATH"

    def run(self, argv: Sequence[str], *, timeout: float = 120.0,
            env: Optional[Mapping[str, str]] = None) -> str:
        """Run a preparation command as the service's user; its output, or an error
        that shows it."""
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.pop("PGDATA", None)
        try:
            done: "subprocess.CompletedProcess[bytes]" = subprocess.run(
                list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=full_env, cwd="/", timeout=scaled(timeout),
                **self._as_user())
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServerStartError(f"{type(self).__name__}: could not run {argv[0]}: {exc}") \
                from None
        output = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            raise ServerStartError(
                f"{type(self).__name__}: {' '.join(argv)} failed (exit code "
                f"{done.returncode}):\n" + "\n".join("    " + line for line in
                                                     output.splitlines()[-20:]),
                returncode=done.returncode, log_tail=output)
        return output

    def _as_user(self) -> Dict[str, Any]:
        """``subprocess`` arguments that run a command as the service's user.  Its own
        ``user=``/``group=`` (3.9+, done in C): a ``preexec_fn`` is refused once the
        interpreter exits (3.12+), when a cache build may still be finishing."""
        uid, gid = self.spec.uid, self.spec.gid
        if uid is None:
            return {}
        group = uid if gid is None else gid
        if sys.version_info >= (3, 9):
            return {"user": uid, "group": group, "extra_groups": []}

        def preexec() -> None:
            os.setgroups([])
            os.setgid(group)
            os.setuid(uid)
        return {"preexec_fn": preexec}

    def private_dir(self, base: Optional[str] = None) -> str:
        """A new private dir for the service's user (in ``base``, default the temp
        dir), removed at stop, and by the zygote if the runner dies."""
        path = marker.make_private_dir(base or marker.base_for(self.spec.uid, self.spec.gid))
        supervisor.register_dir(path)
        self._dirs.append(path)
        marker.give_to(path, self.spec.uid, self.spec.gid)  # (its owner file stays ours)
        return path

    # ----------------------------------------------------------------------
    # Start

    def start(self) -> "Service":
        __tracebackhide__ = True
        with self._service_lock:
            if self.running:
                return self
            reason = self.unavailable()
            if reason:
                raise ServiceUnavailable(reason)
            try:
                self.home = self.private_dir()
                self._make_data()
                self.configure()
                argv = [str(item) for item in self.command_line()]
                self.spec = dataclasses.replace(self.spec, argv=tuple(argv))
                ServerProcess.start(self)
                self.started()
            except BaseException:
                self._stop_quietly()
                raise
            self._after_start()
            return self

    def _make_data(self) -> None:
        key = self.cache_key()
        if key is None:
            return
        assert self.home is not None
        entry = _cache.Entry(key)
        dest = os.path.join(self.home, "data")
        if not entry.exists():
            lock = entry.try_lock()
            if lock is None:  # another process builds it: wait for it
                lock = entry.lock(Deadline(scaled(300.0)))
            entry.unlock(lock)
            if not entry.exists():
                # Cold: prepare this server's own directory now, and the cache after
                # the start, in the background (not on this start's path).
                os.mkdir(dest, 0o700)
                _cache.chown_tree(dest, self.spec.uid, self.spec.gid)
                self.prepare(dest)
                self.data_dir, self.took_spare = dest, False
                return
        self.took_spare = entry.take_copy(dest)
        _cache.chown_tree(dest, self.spec.uid, self.spec.gid)
        self.data_dir = dest

    def _after_start(self) -> None:
        """Fill the cache (cold start) and its spares, off the start's path."""
        key = self.cache_key()
        if key is None:
            return
        entry = _cache.Entry(key)
        if entry.exists():
            entry.refill(self.spares, self.spec.uid, self.spec.gid)
            return
        thread = threading.Thread(target=self._build_cache, args=(entry,), daemon=True,
                                  name=f"harness-prepare-{key}")
        if not _builds:
            # Registered after the safety net's handler, so it runs before the
            # zygote closes (which removes the build's temp dir).
            atexit.register(wait_background, scaled(120.0))
        thread.start()
        _builds.append(thread)

    def _build_cache(self, entry: _cache.Entry) -> None:
        try:
            lock = entry.lock(Deadline(scaled(300.0)))
        except HarnessError as exc:
            _log.warning("%s", exc)
            return
        temp = None
        try:
            if not entry.exists():
                temp = marker.make_private_dir(marker.base_for(self.spec.uid, self.spec.gid))
                supervisor.register_dir(temp)
                _cache.chown_tree(temp, self.spec.uid, self.spec.gid)
                built = os.path.join(temp, "prepared")
                os.mkdir(built, 0o700)
                _cache.chown_tree(built, self.spec.uid, self.spec.gid)
                self.prepare(built)
                self.trim(built)
                entry.install(built)
                _log.info("%s: prepared %s", type(self).__name__, entry.ready)
        except Exception as exc:
            _log.warning("%s: could not fill the cache %s: %s", type(self).__name__,
                         entry.dir, exc)
        finally:
            if temp is not None:
                shutil.rmtree(temp, ignore_errors=True)
                supervisor.register_dir(temp, add=False)
            entry.unlock(lock)
        entry.refill(self.spares, self.spec.uid, self.spec.gid)

    # ----------------------------------------------------------------------
    # Stop

    def stop(self) -> Optional[int]:
        """Stop the service and remove its private dir (data, sockets); idempotent."""
        if self._owned_elsewhere():  # a forked child: the data is its parent's server's
            return ServerProcess.stop(self)
        with self._service_lock:
            try:
                self.stopping()
            finally:
                try:
                    code = ServerProcess.stop(self)
                finally:
                    self._remove_home()
            return code

    def _stop_quietly(self) -> None:
        try:
            self.stopping()
        except Exception:
            pass
        try:
            ServerProcess.stop(self)
        except Exception:
            pass
        self._remove_home()

    def _remove_home(self) -> None:
        self.home = self.data_dir = None
        dirs, self._dirs = self._dirs, []
        for path in dirs:
            _cache.remove_later(path)  # renamed now, deleted in the background

    def __enter__(self) -> "Service":
        __tracebackhide__ = True
        return self.start()

    @property
    def where(self) -> str:
        """Its URL with the password left out (this goes into logs, errors and ``repr``)."""
        return redacted(self.url)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} pid={self.pid} {self.where} {self.state}>"


def redacted(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{name}:***@{host}"))


_builds: List[threading.Thread] = []


def wait_background(timeout: float = 60.0) -> None:
    """Wait for cache builds and spare copies running in the background (benchmarks, tests)."""
    deadline = Deadline(timeout)
    for thread in list(_builds):
        thread.join(deadline.remaining())
    _cache.wait_refills(deadline.remaining())


__all__ = ["Service", "ServiceUnavailable", "ProtocolCheck", "check_settings", "USER_ENV",
           "wait_background"]
