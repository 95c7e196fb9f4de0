"""Argument validation shared by the public functions and the command line.

One dialect: each function is named for what it returns, "a valid X"
(``port``, ``port_range``, ``seconds``, ``whole``, ``flag``, ``pattern``),
and raises ``TypeError`` or ``ValueError`` naming the argument, so a
mistake is reported before anything is started.  The command line uses
the same checks through one adapter, :func:`arg_type`, which first parses
the text (``parse_*``) and turns either kind of error into the
``argparse.ArgumentTypeError`` argparse reports as a usage error.
"""
from __future__ import annotations

import argparse
import math
import numbers
import os
import re
from typing import Any, Callable, Optional, Pattern, Tuple, TypeVar

PortRange = Tuple[int, int]
T = TypeVar("T")


def port(value: object, name: str = "port", *, allow_zero: bool = False) -> int:
    """A valid TCP port number: an int in 1..65535 (0 too when ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise ValueError(f"{name} must be in {low}..65535, got {value}")
    return value


def port_range(value: object, name: str = "port_range") -> PortRange:
    """A valid inclusive ``(low, high)`` pair of ports, or a ``range`` object."""
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
    low = port(pair[0], f"{name}[0]")
    high = port(pair[1], f"{name}[1]")
    if low > high:
        raise ValueError(f"{name} is empty or reversed: ({low}, {high}); low must be <= high")
    return low, high


def seconds(value: object, name: str, *, allow_zero: bool = False) -> float:
    """A valid number of seconds: finite and > 0 (or >= 0 when ``allow_zero``)."""
    return amount(value, name, "seconds", allow_zero=allow_zero)


def optional_seconds(value: object, name: str) -> Optional[float]:
    """``None``, or a valid number of seconds (> 0)."""
    return None if value is None else seconds(value, name)


def whole(value: object, name: str, *, at_least: int = 1, why: str = "") -> int:
    """A valid whole number: an int (not a bool) >= ``at_least`` (``why``: said after it)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < at_least:
        raise ValueError(f"{name} must be >= {at_least}{' ' + why if why else ''}, got {value}")
    return value


def amount(value: object, name: str, unit: str, *, allow_zero: bool = False) -> float:
    """A valid amount of ``unit`` (seconds, bytes per round, ...): a finite number > 0
    (or >= 0 when ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of {unit}, got {value!r}")
    checked = float(value)
    if allow_zero:
        if not (math.isfinite(checked) and checked >= 0):
            raise ValueError(f"{name} must be a finite number of {unit} >= 0, got {value!r}")
    elif not (math.isfinite(checked) and checked > 0):
        raise ValueError(f"{name} must be a positive number of {unit}, got {value!r}")
    return checked


def flag(value: object, name: str) -> bool:
    """``True`` or ``False`` (not a truthy value: ``"no"`` is a mistake, not a yes)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def path(value: object, name: str, what: str = "a path") -> str:
    """A valid path: a str or an ``os.PathLike`` of one, without NUL bytes."""
    try:
        text = os.fspath(value)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{name} must be {what} (str or os.PathLike), got {value!r}") from None
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str path, got {value!r}")
    if "\0" in text:
        raise ValueError(f"{name} contains a NUL byte: {text!r}")
    return text


def pattern(value: object, name: str = "pattern", *, flags: int = 0,
            literal: object = False) -> "Pattern[str]":
    """A valid regex: a str (compiled here, with ``flags``) or a compiled str pattern;
    with ``literal=True``, a str matched as it is."""
    if flag(literal, "literal"):
        if not isinstance(value, str):
            raise TypeError(f"with literal=True, {name} must be a str, got {value!r}")
        value = re.escape(value)
    if isinstance(value, str):
        try:
            return re.compile(value, flags)
        except re.error as exc:
            raise ValueError(f"{name} is not a valid regex: {value!r} ({exc})") from None
    if isinstance(value, re.Pattern) and isinstance(value.pattern, str):
        return value
    raise TypeError(f"{name} must be a str regex or a compiled str pattern, got {value!r}")


# --------------------------------------------------------------------------
# The command line: text to a value, then the same checks as above


def parse_whole_number(text: str) -> int:
    """``"42"`` -> 42; ``ValueError`` saying what was expected."""
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"must be a whole number, got {text!r}") from None


def parse_number(text: str) -> float:
    """``"2.5"`` -> 2.5 (``nan`` and ``inf`` parse; the checks refuse them)."""
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"must be a number, got {text!r}") from None


def parse_port_range(text: str) -> Tuple[int, int]:
    """``"9000-9100"`` (inclusive) or a single port ``"9000"``."""
    low, sep, high = text.strip().partition("-")
    try:
        return int(low), int(high) if sep else int(low)
    except ValueError:
        raise ValueError(
            f"must be LOW-HIGH with whole numbers, like 9000-9100; got {text!r}") from None


def arg_type(check: Callable[..., T], name: str, *,
             parse: Callable[[str], Any] = parse_whole_number,
             **options: Any) -> Callable[[str], T]:
    """An argparse ``type=``: ``parse`` the text, then ``check(value, name, **options)``.

    Either's ``ValueError``/``TypeError`` becomes ``argparse.ArgumentTypeError``.
    argparse already names the argument ("argument --runs: ..."), so a
    message "--runs must be ..." loses its leading name.
    """
    def convert(text: str) -> T:
        try:
            value = parse(text)
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        try:
            return check(value, name, **options)
        except (ValueError, TypeError) as exc:
            message = str(exc)
            if message.startswith(name + " must "):
                message = message[len(name) + 1:]
            raise argparse.ArgumentTypeError(message) from None

    convert.__name__ = getattr(check, "__name__", "value")  # argparse names a failed type by it
    return convert
