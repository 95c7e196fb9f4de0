"""Where the manual explains something, for messages that point there.

The manual is ``docs/`` in the repository, published as it is on Read the
Docs.  ``docs/troubleshooting.rst`` has a section under a label of its own
for each error harness raises on purpose; a message names that section
(``see(...)``), and ``test/test_docs.py`` checks that every section named
from the code exists.
"""
from __future__ import annotations

#: The manual's address; its pages are ``docs/<page>.rst``.
MANUAL_URL = "https://server-harness.readthedocs.io/en/latest/"


def see(section: str, page: str = "troubleshooting") -> str:
    """``"see <the page's URL>#<section>"``: the end of a message or ``fix:`` line."""
    return f"see {MANUAL_URL}{page}.html#{section}"
