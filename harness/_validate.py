"""Argument checks shared by the public functions.

Each raises ``TypeError`` or ``ValueError`` naming the argument, so a mistake
is reported before anything is started.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple

PortRange = Tuple[int, int]


def check_port(value: object, name: str = "port", *, allow_zero: bool = False) -> int:
    """A TCP port number: an int in 1..65535 (0 too when ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise ValueError(f"{name} must be in {low}..65535, got {value}")
    return value


def check_port_range(value: object, name: str = "port_range") -> PortRange:
    """An inclusive ``(low, high)`` pair of ports, or a ``range`` object."""
    if isinstance(value, range):
        if value.step != 1:
            raise ValueError(f"{name} must be a contiguous range (step 1), got {value!r}")
        if len(value) == 0:
            raise ValueError(f"{name} is empty: {value!r}")
        pair: Tuple[object, object] = (value.start, value.stop - 1)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = (value[0], value[1])
    else:
        raise TypeError(
            f"{name} must be a (low, high) pair of ints or a range, got {value!r}")
    low = check_port(pair[0], f"{name}[0]")
    high = check_port(pair[1], f"{name}[1]")
    if low > high:
        raise ValueError(f"{name} is empty or reversed: ({low}, {high}); low must be <= high")
    return low, high


def check_timeout(value: object, name: str, *, allow_none: bool = False) -> Optional[float]:
    """A positive, finite number of seconds (or ``None`` when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


def check_positive_int(value: object, name: str) -> int:
    """An int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def seconds(value: object, name: str) -> float:
    """A positive, finite number of seconds."""
    checked = check_timeout(value, name)
    assert checked is not None
    return checked


def check_bool(value: object, name: str) -> bool:
    """``True`` or ``False`` (not a truthy value: ``"no"`` is a mistake, not a yes)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value
