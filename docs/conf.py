"""Sphinx configuration of harness's manual.

Build it as CI does: ``pip install -e '.[docs]'``, then
``sphinx-build -W --keep-going -n docs docs/_build/html``.  Warnings are
errors and every cross-reference must resolve (nitpicky), so a broken link
or a name the API reference lost fails the build.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Dict, Optional

sys.path.insert(0, os.path.abspath(".."))

import harness

project = "harness"
author = "the harness developers"
copyright = "the harness developers"
release = version = harness.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"harness {release}"
html_static_path: list = []
pygments_style = "friendly"
highlight_language = "none"  # "::" blocks are shell sessions and output, not Python

autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
python_maximum_signature_line_length = 88  # one parameter per line past this
python_use_unqualified_type_names = True
nitpicky = True

# The public modules; each name of their __all__ is documented once in
# api.rst, under ``harness.NAME`` when harness itself exports it
# (test/test_docs.py holds api.rst to this list).
PUBLIC_MODULES = ["harness", "harness.process", "harness.checks", "harness.http",
                  "harness.ports", "harness.memory", "harness.testcase",
                  "harness.pytest_plugin", "harness.errors", "harness.services"]

# Names outside harness that signatures and docstrings mention: the build has
# no network (so no intersphinx); they are shown, not linked.  Exact names,
# so that a new one is a decision, not an accident.
nitpick_ignore = [
    ("py:mod", "http.client"),
    ("py:class", "http.client.HTTPMessage"),
    ("py:class", "os.PathLike"),
    ("py:class", "os.PathLike[str]"),
    ("py:class", "re.Match"),
    ("py:class", "re.Pattern"),
    ("py:class", "socket.socket"),
    ("py:class", "ssl.SSLContext"),
    ("py:class", "unittest.TestCase"),
    ("py:class", "unittest.result.TestResult"),
    ("py:class", "unittest.IsolatedAsyncioTestCase"),
    ("py:class", "_pytest.fixtures.FixtureRequest"),
    # Private types in public signatures: shown by name.  (wait_ready's
    # result type, a lease's handle, the shapes of expect_status= and
    # expect_json=, which the docstrings describe.)
    ("py:class", "harness.checks.Ready"),
    ("py:class", "harness._os.leases.Lease"),
    ("py:class", "ExpectStatus"),
    ("py:class", "ExpectJson"),
]


def _public_names() -> Dict[int, str]:
    """id(object) -> the name api.rst documents it under, for every class and
    function of a public module's ``__all__`` (the first module wins, so a
    name harness exports is ``harness.NAME``)."""
    where: Dict[int, str] = {}
    for name in PUBLIC_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a module not written yet (harness.services)
            continue
        for attr in getattr(module, "__all__", ()):
            value = getattr(module, attr)
            if hasattr(value, "__qualname__"):
                where.setdefault(id(value), f"{name}.{attr}")
    return where


def public_name(dotted: str, where: Dict[int, str]) -> Optional[str]:
    """The documented name of what ``dotted`` names (``harness.errors.WaitTimeout``
    -> ``harness.WaitTimeout``; ``harness._load.LoadResult.p50`` ->
    ``harness.LoadResult.p50``), or None."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            value: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for index in range(split, len(parts)):
            value = getattr(value, parts[index], None)
            if value is None:
                return None
            if id(value) in where:
                return ".".join([where[id(value)]] + parts[index + 1:])
        return None
    return None


_WHERE: Optional[Dict[int, str]] = None


def _lookup(dotted: str) -> Any:
    """The object ``dotted`` names, or None."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            value = getattr(value, part, None)
        return value
    return None


def _resolve(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """A reference to a public object under the name of the module that
    defines it (signatures name ``harness._load.LoadResult``; docstrings say
    :func:`measure_leak` inside harness.memory) goes to its documented entry."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    module = node.get("py:module")
    candidates = [target] + ([f"{module}.{target}"] if module else [])
    owner = node.get("py:class")
    if module and owner:  # in a class's docstring: names of the module that defines it
        defined_in = getattr(_lookup(f"{module}.{owner}"), "__module__", None)
        if defined_in:
            candidates.append(f"{defined_in}.{target}")
    global _WHERE
    if _WHERE is None:
        _WHERE = _public_names()
    where = _WHERE
    for candidate in candidates:
        name = public_name(candidate, where)
        if name and name != target:
            domain = env.get_domain("py")
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                       name, node, contnode)
    return None


def _no_protocol_signature(app: Any, what: str, name: str, obj: Any, options: Any,
                           signature: Optional[str], return_annotation: Optional[str]) -> Any:
    """A Protocol is never instantiated: its ``(*args, **kwargs)`` says nothing."""
    if what == "class" and getattr(obj, "_is_protocol", False):
        return "", None
    return None


def setup(app: Any) -> None:
    app.connect("missing-reference", _resolve)
    app.connect("autodoc-process-signature", _no_protocol_signature)

