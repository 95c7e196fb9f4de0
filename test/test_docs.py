"""The manual's examples run, and its API reference names every public name.

The documents are README.rst, CHANGELOG.rst, DEVELOPING.rst and every
``docs/*.rst``.  The convention (also in DEVELOPING.rst, "The manual"):

* Every ``.. code-block:: python`` block is an example and is run, and so
  is every Python file pulled in with ``.. literalinclude:: examples/x.py``
  (long examples live in ``docs/examples/``).  Each runs as a script of its
  own (``python example.py``) in a fresh directory, with this checkout
  importable, ``TMPDIR`` pointing at a private directory, and a generous
  hang-catching timeout.  It passes if it exits 0 **and** leaves nothing in
  ``TMPDIR`` (examples clean up after themselves, as the library does).
  A complete unittest file passes when its tests do: it ends with
  ``unittest.main()``.
* Comment lines at the top of a block steer the run; readers see them too:

  - ``# needs: gunicorn, redis-server on PATH`` runs the block only where
    every name is importable by the interpreter running the tests (a name
    ending in ``on PATH``: a program found on ``PATH``; ``the Postgres
    service``: one of ``harness.services`` whose program is installed);
    elsewhere it is reported as skipped, with the reason.
  - ``# run: pytest -n 2`` runs the block with pytest and those arguments
    (the ``pytest`` script beside the interpreter, as a reader types it)
    instead; the block is ``test_example.py``.  Skipped where pytest is not
    installed.  ``# run: python -m unittest ...`` runs the interpreter with
    those arguments.
  - ``# file: myapp/__init__.py`` (in a block of any language; ``--`` in
    SQL) makes the
    block a file of a project: it is not run itself, but written at that
    path into the directory of the examples that follow in the same
    document, until a file block after an example starts a new project.
    A block with both ``# file:`` and ``# run:`` is an example written at
    that path and a file of the project; its command gets only the
    ``# run:`` arguments, as a reader would type them.

* A ``.. code-block:: text`` block with the option ``:class: output`` right
  after an example is what it prints: its standard output must match, with
  ``...`` standing for any text (doctest's ELLIPSIS) and runs of blanks
  counted as one.
* Literal blocks (``::``) and other code blocks are shell sessions and
  output: shown, never run.

Each example becomes one test named after its document and line.
"""
from __future__ import annotations

import doctest
import glob
import importlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from typing import Dict, List, NamedTuple, Optional, Tuple

from _support import ROOT

DOCS = os.path.join(ROOT, "docs")
DOCUMENTS = ["README.rst", "CHANGELOG.rst", "DEVELOPING.rst"] + sorted(
    os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(DOCS, "*.rst")))
HANG = 300  # seconds: a hang-catcher, not a timing assertion
PUBLIC_MODULES = ["harness", "harness.process", "harness.checks", "harness.http",
                  "harness.ports", "harness.memory", "harness.testcase",
                  "harness.pytest_plugin", "harness.errors", "harness.services"]


class Block(NamedTuple):
    line: int                     # the directive's line in its document
    language: str
    code: str
    options: Dict[str, str]


class Example(NamedTuple):
    document: str
    line: int
    code: str
    needs: List[str]
    runner: str                   # "python" or "pytest"
    arguments: List[str]          # pytest's, from "# run: pytest ARGS"
    path: Optional[str]           # "# file:" of the block itself
    files: List[Tuple[str, str]]  # the project's other files: (path, text)
    output: Optional[str]         # what it must print


_DIRECTIVE = re.compile(r"^(\s*)\.\. (code-block|code|sourcecode|literalinclude)::\s*(\S*)\s*$")
_STEERING = re.compile(r"^(?:#|--)\s*(needs|run|file):\s*(.+?)\s*$")  # (-- in SQL)


def blocks(text: str, directory: str = DOCS) -> List[Block]:
    """Every code block and literalinclude of an reST document, dedented,
    with its directive's options (a literalinclude's text is the file's)."""
    lines = text.splitlines()
    found = []
    index = 0
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        if not match:
            index += 1
            continue
        start, indent = index, len(match.group(1))
        index += 1
        options: Dict[str, str] = {}
        while index < len(lines) and lines[index].strip().startswith(":") \
                and len(lines[index]) - len(lines[index].lstrip()) > indent:
            name, _, value = lines[index].strip()[1:].partition(":")
            options[name.strip()] = value.strip()
            index += 1
        body = []
        while index < len(lines) and (not lines[index].strip() or
                                      len(lines[index]) - len(lines[index].lstrip()) > indent):
            body.append(lines[index])
            index += 1
        if match.group(2) == "literalinclude":
            path = os.path.join(directory, match.group(3))
            with open(path, encoding="utf-8") as f:
                code = f.read()
            language = options.get("language") or (
                "python" if path.endswith(".py") else os.path.splitext(path)[1][1:])
        else:
            code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
            language = match.group(3) or "text"
        found.append(Block(start + 1, language, code, options))
    return found


def steering(code: str) -> Dict[str, str]:
    """The ``# needs:``, ``# run:`` and ``# file:`` lines that open a block."""
    found: Dict[str, str] = {}
    for line in code.splitlines():
        match = _STEERING.match(line)
        if not match:
            break
        if match.group(1) == "needs" and "needs" in found:
            found["needs"] += ", " + match.group(2)
        else:
            found[match.group(1)] = match.group(2)
    return found


def examples(text: str, document: str = "README.rst",
             directory: str = DOCS) -> List[Example]:
    """The examples of a document, each with its project's files and its output."""
    found: List[Example] = []
    files: List[Tuple[str, str]] = []
    ran = False  # an example ran since the last file: the next file starts a new project
    last: Optional[Example] = None
    for block in blocks(text, directory):
        if "output" in block.options.get("class", "").split():
            if last is None or last.output is not None:
                raise ValueError(f"{document} line {block.line}: an output block that "
                                 f"follows no example")
            found[-1] = last = last._replace(output=block.code)
            continue
        last = None
        steer = steering(block.code)
        if "file" in steer and "run" not in steer:
            if ran:
                files, ran = [], False
            files.append((steer["file"], block.code))
            continue
        if block.language not in ("python", "python3"):
            continue
        command = steer.get("run", "python").split()
        needs = [n.strip() for n in steer.get("needs", "").split(",") if n.strip()]
        last = Example(document, block.line, block.code, needs, command[0], command[1:],
                       steer.get("file"), list(files), None)
        found.append(last)
        if "file" in steer:  # the project's file, for the examples that follow
            files.append((steer["file"], block.code))
        ran = True
    if files and not ran:
        raise ValueError(f"{document}: the files {[path for path, _ in files]} come before "
                         f"no example that runs")
    return found


def missing(needs: List[str]) -> List[str]:
    """The ``# needs:`` items not available here."""
    absent = []
    for item in needs:
        program = re.match(r"^(\S+) on PATH$", item)
        service = re.match(r"^the (\w+) service$", item)
        if program:
            if shutil.which(program.group(1)) is None:
                absent.append(item)
        elif service:
            import harness.services
            if getattr(harness.services, service.group(1))().unavailable():
                absent.append(item)
        elif importlib.util.find_spec(item) is None:
            absent.append(item)
    return absent


def output_matches(expected: str, output: str) -> bool:
    """``output`` is ``expected``, ``...`` standing for any text, blanks folded."""
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    return checker.check_output(expected, output, flags)


def _pytest_command() -> List[str]:
    """``pytest`` as a reader runs it: the script, not ``python -m pytest``,
    which would put the working directory on ``sys.path`` and hide a
    project that is not importable."""
    script = os.path.join(os.path.dirname(sys.executable), "pytest")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "pytest"]


def _write(directory: str, path: str, text: str) -> str:
    full = os.path.join(directory, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", encoding="utf-8") as f:
        f.write(text)
    return full


def run_example(example: Example) -> Dict[str, object]:
    """Run one example in a fresh directory; its exit code, output and leftovers."""
    work = tempfile.mkdtemp(prefix="t5-docs-")
    try:
        cwd = os.path.join(work, "cwd")
        tmp = os.path.join(work, "tmp")
        os.mkdir(cwd)
        os.mkdir(tmp)
        # This checkout's harness, and nothing else of the checkout: its root
        # also has tests.py, which would shadow an example project's tests/.
        path = os.path.join(work, "path")
        os.mkdir(path)
        os.symlink(os.path.join(ROOT, "harness"), os.path.join(path, "harness"))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
        for name in list(env):
            if name.startswith("PYTEST_"):
                del env[name]
        env["TMPDIR"] = tmp
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        for path, text in example.files:
            _write(cwd, path, text)
        if example.runner == "pytest":
            # This checkout's plugin by name, entry points off: an installed
            # harness would register the same module a second time under its
            # entry point's name ("harness"), which pytest refuses.  So the
            # plugins an example needs are named: harness's, and xdist's for -n.
            env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
            script = example.path or "test_example.py"
            plugins = ["-p", "no:cacheprovider", "-p", "harness.pytest_plugin"]
            if "-n" in example.arguments:
                plugins += ["-p", "xdist.plugin"]
            command = _pytest_command() + plugins + example.arguments + (
                [] if example.path else ["-q", script])
        else:
            script = example.path or "example.py"
            command = [sys.executable] + (example.arguments or [script])
        _write(cwd, script, example.code)
        proc = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=HANG)
        left = os.listdir(tmp)
        if example.runner == "pytest":  # pytest's own temp root (it keeps the last three)
            left = [name for name in left if not name.startswith("pytest-of-")]
        return {"code": proc.returncode, "stdout": proc.stdout,
                "output": proc.stdout + proc.stderr, "left": left}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _load_examples() -> List[Example]:
    found = []
    for document in DOCUMENTS:
        path = os.path.join(ROOT, document)
        with open(path, encoding="utf-8") as f:
            found.extend(examples(f.read(), document, os.path.dirname(path)))
    return found


EXAMPLES = _load_examples()


class DocsExamplesTest(unittest.TestCase):
    """One test per example (added below), and checks of the manual's frame."""

    def test_the_manual_has_examples(self):
        documents = {example.document for example in EXAMPLES}
        self.assertIn("README.rst", documents)
        self.assertGreaterEqual(len(documents), 8, documents)

    def test_the_two_commands_on_a_fresh_machine(self):
        with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as f:
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

    def test_the_front_page_is_short(self):
        with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as f:
            self.assertLessEqual(len(f.read().splitlines()), 200)

    def test_every_page_is_in_the_table_of_contents(self):
        with open(os.path.join(DOCS, "index.rst"), encoding="utf-8") as f:
            index = f.read()
        listed = set(re.findall(r"^   ([a-z][a-z0-9_-]*)$", index, re.M))
        pages = {os.path.splitext(os.path.basename(path))[0]
                 for path in glob.glob(os.path.join(DOCS, "*.rst"))} - {"index"}
        self.assertEqual(pages - listed, set(), "pages missing from index.rst's toctrees")

    def test_extractor(self):
        text = textwrap.dedent("""\
            Intro::

                not python

            .. code-block:: python

                # needs: nosuchmodule_xyz
                print("a")

                print("b")

            .. code-block:: text
               :class: output

               a
               b

            .. code-block:: console

                $ echo no

            .. code-block:: toml

                # file: pyproject.toml
                [tool.pytest.ini_options]

            .. code-block:: python
               :caption: options are skipped

               # file: tests/test_x.py
               # run: pytest -n 2
               def test_x():
                   pass
            After.
            """)
        found = examples(text)
        self.assertEqual([e.line for e in found], [5, 27])
        self.assertEqual(found[0].code, '# needs: nosuchmodule_xyz\nprint("a")\n\nprint("b")\n')
        self.assertEqual(found[0].needs, ["nosuchmodule_xyz"])
        self.assertEqual(found[0].output, "a\nb\n")
        self.assertEqual(missing(found[0].needs), ["nosuchmodule_xyz"])
        self.assertEqual(missing(["sys", "sh on PATH"]), [])
        self.assertEqual(missing(["sh", "no-such-program-xyz on PATH"]),
                         ["sh", "no-such-program-xyz on PATH"])
        project = found[1]
        self.assertEqual((project.runner, project.arguments, project.path),
                         ("pytest", ["-n", "2"], "tests/test_x.py"))
        self.assertEqual(project.files, [("pyproject.toml",
                                          "# file: pyproject.toml\n[tool.pytest.ini_options]\n")])
        self.assertEqual(project.code.splitlines()[-1], "    pass")
        with self.assertRaisesRegex(ValueError, "follows no example"):
            examples(".. code-block:: text\n   :class: output\n\n   a\n")
        with self.assertRaisesRegex(ValueError, "before no example"):
            examples(".. code-block:: ini\n\n   # file: pytest.ini\n   [pytest]\n")

    def test_output_matching(self):
        self.assertTrue(output_matches("ready: <function f at 0x...>\n",
                                       "ready:   <function f at 0x7f00ab>\n"))
        self.assertTrue(output_matches("...\n3 passed in ...\n", "a\nb\n3 passed in 1.2s\n"))
        self.assertFalse(output_matches("3 passed\n", "2 passed\n"))


def _make_test(example: Example):
    where = f"{example.document} line {example.line}"

    def test(self: unittest.TestCase) -> None:
        absent = missing(example.needs)
        if absent:
            self.skipTest(f"{where} needs {', '.join(absent)}")
        if example.runner == "pytest" and importlib.util.find_spec("pytest") is None:
            self.skipTest(f"{where} runs under pytest, not installed")
        if example.runner not in ("python", "pytest"):
            self.fail(f"{where}: unknown '# run: {example.runner}'")
        outcome = run_example(example)
        self.assertEqual(outcome["code"], 0, f"{where} failed:\n{outcome['output']}")
        self.assertEqual(outcome["left"], [],
                         f"{where} left files in TMPDIR:\n{outcome['output']}")
        if example.output is not None:
            self.assertTrue(output_matches(example.output, str(outcome["stdout"])),
                            f"{where} printed other than its output block says:\n"
                            f"--- expected\n{example.output}--- printed\n{outcome['stdout']}")
    test.__doc__ = f"{where}: {example.code.splitlines()[0][:60]}"
    return test


for _example in EXAMPLES:
    _stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(_example.document))[0].lower())
    setattr(DocsExamplesTest, f"test_{_stem}_line_{_example.line:04d}", _make_test(_example))


# --------------------------------------------------------------------------
# The API reference


def documented(text: str) -> Dict[str, Tuple[str, str]]:
    """``name -> (directive, content)`` of every ``.. autoX::`` entry but automodule."""
    found = {}
    lines = text.splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"^\.\. auto(\w+):: (\S+)\s*$", line)
        if not match or match.group(1) == "module":
            continue
        content = []
        for following in lines[index + 1:]:
            if following.strip() and not following.startswith("   "):
                break
            if following.strip() and not following.strip().startswith(":"):
                content.append(following.strip())
        found[match.group(2)] = (match.group(1), " ".join(content))
    return found


def public_names() -> Dict[str, object]:
    """Where the API reference must document each public object: ``harness.NAME``
    for what harness exports, else the first public module that exports it,
    under the name it has there."""
    where: Dict[str, object] = {}
    seen: List[Tuple[str, object]] = []
    for name in PUBLIC_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            if name == "harness.services":  # not written yet
                continue
            raise
        for attr in module.__all__:
            value = getattr(module, attr)
            if any(attr == other and value is known for other, known in seen):
                continue
            seen.append((attr, value))
            where[f"{name}.{attr}"] = value
    return where


def _own_doc(value: object) -> str:
    doc = getattr(value, "__doc__", None)
    if inspect.isclass(value) and "__doc__" not in vars(value):
        return ""
    return (doc or "").strip() if isinstance(doc, str) else ""


def _has_comment_doc(module_name: str, attr: str) -> bool:
    """Whether ``attr`` is assigned in the module's source under a ``#:`` comment."""
    source = inspect.getsource(importlib.import_module(module_name))
    return re.search(rf"^#:.*\n(#:.*\n)*{re.escape(attr)}\b.*=", source, re.M) is not None


class ManualLinksTest(unittest.TestCase):
    """The sections of the manual that messages point to exist."""

    def test_every_section_named_in_the_code_exists(self):
        named = []
        for path in glob.glob(os.path.join(ROOT, "harness", "**", "*.py"), recursive=True):
            with open(path, encoding="utf-8") as f:
                for match in re.finditer(r"\bsee\(['\"]([\w-]+)['\"](?:, ['\"]([\w-]+)['\"])?\)",
                                         f.read()):
                    named.append((match.group(2) or "troubleshooting", match.group(1), path))
        self.assertGreaterEqual(len(named), 3)
        for page, section, path in named:
            with open(os.path.join(DOCS, f"{page}.rst"), encoding="utf-8") as f:
                self.assertIn(f".. _{section}:\n", f.read(),
                              f"{os.path.relpath(path, ROOT)} points to {page}#{section}, "
                              f"which docs/{page}.rst does not have")


class ApiReferenceTest(unittest.TestCase):
    """docs/api.rst documents every public name, and each has a docstring."""

    @classmethod
    def setUpClass(cls):
        with open(os.path.join(DOCS, "api.rst"), encoding="utf-8") as f:
            cls.api = f.read()
        cls.entries = documented(cls.api)
        cls.public = public_names()

    def test_every_public_module_has_all(self):
        for name in PUBLIC_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            self.assertTrue(hasattr(module, "__all__"), f"{name} has no __all__")
            self.assertIn(f".. automodule:: {name}\n", self.api, f"api.rst lacks {name}")

    def test_the_reference_documents_exactly_the_public_names(self):
        public, entries = set(self.public), set(self.entries)
        self.assertEqual(sorted(public - entries), [],
                         "public names (in an __all__) that docs/api.rst does not document")
        self.assertEqual(sorted(entries - public), [],
                         "docs/api.rst entries that are not public names, or are documented "
                         "under another name than harness.NAME / the first module exporting them")

    def test_every_public_name_has_a_docstring(self):
        undocumented = []
        for name, value in self.public.items():
            module, _, attr = name.rpartition(".")
            directive, content = self.entries.get(name, ("", ""))
            if directive == "data" and (content or _has_comment_doc(module, attr)):
                continue
            if not _own_doc(value):
                undocumented.append(name)
        self.assertEqual(undocumented, [], "public names without a docstring")

    def test_every_public_member_has_a_docstring(self):
        undocumented = []
        for name, value in self.public.items():
            if not inspect.isclass(value) or not value.__module__.startswith("harness"):
                continue
            for attr, member in vars(value).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if inspect.isfunction(member):  # an override may inherit its docstring
                    doc = inspect.getdoc(getattr(value, attr))
                elif isinstance(member, property):
                    doc = member.__doc__
                else:
                    continue
                if not (doc or "").strip():
                    undocumented.append(f"{name}.{attr}")
        self.assertEqual(undocumented, [], "public methods and properties without a docstring")


if __name__ == "__main__":
    unittest.main()
