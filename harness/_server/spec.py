"""``ServerSpec``: the arguments of a ``ServerProcess``, checked before anything starts.

Every mistake is a ``TypeError`` or ``ValueError`` that names the argument,
raised by :meth:`ServerSpec.checked` -- before a port is leased, a
directory made or a process started -- so a bad call leaves nothing to
clean up.  The result is frozen: a server's configuration does not change
under it.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import pickle
import re
import signal
import ssl
import sys
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from .. import _http_wire, _validate
from .._os.users import describe_user
from ..checks import Check, TcpCheck, as_check
from .address import SUN_PATH_LIMIT
from .protocol import Kind

PathLike = Union[str, "os.PathLike[str]"]
Verify = Union[bool, str, ssl.SSLContext]
_KINDS: Dict[str, Kind] = {"app_code": "app", "argv": "argv", "target": "target"}
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """What to run and how; see ``ServerProcess`` for the meaning of each field."""

    kind: Kind                      # "app" (app_code), "argv" or "target"
    app_code: Optional[str]
    argv: Optional[Tuple[str, ...]]
    target: Optional[Callable[..., Any]]
    payload: Optional[bytes]        # pickle of (target, args, kwargs)
    target_module: Optional[str]
    main_path: Optional[str]        # the file of a target defined in __main__
    preload: Optional[Tuple[str, ...]]
    host: str
    port: Optional[int]
    port_range: Optional[Tuple[int, int]]
    handoff: bool
    unix_socket: bool
    socket_path: Optional[str]      # the test's own Unix socket path (unix_socket=PATH)
    env: Dict[str, Optional[str]]
    cwd: Optional[str]
    check: Check
    ready_successes: int
    start_timeout: float
    stop_timeout: float
    name: str
    https: bool
    verify: Verify
    listens: Optional[bool]         # None: where it listens is found out; False: no port
    uid: Optional[int] = None       # user=: run the server as this uid (and gid), root only
    gid: Optional[int] = None
    stop_signal: int = signal.SIGTERM  # the first signal of a stop (and of an orphan's end)

    @property
    def uses_port(self) -> bool:
        """The server listens on a TCP port of ours (not a Unix socket, not nothing)."""
        return self.listens is not False and not self.unix_socket

    @classmethod
    def checked(cls, arguments: Mapping[str, Any]) -> "ServerSpec":
        """The spec of ``ServerProcess(**arguments)``: every argument by name, its
        signature's defaults filled in (the defaults are written there alone)."""
        program = _checked_program(arguments)
        kind = program["kind"]
        for flag in ("handoff", "https"):
            _validate.flag(arguments[flag], flag)
        address = _checked_address(arguments, program["argv"])
        check = as_check(arguments["health"])
        if arguments["listens"] is False and check.uses_port:
            raise ValueError(f"health={check!r} talks to the server's port, but listens=False "
                             f"says it has none: use a LogCheck or a callable")
        successes = arguments["ready_successes"]
        if successes is None:
            # Under handoff a TcpCheck proves the server took the connection
            # (accept() ran): one pass says all two would.  Elsewhere two
            # passes in a row rule out a server that answers once, then fails.
            successes = 1 if arguments["handoff"] and isinstance(check, TcpCheck) else 2
        name = arguments["name"]
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        uid, gid = _checked_user(arguments["user"])
        argv = program["argv"]
        default_name = {"app": "app", "argv": os.path.basename(argv[0]) if argv else "server",
                        "target": getattr(arguments["target"], "__name__", "target")}[kind]
        return cls(
            **program, **address, handoff=arguments["handoff"],
            env=_checked_env(arguments["env"]), cwd=_checked_cwd(arguments["cwd"]),
            check=check,
            ready_successes=_validate.whole(successes, "ready_successes"),
            start_timeout=_validate.seconds(arguments["start_timeout"], "start_timeout"),
            stop_timeout=_validate.seconds(arguments["stop_timeout"], "stop_timeout"),
            name=name or default_name, https=arguments["https"],
            verify=_checked_verify(arguments["verify"]), uid=uid, gid=gid,
            stop_signal=_checked_signal(arguments["stop_signal"]))


def _checked_program(arguments: Mapping[str, Any]) -> Dict[str, Any]:
    """What to run: exactly one of app_code, argv and target (with args and kwargs)."""
    app_code, argv, target = arguments["app_code"], arguments["argv"], arguments["target"]
    given = [what for what, value in (("app_code", app_code), ("argv", argv),
                                      ("target", target)) if value is not None]
    if len(given) != 1:
        got = "neither" if not given else "both " + " and ".join(given) if len(given) == 2 \
            else "all three"
        raise ValueError("give exactly one of app_code (Python source), argv (a command "
                         "list) or target (a function to run), got " + got)
    kind = _KINDS[given[0]]
    if app_code is not None:
        _check_app_code(app_code)
    argv_tuple = _checked_argv(argv) if argv is not None else None
    payload = target_module = main_path = None
    if target is not None:
        payload, target_module, main_path = _checked_target(target, arguments["args"],
                                                            arguments["kwargs"])
    elif arguments["args"] or arguments["kwargs"]:
        raise ValueError("args and kwargs go with target=; app_code and argv servers get "
                         "their settings through env= (or argv items)")
    return {"kind": kind, "app_code": app_code, "argv": argv_tuple, "target": target,
            "payload": payload, "target_module": target_module, "main_path": main_path,
            "preload": _checked_preload(arguments["preload"], kind)}


def _checked_address(arguments: Mapping[str, Any],
                     argv: Optional[Tuple[str, ...]]) -> Dict[str, Any]:
    """Where it listens: host, port or port_range, unix_socket, listens."""
    listens, port, port_range = arguments["listens"], arguments["port"], arguments["port_range"]
    if listens is not None:
        _validate.flag(listens, "listens")
    unix_socket = arguments["unix_socket"]
    socket_path = _checked_socket_path(unix_socket)
    unix_socket = unix_socket is not False
    if unix_socket and (port is not None or port_range is not None):
        raise ValueError("a unix_socket server has no TCP port: give port/port_range "
                         "or unix_socket, not both")
    if listens is False:
        _check_without_port(port, port_range, arguments["handoff"], unix_socket, argv)
    host = _checked_host(arguments["host"])
    if port is not None:
        _validate.port(port)
        if port_range is not None:
            raise ValueError("give port or port_range, not both")
    range_pair = _validate.port_range(port_range) if port_range is not None else None
    return {"host": host, "port": port, "port_range": range_pair, "unix_socket": unix_socket,
            "socket_path": socket_path, "listens": listens}


def _checked_user(user: object) -> Tuple[Optional[int], Optional[int]]:
    """``user=`` as (uid, gid); ``(None, None)`` for no change (none given, or oneself).

    A name must be in the user database; a uid need not be (a throwaway
    uid runs with the same number as its gid).  Only root can run a
    process as another user: anyone else gets the error here, before
    anything starts.
    """
    if user is None:
        return None, None
    import pwd
    if isinstance(user, bool) or not isinstance(user, (str, int)):
        raise TypeError(f"user must be a user name or a uid (int), got {user!r}")
    if isinstance(user, int):
        if user < 0:
            raise ValueError(f"user must be a uid >= 0, got {user!r}")
        try:
            uid, gid = user, pwd.getpwuid(user).pw_gid
        except KeyError:
            uid, gid = user, user
    else:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise ValueError(f"user {user!r} does not exist (not in the user database)") from None
        uid, gid = entry.pw_uid, entry.pw_gid
    if uid == os.geteuid():
        return None, None
    if os.geteuid() != 0:
        raise ValueError(f"user={user!r}: running a server as another user needs root (this "
                         f"process runs as {describe_user(os.geteuid())}); leave user= unset")
    return uid, gid


def _checked_signal(stop_signal: object) -> int:
    if isinstance(stop_signal, bool) or not isinstance(stop_signal, int):
        raise TypeError(f"stop_signal must be a signal number such as signal.SIGINT, "
                        f"got {stop_signal!r}")
    if stop_signal not in signal.valid_signals() or stop_signal in (
            signal.SIGSTOP, signal.SIGCONT, signal.SIGCHLD):
        raise ValueError(f"stop_signal must be a signal that ends a process (SIGTERM, SIGINT, "
                         f"SIGQUIT, ...), got {stop_signal!r}")
    return int(stop_signal)


def _check_app_code(app_code: object) -> None:
    if not isinstance(app_code, str):
        raise TypeError(f"app_code must be a str of Python source, got {type(app_code).__name__}")
    if not app_code.strip():
        raise ValueError("app_code is empty")
    if "\0" in app_code:
        raise ValueError("app_code contains a NUL byte")


def _checked_argv(argv: object) -> Tuple[str, ...]:
    if isinstance(argv, (str, bytes)) or not isinstance(argv, (list, tuple)):
        raise TypeError(f"argv must be a list of str (no shell is used), got {argv!r}")
    if not argv:
        raise ValueError("argv is empty")
    for index, item in enumerate(argv):
        if not isinstance(item, str):
            raise TypeError(f"argv items must be str, got {item!r}")
        if "\0" in item:
            raise ValueError(f"argv[{index}] contains a NUL byte: {item!r}")
    if not argv[0]:
        raise ValueError("argv[0] is empty: it names the program to run")
    return tuple(argv)


def _checked_target(target: object, args: object,
                    kwargs: object) -> Tuple[bytes, str, Optional[str]]:
    """The pickle of (target, args, kwargs); the target is pickled by reference."""
    if not callable(target):
        raise TypeError(f"target must be a function (or other callable importable by name), "
                        f"got {target!r}")
    if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
        raise TypeError(f"args must be a tuple of arguments for target, got {args!r}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"kwargs must be a dict of keyword arguments for target, got {kwargs!r}")
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", "")
    if not module or "<locals>" in qualname or "<lambda>" in qualname:
        raise ValueError(
            f"target must be importable by its qualified name (a function at the top level of "
            f"a module, or a class or static method), so the server process can import it; "
            f"{target!r} is not (a lambda or a nested function?)")
    main_path = None
    if module == "__main__":
        main_path = getattr(sys.modules.get("__main__"), "__file__", None)
        if not main_path:
            raise ValueError(f"target {qualname} is defined in __main__, which has no file "
                             f"(an interactive session?): define it in a module")
        main_path = os.path.abspath(main_path)
    try:
        payload = pickle.dumps((target, tuple(args), dict(kwargs or {})), protocol=4)
    except Exception as exc:  # PicklingError, TypeError, AttributeError, ...
        raise ValueError(f"target's arguments must be picklable (they are sent to the server "
                         f"process): {type(exc).__name__}: {exc}") from None
    return payload, module, main_path


def _checked_preload(preload: object, kind: str) -> Optional[Tuple[str, ...]]:
    if preload is None:
        return None
    if kind == "argv":
        raise ValueError("preload applies to Python servers (app_code or target); an argv "
                         "server is a program of its own")
    if isinstance(preload, (str, bytes)) or not isinstance(preload, (list, tuple)):
        raise TypeError(f"preload must be a list of module names such as ['flask'], "
                        f"got {preload!r}")
    for item in preload:
        if not isinstance(item, str) or not _MODULE_NAME.match(item):
            raise ValueError(f"preload items must be module names such as 'myapp.models', "
                             f"got {item!r}")
    return tuple(preload)


def _checked_host(host: object) -> str:
    if not isinstance(host, str):
        raise TypeError(f"host must be a str IP address, got {host!r}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"host must be a numeric loopback address such as '127.0.0.1' or '::1', "
            f"got {host!r} (a name like 'localhost' may resolve to ::1 first)") from None
    if not address.is_loopback:
        raise ValueError(f"host must be a loopback address (servers under test are not "
                         f"exposed to the network), got {host!r}")
    return host


def _checked_env(env: object) -> Dict[str, Optional[str]]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a dict of str -> str or None, got {env!r}")
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ValueError(f"env keys must be non-empty str without '=' or NUL, got {key!r}")
        if value is not None and not isinstance(value, str):
            raise TypeError(f"env[{key!r}] must be a str or None, got {value!r}")
        if value is not None and "\0" in value:
            raise ValueError(f"env[{key!r}] contains a NUL byte: {value!r}")
    return dict(env)


def _checked_cwd(cwd: object) -> Optional[str]:
    if cwd is None:
        return None
    path = _validate.path(cwd, "cwd")
    if not os.path.isdir(path):
        raise ValueError(f"cwd is not an existing directory: {path!r}")
    return os.path.abspath(path)


def _checked_verify(verify: object) -> Verify:
    _http_wire.ssl_context(verify)  # its checks: one definition of a valid verify=
    return verify  # type: ignore[return-value]


def _checked_socket_path(unix_socket: object) -> Optional[str]:
    """The test's own socket path from ``unix_socket=PATH`` (``None`` for True/False)."""
    if isinstance(unix_socket, bool):
        return None
    path = _validate.path(unix_socket, "unix_socket", "True, False or a path for the socket")
    if not path:
        raise ValueError(f"unix_socket must be a non-empty str path, got {unix_socket!r}")
    path = os.path.abspath(path)
    if len(os.fsencode(path)) > SUN_PATH_LIMIT:
        raise ValueError(f"unix_socket path is {len(os.fsencode(path))} bytes, more than a "
                         f"Unix socket address holds ({SUN_PATH_LIMIT}): {path!r}; choose a "
                         f"shorter one, or unix_socket=True for one harness makes")
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f"unix_socket's directory does not exist: {os.path.dirname(path)!r}")
    if os.path.isdir(path):
        raise ValueError(f"unix_socket names a directory, not a socket path: {path!r}")
    return path


def _check_without_port(port: object, port_range: object, handoff: bool, unix_socket: bool,
                        argv: Optional[Tuple[str, ...]]) -> None:
    """``listens=False``: a process without a port gets none, so none may be asked for."""
    for what, given in (("port", port is not None), ("port_range", port_range is not None),
                        ("handoff=True", handoff), ("unix_socket", unix_socket)):
        if given:
            raise ValueError(f"listens=False says the server has no port, but {what} gives it "
                             f"one: drop one of them")
    if argv is not None and any("{port}" in item or "{host}" in item for item in argv):
        raise ValueError("listens=False says the server has no port, but argv asks for "
                         "{port} or {host}: drop listens=False, or the placeholder")
