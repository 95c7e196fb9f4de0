"""Settings read from the environment, validated once, in one place."""
from __future__ import annotations

import math
import os

TIMEOUT_FACTOR_VAR = "HARNESS_TIMEOUT_FACTOR"
LEASE_DIR_VAR = "HARNESS_LEASE_DIR"


def timeout_factor() -> float:
    """The multiplier for every timeout (``HARNESS_TIMEOUT_FACTOR``, default 1).

    Read on every call, so a test (or a slow CI job) can set it at any time.
    """
    raw = os.environ.get(TIMEOUT_FACTOR_VAR, "").strip()
    if not raw:
        return 1.0
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(
            f"{TIMEOUT_FACTOR_VAR} must be a positive number, got {raw!r}") from None
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"{TIMEOUT_FACTOR_VAR} must be a positive number, got {raw!r}")
    return factor


def scaled(seconds: float) -> float:
    """``seconds`` multiplied by the timeout factor."""
    return seconds * timeout_factor()
