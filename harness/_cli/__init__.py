"""The command line, ``python -m harness``: port, who, reap, flakehunt, demo.

A thin dispatcher: each command lives in its own module, which describes
its arguments (``configure``) and does the work (``run``).  Exit codes:
0 fine, 1 found a problem, 2 bad usage (argparse's own code).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

# (name, module, one-line help, example for the epilog)
COMMANDS = [
    ("port", "port", "print a free port (leased only while the command runs)",
     "example:\n  python -m harness port --range 9000-9100\n  9042"),
    ("who", "who", "show which process holds a port, and whether harness started it",
     "example:\n  python -m harness who 8080\n\n"
     "exit code: 0 the port is free, 1 it is held (the holders are listed)"),
    ("reap", "reap", "stop servers and remove temp dirs and lease files left by dead test runners",
     "example:\n  python -m harness reap --dry-run   # list what would be done\n"
     "  python -m harness reap\n\n"
     "exit code: 0 done (or nothing to do), 1 something could not be cleaned up;\n"
     "with --dry-run: 0 nothing to reap, 1 there is something to reap"),
    ("flakehunt", "flakehunt", "rerun unittest tests (or the whole suite) in fresh processes; "
     "failure rate with a 95%% interval",
     "examples (prove a test, then the whole suite, is no longer flaky):\n"
     "  python -m harness flakehunt test_api.ApiTest.test_health -n 200 -j 2 --start-dir test\n"
     "  python -m harness flakehunt -n 20 -j 1 --timeout 900 --start-dir test\n"
     "  python -m harness flakehunt test/test_api.py::ApiTest::test_health --start-dir test\n\n"
     "exit code: 0 no run failed, 1 some run failed, 2 bad usage or the test cannot be\n"
     "loaded, 130 interrupted by Ctrl-C (the summary so far is printed first)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Tools for a flaky suite or a stuck port.",
        epilog="run `python -m harness COMMAND --help` for a command's options and an example")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name, module_name, summary, example in COMMANDS:
        sub = commands.add_parser(name, help=summary, description=summary.replace("%%", "%"),
                                  epilog=example,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module = importlib.import_module(f".{module_name}", __package__)
        module.configure(sub)
        sub.set_defaults(handler=module.run)
    # prefix_chars="\0": every word after "demo" (--help, --show-failure) goes to the demo.
    demo = commands.add_parser("demo", help="run a small suite of real servers and compare its "
                               "time with fixed sleeps", add_help=False, prefix_chars="\0")
    demo.add_argument("args", nargs=argparse.REMAINDER)
    demo.set_defaults(handler=_demo)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from . import demo  # imported only when asked for: it brings the bundled servers
    return int(demo.main(args.args) or 0)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print(f"\n{args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into `head`: the reader has gone, so be quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
