"""What a JSON answer must contain: one spec language for checks and requests.

``HttpCheck(json=...)``, ``request(expect_json=...)`` and
``assertResponse(json=...)`` all take the same spec, so a user learns it once:

- a dict: each key must be present and its value match the key's spec
  (nested dicts recurse);
- a type or tuple of types: ``isinstance``, except that JSON ``true`` is
  not an ``int`` (Python's ``bool`` is one);
- a callable: a predicate; one that raises counts as "no", with its reason;
- anything else: equality (again without ``True == 1``).

A mismatch comes in two wordings: a short ``label`` that is the same every
time the same thing is wrong, for counting readiness outcomes
("JSON missing 'message' x2"), and a ``detail`` sentence for an error message.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional, Union

JsonSpec = Union[Mapping[str, Any], Callable[[Any], Any]]

DOCUMENT = "the JSON document"


class Mismatch(NamedTuple):
    label: str   # short and stable: "JSON missing 'message'"
    detail: str  # a sentence: "JSON key 'message' is missing (keys present: 'status')"


def check_spec(value: object, name: str) -> Optional[JsonSpec]:
    """``value`` if it is a valid spec (or None); TypeError naming ``name`` otherwise."""
    if value is None or isinstance(value, Mapping) or callable(value):
        return value
    raise TypeError(f"{name} must be a dict of key -> expected value, type or predicate, "
                    f"or a predicate over the whole document, got {value!r}")


def _type_name(expected: Any) -> str:
    if isinstance(expected, tuple):
        return " or ".join(_type_name(t) for t in expected)
    return getattr(expected, "__name__", repr(expected))


def _is_type_spec(expected: Any) -> bool:
    return isinstance(expected, type) or (
        isinstance(expected, tuple) and expected != () and
        all(isinstance(t, type) for t in expected))


def _instance_of(value: Any, expected: Any) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool):
        return bool in types or object in types
    return isinstance(value, types)


def _same_value(value: Any, expected: Any) -> bool:
    return value == expected and isinstance(value, bool) == isinstance(expected, bool)


def mismatch(value: Any, expected: Any, where: str = DOCUMENT,
             key: str = "") -> Optional[Mismatch]:
    """Why ``value`` does not satisfy ``expected``, or None if it does.

    ``where`` names the value in details ("JSON key 'data'['total']"),
    ``key`` in labels ("'data'['total']"; empty for the whole document).
    """
    subject = f"JSON {key}" if key else "JSON"
    if isinstance(expected, Mapping):
        if not isinstance(value, dict):
            return Mismatch(
                f"{subject} is a {type(value).__name__}, not an object",
                f"{where} should be a JSON object with keys {sorted(map(str, expected))}, "
                f"got {type(value).__name__} {value!r:.80}")
        for name, want in expected.items():
            inner = f"JSON key {name!r}" if where == DOCUMENT else f"{where}[{name!r}]"
            inner_key = f"{key}[{name!r}]" if key else repr(name)
            if name not in value:
                present = ", ".join(repr(k) for k in list(value)[:20]) or "none"
                return Mismatch(f"JSON missing {inner_key}",
                                f"{inner} is missing (keys present: {present})")
            problem = mismatch(value[name], want, inner, inner_key)
            if problem:
                return problem
        return None
    if _is_type_spec(expected):
        if _instance_of(value, expected):
            return None
        return Mismatch(
            f"{subject} is {type(value).__name__}, expected {_type_name(expected)}",
            f"{where} should be of type {_type_name(expected)}, "
            f"got {type(value).__name__} {value!r:.80}")
    if callable(expected):
        name = getattr(expected, "__name__", "predicate")
        try:
            verdict = expected(value)
        except Exception as exc:  # a predicate that raises is a "no", with its reason
            return Mismatch(f"{subject} check raised {type(exc).__name__}",
                            f"{where} = {value!r:.80} failed the check {name}: "
                            f"{type(exc).__name__}: {exc}")
        if verdict:
            return None
        return Mismatch(f"{subject} failed {name}",
                        f"{where} = {value!r:.80} failed the check {name}")
    if _same_value(value, expected):
        return None
    return Mismatch(f"{subject} is {value!r:.40}, expected {expected!r:.40}",
                    f"{where} should be {expected!r:.80}, got {value!r:.80}")
