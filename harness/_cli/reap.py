"""``python -m harness reap``: clean up after test runners that died without cleaning up.

What it stops and removes, and what it leaves alone, is decided by the
engine in :mod:`harness._server.reaper`; this module is the command: its
arguments, the order of the steps, and the report (text or JSON).  The exit
code is 1 if anything could not be stopped or removed (in a dry run: if
there is anything to do).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List, Sequence

from .. import _config, _validate
from .._os import procinfo
from .._server.reaper import (
    Action,
    Record,
    find_orphans,
    find_stale_leases,
    find_temp_dirs,
    remove_stale_leases,
    remove_temp_dirs,
    stop_orphans,
)
from .._validate import arg_type, parse_number

_log = logging.getLogger("harness.reap")

GRACE = 5.0  # seconds between SIGTERM and SIGKILL, times HARNESS_TIMEOUT_FACTOR


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="only list what would be stopped and removed")
    parser.add_argument("--grace", default=GRACE, metavar="S",
                        type=arg_type(_validate.seconds, "--grace", parse=parse_number,
                                      allow_zero=True),
                        help=f"seconds a server gets to exit after SIGTERM before SIGKILL "
                             f"(default {GRACE:g}, times HARNESS_TIMEOUT_FACTOR)")
    parser.add_argument("--runner", type=arg_type(_validate.whole, "--runner"), metavar="PID",
                        help="only what the dead test runner with this pid left behind")
    parser.add_argument("--json", action="store_true", help="print what was done as JSON")


# --------------------------------------------------------------------------
# The command


def run(args: argparse.Namespace) -> int:
    if not (procinfo.HAVE_PROC or procinfo.HAVE_PSUTIL):
        print("reap: without psutil this platform cannot list processes, so no server is "
              "stopped (pip install psutil); temp dirs of runners whose pid is gone and "
              "stale lease files are still removed", file=sys.stderr)
    orphans = find_orphans(args.runner)
    dirs = find_temp_dirs(args.runner)
    lease_files = find_stale_leases()
    records: List[Record] = [*orphans, *dirs, *lease_files]
    to_do = any(r.action is Action.TO_DO for r in records)
    if not args.dry_run:
        stop_orphans(orphans, _config.scaled(args.grace))
        remove_temp_dirs(dirs)
        remove_stale_leases(lease_files)
        for record in records:  # also for a log collector (logging.getLogger("harness"))
            if record.action is not Action.LEFT_ALONE:
                _log.info("reap: %s", record.describe(False))
    if args.json:
        print(json.dumps({"dry_run": args.dry_run,
                          "processes": [o.to_json() for o in orphans],
                          "temp_dirs": [d.to_json() for d in dirs],
                          "lease_files": [lease.to_json() for lease in lease_files]}, indent=2))
    else:
        print("\n".join(_report(records, args.dry_run)))
    if args.dry_run:
        return 1 if to_do else 0
    return 1 if any(r.action.failed for r in records) else 0


def _report(records: Sequence[Record], dry_run: bool) -> List[str]:
    lines = [record.describe(dry_run) for record in records]
    if not any(r.action is not Action.LEFT_ALONE for r in records):
        lines.insert(0, "nothing to reap: no harness server, temp dir or lease file of a dead "
                        "test runner")
    return lines
