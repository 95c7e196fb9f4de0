"""Settings read from the environment, validated in one place.

``HARNESS_TIMEOUT_FACTOR`` is read on every call, so a test (or a slow CI
job) can set it at any time.  Two rules keep that safe:

* a call that *starts* something (``start()``, ``request()``, ...) reads it
  through :func:`scaled`, which raises ``ValueError`` naming the variable
  for a value that is not a positive number, before anything happens;
* a call that *ends* something (``stop()``, the safety net, clean-up) reads
  it through :func:`scaled_for_cleanup`, which never raises: a value that
  went bad after the start falls back to the last good one (logged), so a
  stop always ends the server and releases everything.

Huge factors are clamped (``MAX_FACTOR``) and so is every scaled timeout
(``MAX_SECONDS``), so ``1e9`` means "wait a very long time", never an
``OverflowError`` from ``select`` or ``threading``.
"""
from __future__ import annotations

import logging
import math
import os

from ._manual import see

TIMEOUT_FACTOR_VAR = "HARNESS_TIMEOUT_FACTOR"
LEASE_DIR_VAR = "HARNESS_LEASE_DIR"

#: The largest factor honoured; larger ones are clamped to it.
MAX_FACTOR = 1000.0
#: No scaled timeout is longer than a day (``poll()`` overflows at ~24 days).
MAX_SECONDS = 86400.0

_log = logging.getLogger("harness.config")
_last_good = 1.0


def timeout_factor() -> float:
    """The multiplier for every timeout (default 1); ``ValueError`` if it is not valid."""
    global _last_good
    raw = os.environ.get(TIMEOUT_FACTOR_VAR, "").strip()
    if not raw:
        factor = 1.0
    else:
        try:
            factor = float(raw)
        except ValueError:
            factor = math.nan
        if not factor > 0 or math.isnan(factor):
            raise ValueError(f"{TIMEOUT_FACTOR_VAR} must be a positive number such as 2 or "
                             f"0.5, got {raw!r}; {see('timeout-factor')}")
        factor = min(factor, MAX_FACTOR)  # inf included
    _last_good = factor
    return factor


def scaled(seconds: float) -> float:
    """``seconds`` times the timeout factor, at most ``MAX_SECONDS``."""
    return min(seconds * timeout_factor(), MAX_SECONDS)


def scaled_for_cleanup(seconds: float) -> float:
    """Like :func:`scaled`, but never raises: for stop and clean-up paths."""
    try:
        factor = timeout_factor()
    except ValueError as exc:
        factor = _last_good
        _log.warning("%s; using the last valid factor, %g, to finish cleaning up", exc, factor)
    return min(seconds * factor, MAX_SECONDS)
