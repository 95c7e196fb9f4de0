"""``_os/users.py``: one way to name a user in every message harness writes."""
from __future__ import annotations

import os
import unittest
from unittest import mock

from harness._os import users

try:
    import pwd
except ImportError:  # pragma: no cover - Windows
    pwd = None  # type: ignore[assignment]


def _unknown_uid() -> int:
    """A uid no account has on this machine."""
    uid = 2 ** 31 - 7
    if pwd is not None:
        while True:
            try:
                pwd.getpwuid(uid)
            except KeyError:
                break
            uid -= 1
    return uid


@unittest.skipIf(pwd is None, "user names come from pwd, which this platform lacks")
class DescribeUserTest(unittest.TestCase):
    def test_a_known_user_is_named_with_the_uid(self) -> None:
        uid = os.getuid()
        name = pwd.getpwuid(uid).pw_name
        self.assertEqual(users.describe_user(uid), f"{name} (uid {uid})")
        self.assertEqual(users.user_name(uid), name)

    def test_root_reads_as_root(self) -> None:
        self.assertEqual(users.describe_user(0), f"{pwd.getpwuid(0).pw_name} (uid 0)")

    def test_an_unknown_uid_is_only_a_uid(self) -> None:
        uid = _unknown_uid()
        self.assertEqual(users.describe_user(uid), f"uid {uid}")
        self.assertIsNone(users.user_name(uid))


class WithoutPwdTest(unittest.TestCase):
    def test_without_pwd_every_user_is_a_uid(self) -> None:
        with mock.patch.object(users, "pwd", None):
            self.assertEqual(users.describe_user(0), "uid 0")
            self.assertEqual(users.describe_user(1001), "uid 1001")
            self.assertIsNone(users.user_name(0))


if __name__ == "__main__":
    unittest.main()
