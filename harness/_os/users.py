"""Users by uid, named one way in every message: ``"bob (uid 1001)"``.

A message about another user's file, socket or process names the user a
person knows and the uid the kernel reports (two accounts can share a
name across containers, and a uid without an account has no name), so
both, always in this order; just ``"uid 1001"`` when no name can be found.
"""
from __future__ import annotations

from typing import Optional

try:
    import pwd
except ImportError:  # pragma: no cover - Windows
    pwd = None  # type: ignore[assignment]


def user_name(uid: int) -> Optional[str]:
    """The account name of ``uid``, or ``None`` (no such account, or no ``pwd`` here)."""
    if pwd is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def describe_user(uid: int) -> str:
    """``"bob (uid 1001)"``, or ``"uid 1001"`` when the name cannot be found."""
    name = user_name(uid)
    return f"uid {uid}" if name is None else f"{name} (uid {uid})"
