"""Makes plain ``python -m unittest`` in the project root run the whole suite.

Without arguments, ``python -m unittest`` discovers ``test*.py`` from the
current directory, and only inside importable packages.  The suite lives in
``test/``, which is deliberately *not* a package: the standard library
already has a package named ``test``, and the suite's modules import their
helpers top-level (``_support``, ``_http_servers``, ``_process_helpers``),
which works because ``test/`` itself is the top of the import path, as with
``python -m unittest discover -s test`` and ``python -m pytest test/``.
So root discovery used to find nothing, and say OK.

This module's name matches unittest's default pattern, and it implements the
``load_tests`` protocol: it returns what ``discover -s test`` returns, the
same tests under the same names.  pytest never collects it: its default
pattern is ``test_*.py``, and ``pytest test/`` does not look at the root.
It is no part of the distribution (only ``harness`` is); the sdist has it so
that the suite runs from an unpacked sdist the same way.
"""
import copy
import os
import unittest
from typing import Optional

TEST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test")


def load_tests(loader: unittest.TestLoader, tests: unittest.TestSuite,
               pattern: Optional[str]) -> unittest.TestSuite:
    # A copy of the loader: discover() records its top-level directory on the
    # loader, and the discovery that imported this module goes on with the
    # original one.  The copy keeps the command line's options (-k patterns)
    # and shares the list of import errors unittest reports.
    inner = copy.copy(loader)
    tests.addTests(inner.discover(TEST_DIR, pattern=pattern or "test*.py", top_level_dir=TEST_DIR))
    return tests
