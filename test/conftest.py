"""pytest runs this unittest suite too (``python -m pytest -n 2 test/``).

The suite's modules import each other and ``_support`` top-level, as
``python -m unittest discover -s test`` allows; make that work under every
pytest import mode, and make this checkout's harness the one imported.
"""
from __future__ import annotations

import os
import sys

_TEST_DIR = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.dirname(_TEST_DIR), _TEST_DIR):
    if _path not in sys.path:
        sys.path.insert(0, _path)
