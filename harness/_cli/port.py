"""``python -m harness port``: print a free port for a shell script or a config file.

The port is leased (so no other harness user is handed it) only while the
command runs: once it has printed, the port is merely free *now*.  Inside a
test, ask :func:`harness.find_free_port` instead, which keeps the lease.
"""
from __future__ import annotations

import argparse
import json
import sys

from .. import ports
from .._validate import PortRange, check_port_range
from ..errors import PortUnavailable


def parse_range(text: str) -> PortRange:
    """``"9000-9100"`` (inclusive) or a single port ``"9000"``."""
    low, sep, high = text.partition("-")
    try:
        pair = (int(low), int(high) if sep else int(low))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be LOW-HIGH with whole numbers, like 9000-9100; got {text!r}") from None
    try:
        return check_port_range(pair, "--range")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--range", dest="port_range", type=parse_range, metavar="LOW-HIGH",
                        help="choose from this inclusive range (default: outside the "
                             "kernel's ephemeral range)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address the port must be free on: 127.0.0.1 (default) or ::1")
    parser.add_argument("--json", action="store_true", help='print {"port": N, "host": H}')


def run(args: argparse.Namespace) -> int:
    try:
        allocator = ports.PortAllocator(args.port_range, host=args.host)
    except (TypeError, ValueError) as exc:
        print(f"port: {exc}", file=sys.stderr)
        return 2
    try:
        lease = allocator.acquire()
    except PortUnavailable as exc:
        print(f"port: {exc}", file=sys.stderr)
        return 1
    with lease:
        if args.json:
            print(json.dumps({"port": lease.port, "host": lease.host}))
        else:
            print(lease.port)
        sys.stdout.flush()
    return 0
