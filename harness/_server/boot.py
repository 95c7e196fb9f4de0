"""What runs first in every ``app_code`` and ``target`` server: then the app.

* SIGTERM becomes ``SystemExit(143)``, so ``finally`` blocks, ``atexit``
  and coverage's data file run on a graceful stop (Python would otherwise
  die at once);
* coverage is started when ``COVERAGE_PROCESS_START`` is set, as
  coverage's own ``.pth`` hook does (coverage >= 7.10; older ones, e.g.
  Python 3.8's, have none; a no-op if it already ran);
* ``sys.path`` is the app's directory followed by the test runner's path,
  so the app imports what the test can import;
* then the app: a file run as ``__main__`` (``app_code``), or a callable
  named by module and qualified name, called with its pickled arguments
  (``target``).

A fresh server runs this file as a script (``python .../boot.py app
APP_PATH``); a warm one (:mod:`.zygote`) calls :func:`prepare` and
:func:`run` in the forked process.  So it imports only the standard library,
never harness: as a script its directory must not shadow the app's modules,
and :func:`prepare` replaces it in ``sys.path`` first.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Any, List, Optional, Sequence

#: The test runner's ``sys.path`` for a Python server, ``os.pathsep``-joined
#: (a server that runs itself again, as reloaders do, needs it too).
SYS_PATH_ENV = "HARNESS_SYS_PATH"
#: Where a warm target server writes, at its exit, the modules it imported.
LEARNED_FILE = "imports.learned"


def _sigterm(signum: int, frame: Any) -> None:
    # Python dies at once on SIGTERM; raising lets finally, atexit and
    # coverage's data file run.  The exit code is 128 + 15 = 143.  Once only:
    # a second SIGTERM must not interrupt that clean-up (SIGKILL ends a hang).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _in_coverage(frame):
        # coverage's tracer is running Python code (coverage 7.5.5 to 7.17
        # take their data lock there): raised here, SystemExit would leave
        # the lock taken and coverage's save at exit would wait for it for
        # ever.  Exit at the next call or return outside the tracer instead
        # (code a tracer runs makes no such events).
        global _exit_code
        _exit_code = 128 + signum
        sys.setprofile(_exit_now)
        return
    raise SystemExit(128 + signum)


_exit_code = 0


def _in_coverage(frame: Any) -> bool:
    name = str(getattr(frame, "f_globals", {}).get("__name__", ""))
    return name == "coverage" or name.startswith("coverage.")


def _exit_now(frame: Any, event: str, arg: Any) -> None:
    """A profile function: the SystemExit the SIGTERM handler put off."""
    sys.setprofile(None)
    raise SystemExit(_exit_code)


def start_coverage() -> None:
    """Measure the app when ``COVERAGE_PROCESS_START`` asks for it."""
    if not os.environ.get("COVERAGE_PROCESS_START"):
        return
    try:
        import coverage
    except ImportError:
        return
    coverage.process_startup()


def prepare(app_dir: Optional[str], runner_path: Sequence[str]) -> None:
    """Coverage, then the SIGTERM handler (so coverage cannot replace it), then ``sys.path``."""
    start_coverage()
    signal.signal(signal.SIGTERM, _sigterm)
    path: List[str] = [app_dir] if app_dir else []
    for entry in list(runner_path) + sys.path[1:]:
        if entry not in path:
            path.append(entry)
    sys.path[:] = path


def run_app(path: str) -> None:
    """Run the file ``path`` as ``__main__``, as ``python path`` would.

    A module of its own stands in ``sys.modules["__main__"]``, with no
    package and no spec, as for a script: a reloader that asks how it was
    started (werkzeug on Python < 3.10) reads "a file", and pickles of its
    classes (multiprocessing) find them there.
    """
    import builtins
    import types
    from importlib.machinery import SourceFileLoader
    sys.argv[:] = [path]
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = builtins  # type: ignore[attr-defined]
    module.__loader__ = SourceFileLoader("__main__", path)
    sys.modules["__main__"] = module
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec")
    exec(code, module.__dict__)


def rerun_argv(kind: str, path: str, main_path: Optional[str] = None) -> List[str]:
    """The arguments of a fresh interpreter for this server: what a server that runs
    itself again (a reloader: ``sys.orig_argv``) must find, warm or fresh."""
    return [sys.executable, os.path.abspath(__file__), kind, path] + (
        [main_path] if main_path else [])


def _load_main(path: str) -> None:
    """A target defined in the runner's ``__main__``: run that file as ``__mp_main__``
    and let it stand for ``__main__`` while unpickling, as multiprocessing does."""
    import runpy
    import types
    module = types.ModuleType("__mp_main__")
    module.__file__ = path
    sys.modules["__mp_main__"] = module
    module.__dict__.update(runpy.run_path(path, run_name="__mp_main__"))
    sys.modules["__main__"] = module


def run_target(payload: bytes, main_path: Optional[str] = None) -> None:
    """Call the pickled ``(callable, args, kwargs)``; the callable is pickled by reference."""
    import pickle
    if main_path:
        _load_main(main_path)
    target, args, kwargs = pickle.loads(payload)
    sys.argv[:] = [getattr(target, "__qualname__", repr(target))]
    target(*args, **kwargs)


def main(argv: Sequence[str]) -> None:
    """``boot.py app APP_PATH`` or ``boot.py target PICKLE_PATH [MAIN_PATH]``: a fresh
    server's entry point."""
    kind, what = argv[1], argv[2]
    # Kept in the environment: a server that runs itself again gets it too.
    runner_path = [p for p in os.environ.get(SYS_PATH_ENV, "").split(os.pathsep) if p]
    if kind == "app":
        prepare(os.path.dirname(os.path.abspath(what)), runner_path)
        run_app(what)
    else:
        prepare(None, runner_path)
        with open(what, "rb") as f:
            payload = f.read()
        run_target(payload, argv[3] if len(argv) > 3 else None)


if __name__ == "__main__":
    main(sys.argv)
