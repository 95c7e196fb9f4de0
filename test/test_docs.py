"""README.rst's examples run, so the manual cannot rot.

The convention (also stated in README.rst's "About the examples"):

* Every ``.. code-block:: python`` block is an example and is run, each as
  a script of its own (``python block.py``) in a fresh directory, with this
  checkout importable, ``TMPDIR`` pointing at a private directory, and a
  generous hang-catching timeout.  It passes if it exits 0 **and** leaves
  nothing in ``TMPDIR`` (examples must clean up after themselves, as the
  library does).  A complete unittest file passes when its tests do: it
  ends with ``unittest.main()``.
* Comment lines at the top of a block steer the run; readers see them too:

  - ``# needs: gunicorn, redis-server on PATH`` runs the block only where
    every name is importable by the interpreter running the tests (a name
    ending in ``on PATH``: a program found on ``PATH``); elsewhere it is
    reported as skipped, with the reason.
  - ``# run: pytest`` runs the block with ``python -m pytest`` instead (as
    a file named ``test_example.py``); skipped where pytest is not installed.

* Literal blocks (``::``) and ``.. code-block:: console``/``text`` are
  shell sessions and output: shown, never run.

Each block becomes one test named after its line in README.rst.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from typing import Dict, List, NamedTuple

from _support import ROOT, python_env

README = os.path.join(ROOT, "README.rst")
HANG = 300  # seconds: a hang-catcher, not a timing assertion


class Example(NamedTuple):
    line: int         # README line of the directive
    code: str
    needs: List[str]
    runner: str       # "python" or "pytest"


def examples(text: str) -> List[Example]:
    """Every ``.. code-block:: python`` block of an reST document, dedented."""
    lines = text.splitlines()
    found = []
    index = 0
    while index < len(lines):
        match = re.match(r"^(\s*)\.\. code-block::\s*python3?\s*$", lines[index])
        if not match:
            index += 1
            continue
        start = index
        indent = len(match.group(1))
        index += 1
        while index < len(lines) and (not lines[index].strip() or
                                      lines[index].lstrip().startswith(":")):
            index += 1  # the blank line and any directive options
        body = []
        while index < len(lines) and (not lines[index].strip() or
                                      len(lines[index]) - len(lines[index].lstrip()) > indent):
            body.append(lines[index])
            index += 1
        code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
        needs: List[str] = []
        runner = "python"
        for comment in code.splitlines():
            directive = re.match(r"^#\s*(needs|run):\s*(.+?)\s*$", comment)
            if not directive:
                break
            if directive.group(1) == "needs":
                needs.extend(n.strip() for n in directive.group(2).split(",") if n.strip())
            else:
                runner = directive.group(2)
        found.append(Example(start + 1, code, needs, runner))
    return found


def missing(needs: List[str]) -> List[str]:
    """The ``# needs:`` items not available here."""
    absent = []
    for item in needs:
        program = re.match(r"^(\S+) on PATH$", item)
        if program:
            if shutil.which(program.group(1)) is None:
                absent.append(item)
        elif importlib.util.find_spec(item) is None:
            absent.append(item)
    return absent


def run_example(example: Example) -> Dict[str, object]:
    """Run one example in a fresh directory; its exit code, output and leftovers."""
    work = tempfile.mkdtemp(prefix="t5-readme-")
    try:
        cwd = os.path.join(work, "cwd")
        tmp = os.path.join(work, "tmp")
        os.mkdir(cwd)
        os.mkdir(tmp)
        env = python_env()
        for name in list(env):
            if name.startswith("PYTEST_"):
                del env[name]
        env["TMPDIR"] = tmp
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if example.runner == "pytest":
            # This checkout's plugin by name, entry points off: an installed
            # harness would register the same module a second time under its
            # entry point's name ("harness"), which pytest refuses.
            env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
            script = "test_example.py"
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       "-p", "harness.pytest_plugin", script]
        else:
            script = "example.py"
            command = [sys.executable, script]
        with open(os.path.join(cwd, script), "w") as f:
            f.write(example.code)
        proc = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=HANG)
        return {"code": proc.returncode, "output": proc.stdout, "left": os.listdir(tmp)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


with open(README, encoding="utf-8") as _f:
    EXAMPLES = examples(_f.read())


class ReadmeExamplesTest(unittest.TestCase):
    """One test per example (added below), and checks of the manual's frame."""

    def test_the_manual_has_examples(self):
        self.assertGreaterEqual(len(EXAMPLES), 1)

    def test_the_two_commands_on_a_fresh_machine(self):
        with open(README, encoding="utf-8") as f:
            text = f.read()
        commands = re.findall(r"^    (python3 -m venv \.venv && .+)$", text, re.M)
        self.assertGreaterEqual(len(commands), 2, "README lost its two set-up commands")
        self.assertTrue(commands[0].endswith(".venv/bin/python -m harness demo"), commands[0])
        self.assertTrue(commands[1].endswith(
            " .venv/bin/pip install -e '.[test]' && .venv/bin/python -m unittest"), commands[1])
        with open(os.path.join(ROOT, ".ci", "run")) as f:
            ci = f.read()  # CI installs and runs the suite the same way
        self.assertIn('-e "$root[test]"', ci)
        self.assertRegex(ci, r'"\$venv/bin/python" -m unittest\)')

    def test_extractor(self):
        text = textwrap.dedent("""\
            Intro::

                not python

            .. code-block:: python

                # needs: nosuchmodule_xyz
                print("a")

                print("b")

            .. code-block:: console

                $ echo no

            .. code-block:: python
               :caption: options are skipped

               # run: pytest
               def test_x():
                   pass
            After.
            """)
        found = examples(text)
        self.assertEqual([e.line for e in found], [5, 16])
        self.assertEqual(found[0].code, '# needs: nosuchmodule_xyz\nprint("a")\n\nprint("b")\n')
        self.assertEqual(found[0].needs, ["nosuchmodule_xyz"])
        self.assertEqual(missing(found[0].needs), ["nosuchmodule_xyz"])
        self.assertEqual(missing(["sys", "sh on PATH"]), [])
        self.assertEqual(missing(["sh", "no-such-program-xyz on PATH"]),
                         ["sh", "no-such-program-xyz on PATH"])
        self.assertEqual((found[1].runner, found[1].code.splitlines()[-1]), ("pytest", "    pass"))


def _make_test(example: Example):
    def test(self: unittest.TestCase) -> None:
        absent = missing(example.needs)
        if absent:
            self.skipTest(f"README.rst line {example.line} needs {', '.join(absent)}")
        if example.runner == "pytest" and importlib.util.find_spec("pytest") is None:
            self.skipTest(f"README.rst line {example.line} runs under pytest, not installed")
        if example.runner not in ("python", "pytest"):
            self.fail(f"README.rst line {example.line}: unknown '# run: {example.runner}'")
        outcome = run_example(example)
        self.assertEqual(outcome["code"], 0,
                         f"README.rst line {example.line} failed:\n{outcome['output']}")
        self.assertEqual(outcome["left"], [],
                         f"README.rst line {example.line} left files in TMPDIR:\n"
                         f"{outcome['output']}")
    test.__doc__ = f"README.rst line {example.line}: {example.code.splitlines()[0][:60]}"
    return test


for _example in EXAMPLES:
    setattr(ReadmeExamplesTest, f"test_example_at_line_{_example.line:04d}", _make_test(_example))


if __name__ == "__main__":
    unittest.main()
