"""Spawning a server: command line, environment, fds; nothing else.

The server runs in a new session (its own process group, away from the
terminal's Ctrl-C), with stdin from /dev/null -- or, with handoff, the
listening socket -- and stdout/stderr appended to a log file.

Handoff follows systemd's socket activation: the socket is fd 3,
``LISTEN_FDS=1`` and ``LISTEN_PID`` is the server's *own* pid.  The
environment is fixed before exec, so the pid is filled in by a shim that
runs in the child and then execs the server (exec keeps the pid):

- ``app_code`` servers already start in harness's boot script, which does it
  in Python before running the app;
- ``argv`` servers go through ``/bin/sh -c 'exec 3<&0 ...; LISTEN_PID=$$
  ... exec "$@"'`` (a fixed script; the user's argv are positional
  arguments, never parsed by the shell).  The socket arrives as stdin,
  because Debian's /bin/sh cannot redirect fds above 9 and subprocess only
  dup2s stdio; dash costs about a millisecond, a Python shim about 15 ms.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Dict, List, Mapping, Optional

# The boot script of app_code servers (written next to app.py).
BOOT = '''\
"""Started by harness: graceful SIGTERM, socket handoff, then the app."""
import os
import signal
import sys

if os.environ.get("COVERAGE_PROCESS_START"):
    # Measure the app, as coverage's own .pth file does (coverage >= 7.10;
    # older ones, e.g. Python 3.8's, have none); a no-op if it already ran.
    # Before our SIGTERM handler, so a handler of coverage's cannot replace it.
    try:
        import coverage
    except ImportError:
        pass
    else:
        coverage.process_startup()


def _harness_sigterm(signum, frame):
    # Python dies at once on SIGTERM; raising lets finally, atexit and
    # coverage's data file run.  The exit code is 128 + 15 = 143.  Once only:
    # a second SIGTERM must not interrupt that clean-up (SIGKILL ends a hang).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _harness_sigterm)
if sys.argv[1] == "--handoff":
    os.dup2(0, 3)
    _null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(_null, 0)
    os.close(_null)
    os.environ["LISTEN_PID"] = str(os.getpid())
del sys.argv[:2]
import runpy  # noqa: E402

runpy.run_path(sys.argv[0], run_name="__main__")
'''

SH_SHIM = 'exec 3<&0 0</dev/null; LISTEN_PID=$$; export LISTEN_PID; exec "$@"'
PY_SHIM = ("import os,sys\nos.dup2(0,3)\nn=os.open(os.devnull,os.O_RDONLY)\nos.dup2(n,0)\n"
           "os.close(n)\nos.environ['LISTEN_PID']=str(os.getpid())\n"
           "os.execvp(sys.argv[1],sys.argv[1:])\n")

_LISTEN_VARS = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def _shell() -> Optional[str]:
    return "/bin/sh" if os.path.exists("/bin/sh") else shutil.which("sh")


def command(argv: List[str], handoff: bool) -> List[str]:
    """The argv actually executed for a user ``argv`` server."""
    if not handoff:
        return list(argv)
    shell = _shell()
    if shell:
        return [shell, "-c", SH_SHIM, "harness-handoff"] + list(argv)
    return [sys.executable, "-I", "-S", "-c", PY_SHIM] + list(argv)


def app_command(boot_path: str, app_path: str, handoff: bool) -> List[str]:
    return [sys.executable, boot_path, "--handoff" if handoff else "--", app_path]


def environment(extra: Optional[Mapping[str, Optional[str]]], *, host: str, port: int,
                marker: Mapping[str, str], handoff: bool, fd_name: str) -> Dict[str, str]:
    """The inherited environment plus ``extra`` (``None`` removes), PORT, HOST, marker."""
    env = dict(os.environ)
    for var in _LISTEN_VARS:  # never pass on an outer socket activation
        env.pop(var, None)
    env.setdefault("PYTHONUNBUFFERED", "1")  # a log shows what happened, when it happened
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["PORT"] = str(port)
    env["HOST"] = host
    env.update(marker)
    if handoff:
        env["LISTEN_FDS"] = "1"
        env["LISTEN_FDNAMES"] = fd_name
    return env


def spawn(cmd: List[str], *, env: Dict[str, str], cwd: Optional[str], log_fd: int,
          listen_fd: Optional[int]) -> subprocess.Popen:
    """Start ``cmd`` in a new session; OSError if it cannot be executed."""
    return subprocess.Popen(
        cmd, stdin=listen_fd if listen_fd is not None else subprocess.DEVNULL,
        stdout=log_fd, stderr=log_fd, env=env, cwd=cwd, close_fds=True,
        start_new_session=True)
