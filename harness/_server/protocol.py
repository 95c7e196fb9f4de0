"""The messages between the runner, its zygotes and their keepers: one definition each.

Three conversations, each on its own socket (:mod:`.channel` frames them):

* runner -> zygote, on the zygote's control socket: :class:`Init` (its
  preloads), :class:`Spawn` (a keeper and a server; the descriptors travel
  with it), :class:`Import` and :class:`Learn` (modules for later forks),
  :class:`Dir` (a temp dir to remove if the runner dies); the zygote answers
  :class:`InitReply`, :class:`ImportReply` and :class:`LearnReply`;
* keeper -> runner, on the server's link: :class:`Forked` (who the server
  is, before it runs), then :class:`Started` or :class:`SpawnFailed`, then
  :class:`Exited` once the server has exited;
* runner -> keeper, on the same link: :class:`Stop`, answered by
  :class:`Stopped`.

Every message is a plain ``dict`` typed by a ``TypedDict``, and both ends
build it with the functions below, so the type checker sees every field
on both sides.  Plain dicts of plain values, not classes or enums: the
zygote loads harness's low-level modules under another package name (see
:mod:`.supervisor`), and a pickled class or enum would name a module the
other end does not have.  Standard library only: the zygote imports it.
"""
from __future__ import annotations

from typing import Dict, List, Literal, Optional, TypedDict, Union

#: What a server runs: ``app_code`` (a file of Python source), an ``argv``
#: program, or a ``target`` function.  The same three words in ``ServerSpec``,
#: on the wire and in the fresh boot's command line.
Kind = Literal["app", "argv", "target"]


# --------------------------------------------------------------------------
# runner -> zygote


class Init(TypedDict):
    op: Literal["init"]
    preload: List[str]       # modules to import once (a warm zygote)
    sys_path: List[str]      # the runner's sys.path for them ([] for the plain zygote)


class Refusal(TypedDict):
    """Why a zygote could not take a module: its import failed, or started threads."""
    module: str
    error: str               # the import's traceback ("" when it was threads)
    threads: int             # threads running after the import (0 when it was an error)


class InitReply(TypedDict):
    ready: bool
    pid: int
    subreaper: bool          # the zygote's keepers adopt escaped descendants (Linux)
    refusal: Optional[Refusal]


class Import(TypedDict):
    op: Literal["import"]
    module: str              # a target's module, imported once so every fork has it


class ImportReply(TypedDict):
    ok: bool
    refusal: Optional[Refusal]


class Learn(TypedDict):
    op: Literal["learn"]
    modules: List[str]       # what servers imported when they ran


class LearnReply(TypedDict):
    ok: bool
    imported: List[str]      # the modules the zygote now has
    module: str              # the one that changed the zygote ("" if none did)
    changed: str             # what it changed ("threads", "signal handlers", ...)


class Dir(TypedDict):
    op: Literal["dir+", "dir-"]
    path: str                # a temp dir the zygote removes if the runner dies


class Spawn(TypedDict):
    """Start a keeper, and under it the server.  The descriptors travel with it:
    the keeper's link, the log, and the listening socket with handoff."""
    op: Literal["spawn"]
    kind: Kind
    warm: bool               # run app/target in the forked zygote; else exec ``argv``
    argv: List[str]          # the program (a fresh server's interpreter and boot.py too)
    env: Dict[str, str]
    cwd: str
    uid: Optional[int]       # user=: run as this uid/gid (None: the runner's)
    gid: Optional[int]
    stop_signal: int         # the first signal of a stop, and of an orphan's end
    app_path: str            # warm app: the file to run
    payload: bytes           # warm target: the pickle of (target, args, kwargs)
    payload_path: str        # ... and the file it is in (for a server that runs again)
    main_path: str           # a target defined in the runner's __main__ ("" if not)
    sys_path: List[str]      # warm: the runner's sys.path
    learn: bool              # warm target: write down what it imported, at exit


ZygoteRequest = Union[Init, Import, Learn, Dir, Spawn]


# --------------------------------------------------------------------------
# keeper <-> runner


class Forked(TypedDict):
    event: Literal["forked"]
    pid: int
    keeper: int
    identity: str            # str(ProcessId) of the server


class SpawnFailed(TypedDict):
    """The server's program could not be started (its exec or its import failed)."""
    event: Literal["spawn failed"]
    errno: int               # 0 if not an OSError
    error: str               # the exception's class name
    text: str                # its message


class Started(TypedDict):
    event: Literal["started"]
    pid: int


class Exited(TypedDict):
    event: Literal["exited"]
    status: int              # the exit code, or minus the signal


class Stop(TypedDict):
    op: Literal["stop"]
    grace: float             # seconds between the stop signal and SIGKILL
    kill_wait: float         # seconds for everything to be gone after SIGKILL


class Stopped(TypedDict):
    event: Literal["stopped"]
    status: Optional[int]    # the server's exit status, if it was reaped
    survivors: List[str]     # str(ProcessId) of what outlived SIGKILL


KeeperEvent = Union[Forked, SpawnFailed, Started, Exited, Stopped]


# --------------------------------------------------------------------------
# Constructors (both ends build messages only with these)


def init(preload: List[str], sys_path: List[str]) -> Init:
    return {"op": "init", "preload": preload, "sys_path": sys_path}


def refusal(module: str, *, error: str = "", threads: int = 0) -> Refusal:
    return {"module": module, "error": error, "threads": threads}


def init_reply(*, ready: bool, pid: int, subreaper: bool,
               refused: Optional[Refusal] = None) -> InitReply:
    return {"ready": ready, "pid": pid, "subreaper": subreaper, "refusal": refused}


def import_module(module: str) -> Import:
    return {"op": "import", "module": module}


def import_reply(refused: Optional[Refusal] = None) -> ImportReply:
    return {"ok": refused is None, "refusal": refused}


def learn(modules: List[str]) -> Learn:
    return {"op": "learn", "modules": modules}


def learn_reply(imported: List[str], *, module: str = "", changed: str = "") -> LearnReply:
    return {"ok": not module, "imported": imported, "module": module, "changed": changed}


def directory(path: str, add: bool) -> Dir:
    return {"op": "dir+" if add else "dir-", "path": path}


def spawn(kind: Kind, *, warm: bool, env: Dict[str, str], cwd: str, argv: List[str],
          uid: Optional[int] = None, gid: Optional[int] = None, stop_signal: int = 15,
          app_path: str = "", payload: bytes = b"", payload_path: str = "",
          main_path: str = "", sys_path: Optional[List[str]] = None,
          learn: bool = False) -> Spawn:
    return {"op": "spawn", "kind": kind, "warm": warm, "argv": argv, "env": env, "cwd": cwd,
            "uid": uid, "gid": gid, "stop_signal": stop_signal, "app_path": app_path,
            "payload": payload, "payload_path": payload_path, "main_path": main_path,
            "sys_path": sys_path or [], "learn": learn}


def forked(pid: int, keeper: int, identity: str) -> Forked:
    return {"event": "forked", "pid": pid, "keeper": keeper, "identity": identity}


def spawn_failed(exc: BaseException) -> SpawnFailed:
    return {"event": "spawn failed", "errno": int(getattr(exc, "errno", None) or 0),
            "error": type(exc).__name__, "text": str(exc)}


def started(pid: int) -> Started:
    return {"event": "started", "pid": pid}


def exited(status: int) -> Exited:
    return {"event": "exited", "status": status}


def stop(grace: float, kill_wait: float) -> Stop:
    return {"op": "stop", "grace": grace, "kill_wait": kill_wait}


def stopped(status: Optional[int], survivors: List[str]) -> Stopped:
    return {"event": "stopped", "status": status, "survivors": survivors}


__all__ = ["Kind", "Init", "InitReply", "Refusal", "Import", "ImportReply", "Learn",
           "LearnReply", "Dir", "Spawn", "ZygoteRequest", "Forked", "SpawnFailed", "Started",
           "Exited", "Stop", "Stopped", "KeeperEvent"]
