"""``python -m harness``: the command line (see :mod:`harness._cli`)."""
import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
