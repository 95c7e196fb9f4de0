"""``python -m harness port``: print a free port for a shell script or a config file.

The port is leased (so no other harness user is handed it) only while the
command runs: once it has printed, the port is merely free *now*.  Inside a
test, ask :func:`harness.find_free_port` instead, which keeps the lease.
"""
from __future__ import annotations

import argparse
import json
import sys

from .. import _validate, ports
from .._validate import arg_type, parse_port_range
from ..errors import HarnessError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--range", dest="port_range", metavar="LOW-HIGH",
                        type=arg_type(_validate.port_range, "--range", parse=parse_port_range),
                        help="choose from this inclusive range (default: outside the "
                             "kernel's ephemeral range)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address the port must be free on: 127.0.0.1 (default) or ::1")
    parser.add_argument("--json", action="store_true", help='print {"port": N, "host": H}')


def run(args: argparse.Namespace) -> int:
    try:
        lease = ports.PortAllocator(args.port_range, host=args.host).acquire()
    except (TypeError, ValueError) as exc:  # a --host that does not resolve
        print(f"port: {exc}", file=sys.stderr)
        return 2
    except HarnessError as exc:  # no port free; the host or the lease directory unusable
        print(f"port: {exc}", file=sys.stderr)
        return 1
    with lease:
        if args.json:
            print(json.dumps({"port": lease.port, "host": lease.host}))
        else:
            print(lease.port)
        sys.stdout.flush()
    return 0
